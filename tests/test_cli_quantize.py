"""``bitsmith quantize``: QAT and PTQ from a float run on digits, evaluation, cost report, resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from bitsmith import runs
from bitsmith.engine import faults
from bitsmith.quant.layers import QuantConv2d, QuantLinear


def _last_eval(run) -> float:
    return [r for r in runs.read_metrics(run) if r["type"] == "eval"][-1]["acc"]


def test_qat_w4a4_keeps_accuracy_and_reports_cost(float_run, tmp_path, cli):
    out = tmp_path / "w4a4"
    code, stdout, err = cli("quantize", "--from", str(float_run), "--wbits", "4", "--abits", "4",
                                "--epochs", "3", "--threads", "1", "--quiet", "--out", str(out))
    assert code == 0, err
    assert "QAT 4/4 bits" in stdout
    acc = _last_eval(out)
    assert acc > _last_eval(float_run) - 0.05
    model = runs.load_model(out)
    layers = [m for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    assert len(layers) == 5
    first, last = layers[0], layers[-1]
    assert first.weight_bits == 8 and last.weight_bits == 8 and layers[1].weight_bits == 4  # first/last at 8
    report = (out / "report.md").read_text()
    assert "Cost per sample" in report and "| features.3 | conv | 16 (16) | 4 | 4 |" in report
    code, stdout, _ = cli("eval", str(out), "--json")
    assert json.loads(stdout)["acc"] == pytest.approx(acc)


def test_ptq_calibrates_without_training(float_run, tmp_path, cli):
    out = tmp_path / "ptq"
    code, stdout, err = cli("quantize", "--from", str(float_run), "--wbits", "8", "--abits", "8",
                                "--ptq", "--quiet", "--out", str(out))
    assert code == 0, err
    assert abs(_last_eval(out) - _last_eval(float_run)) <= 0.02
    code, _, err = cli("train", "--resume", str(out))
    assert code == 2 and "nothing to resume" in err


def test_killed_qat_run_resumes_exactly(float_run, tmp_path, cli):
    """A QAT run SIGKILLed mid-epoch resumes to the metrics of an uninterrupted one (quantizer state included)."""
    args = ("quantize", "--from", str(float_run), "--epochs", "3", "--threads", "1", "--quiet")
    code, _, err = cli(*args, "--out", str(tmp_path / "ref"))
    assert code == 0, err
    run = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-m", "bitsmith.cli.main", *args, "--out", str(run)],
                          env={**os.environ, faults.ENV: "step:40"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [r["epoch"] for r in runs.read_metrics(run) if r["type"] == "epoch"] == [1]
    code, _, err = cli("train", "--resume", str(run), "--quiet")
    assert code == 0, err
    timing = ("epoch_time_s", "step_ms_median")
    strip = [{k: v for k, v in r.items() if k not in timing} for r in runs.read_metrics(run)]
    expected = [{k: v for k, v in r.items() if k not in timing} for r in runs.read_metrics(tmp_path / "ref")]
    assert strip == expected


@pytest.mark.parametrize("args,needle", [
    (("--wbits", "1"), "accepted: 2..8, 16, 32"),
    (("--abits", "33"), "accepted: 2..8, 16, 32"),
    (("--method", "dorefa"), "unknown quantization method 'dorefa'"),
    (("--observer", "max"), "unknown observer 'max'"),
    (("--bits-file", "{tmp}/none.json"), "file not found"),
    (("--residual-bits", "9"), "residual activation bit width 9 is not supported; accepted: 2..8, 16, 32"),
])
def test_bad_quantize_input(float_run, tmp_path, cli, args, needle):
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    code, _, err = cli("quantize", "--from", str(float_run), *args, "--out", str(tmp_path / "o"))
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "checkpoint.safetensors").exists()


def test_from_must_be_a_float_run(float_run, tmp_path, cli):
    code, _, err = cli("quantize", "--from", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and "not a bitsmith run directory" in err
    q = tmp_path / "q"
    assert cli("quantize", "--from", str(float_run), "--ptq", "--quiet", "--out", str(q))[0] == 0
    code, _, err = cli("quantize", "--from", str(q), "--out", str(tmp_path / "o2"))
    assert code == 2 and "already a transformed" in err
