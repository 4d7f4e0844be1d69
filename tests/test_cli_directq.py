"""``bitsmith directq``: from scratch and from a float run on digits, evaluation, report, bad input."""

from __future__ import annotations

import json

import pytest

from bitsmith import runs
from bitsmith.methods.directq import ChannelAwareActQuantizer, DirectWeightQuantizer


def test_from_a_float_run_trains_evaluates_and_reports(float_run, tmp_path, cli):
    out = tmp_path / "dq"
    code, stdout, err = cli("directq", "--from", str(float_run), "--wbits", "4", "--abits", "4", "--epochs", "3",
                            "--threads", "1", "--quiet", "--out", str(out))
    assert code == 0, err
    assert "DirectQ W4A4 (both): test accuracy" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["model_transforms"][0]["name"] == "directq" and config["from"] == str(float_run)
    final = runs.read_metrics(out)[-1]
    assert final["acc"] > 0.8  # fine-tuned from a trained float LeNet-5
    model = runs.load_model(out)
    assert any(isinstance(m, DirectWeightQuantizer) for m in model.modules())
    assert any(isinstance(m, ChannelAwareActQuantizer) for m in model.modules())
    code, stdout, _ = cli("eval", str(out))
    assert code == 0 and f"{100 * final['acc']:.2f} %" in stdout
    assert "Cost per sample" in (out / "report.md").read_text()


def test_from_scratch_with_one_idea(tmp_path, cli):
    out = tmp_path / "dq"
    code, stdout, err = cli("directq", "--ideas", "acts", "--wbits", "3", "--abits", "3", "--epochs", "2",
                            "--threads", "1", "--quiet", "--out", str(out))
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    dq = config["model_transforms"][0]["config"]
    assert (dq["direct_weights"], dq["channel_aware_acts"], dq["weight_bits"]) == (False, True, 3)
    assert config["from"] is None and config["train"]["epochs"] == 2


@pytest.mark.parametrize("args,needle", [
    (("--wbits", "1"), "accepted: 2..8, 16, 32"),
    (("--abits", "40"), "accepted: 2..8, 16, 32"),
    (("--ideas", "all"), "unknown DirectQ ablation 'all'"),
    (("--step-gain", "0"), "step_gain must be positive"),
    (("--rounding", "nearest"), "rounding 'nearest' is not known; accepted: residual, stochastic, greedy"),
    (("--act-grad-scale", "adam"), "act_grad_scale 'adam' is not known; accepted: lsq, none"),
    (("--act-layers", "linear"), "act_layers 'linear' is not known; accepted: all, conv"),
    (("--model", "alexnet"), "unknown model 'alexnet'"),
    (("--from", "{tmp}/missing"), "no such run directory"),
])
def test_bad_directq_input(tmp_path, cli, args, needle):
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    code, _, err = cli("directq", *args, "--out", str(tmp_path / "o"))
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "checkpoint.safetensors").exists()
