"""``bitsmith ghn train``, ``bitsmith ghn eval`` and ``bitsmith predict`` on digits: files, resume, run directories
that other commands read, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
import torch

from bitsmith import runs
from bitsmith.methods.ghn import GHNConfig, GraphHyperNetwork, load_ghn, predict, save_ghn

TINY = ("--hidden", "16", "--rank", "8", "--pool", "2", "--meta-batch", "1", "--eval-archs", "1", "--threads", "1",
        "--quiet")


@pytest.fixture(scope="module")
def ghn_run(tmp_path_factory):
    from bitsmith.cli.main import main

    out = tmp_path_factory.mktemp("ghn") / "run"
    main(["ghn", "train", "--epochs", "2", *TINY, "--out", str(out)])
    return out


def test_ghn_train_writes_a_ghn_file_and_resumes(ghn_run, cli, tmp_path):
    ghn = load_ghn(ghn_run)
    assert ghn.info["epochs_trained"] == 2 and ghn.info["ranks"] == 1
    assert ghn.config.hidden == 16 and ghn.config.rank == 8
    records = [json.loads(line) for line in (ghn_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2]
    assert "val_acc_worst" in records[-1]
    code, _, err = cli("ghn", "train", "--epochs", "2", *TINY, "--out", str(ghn_run))
    assert code == 2 and "already holds a run" in err
    code, _, err = cli("ghn", "train", "--resume", "--out", str(tmp_path / "none"))
    assert code == 2 and "holds no interrupted GHN training" in err


def test_ghn_train_precision_and_clip_options(cli, tmp_path):
    code, _, _ = cli("ghn", "train", "--epochs", "1", *TINY, "--precision", "bf16", "--grad-clip", "0",
                     "--out", str(tmp_path / "bf16"))
    assert code == 0
    train = json.loads((tmp_path / "bf16" / "config.json").read_text())["train"]
    assert train["precision"] == "bf16" and train["grad_clip"] is None
    assert all(torch.isfinite(p).all() for p in load_ghn(tmp_path / "bf16").parameters())
    code, _, err = cli("ghn", "train", "--epochs", "1", *TINY, "--precision", "fp16", "--out", str(tmp_path / "x"))
    assert code == 2 and "unknown precision 'fp16'" in err and "Traceback" not in err
    code, _, err = cli("ghn", "train", "--epochs", "1", *TINY, "--grad-clip", "-1", "--out", str(tmp_path / "x"))
    assert code == 2 and "grad clip must be > 0" in err and "Traceback" not in err


def test_predict_writes_a_run_that_cost_and_quantize_read(ghn_run, cli, tmp_path):
    out = tmp_path / "pred"
    code, stdout, stderr = cli("predict", "--ghn", str(ghn_run), "--model", "resnet20", "--out", str(out))
    assert code == 0, stderr
    assert "test accuracy" in stdout
    saved = runs.load_model(out)
    again = predict(runs.build_run_model(out)[0], load_ghn(ghn_run))
    assert torch.equal(saved.conv1.weight, again.conv1.weight)  # the run holds the GHN's prediction
    code, stdout, _ = cli("cost", "--run", str(out), "--json")
    assert code == 0 and json.loads(stdout)["totals"]["params"] > 0
    code, _, stderr = cli("quantize", "--from", str(out), "--wbits", "8", "--abits", "8", "--ptq", "--out",
                          str(tmp_path / "q"))
    assert code == 0, stderr


def test_predict_a_search_space_architecture(ghn_run, cli, tmp_path):
    code, stdout, stderr = cli("predict", "--ghn", str(ghn_run), "--model", "cellnet", "--arch", "test:2", "--out",
                               str(tmp_path / "cell"))
    assert code == 0, stderr
    assert runs.read_config(tmp_path / "cell")["train"]["model_kwargs"]["arch"]["cells"]


@pytest.mark.parametrize(("args", "message"), [
    (("--model", "resnet20", "--arch", "test:1"), "use it with --model cellnet"),
    (("--model", "cellnet", "--arch", "test"), "expected SPLIT:INDEX"),
    (("--model", "cellnet", "--arch", "nope:1"), "unknown split"),
    (("--model", "nomodel"), "unknown model"),
])
def test_predict_refuses_bad_input_in_one_line(ghn_run, cli, tmp_path, args, message):
    code, _, err = cli("predict", "--ghn", str(ghn_run), *args, "--out", str(tmp_path / "x"))
    assert code == 2 and message in err and "Traceback" not in err


def test_a_ghn_for_other_data_is_refused(cli, tmp_path):
    other = save_ghn(tmp_path / "cifar.safetensors", GraphHyperNetwork(GHNConfig(hidden=8, in_channels=3,
                                                                                 image_size=32)))
    code, _, err = cli("predict", "--ghn", str(other), "--model", "resnet20", "--out", str(tmp_path / "x"))
    assert code == 2 and "trained for 3x32x32 images" in err
    code, _, err = cli("predict", "--ghn", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "x"))
    assert code == 2 and "no GHN file" in err


def test_ghn_eval_writes_the_table_rows(ghn_run, cli, tmp_path):
    out = tmp_path / "eval"
    code, stdout, stderr = cli("ghn", "eval", "--ghn", str(ghn_run), "--splits", "test,predefined", "--n", "1",
                               "--steps", "2", "--converge-epochs", "0", "--bn-batches", "2", "--out", str(out), "-q")
    assert code == 0, stderr
    result = json.loads((out / "ghn_eval.json").read_text())
    assert set(result["splits"]) == {"test", "predefined"}
    assert result["splits"]["predefined"]["rows"][0]["arch"] == "lenet5"
    assert "predicted" in stdout
    code, _, err = cli("ghn", "eval", "--ghn", str(ghn_run), "--splits", "bogus", "--out", str(out))
    assert code == 2 and "accepted: val, test" in err


def test_ghn_train_under_torchrun(tmp_path):
    import subprocess
    import sys

    from bitsmith.engine import build_datasets, evaluate_model, recalibrate_bn
    from bitsmith.methods.ghn import predict_many
    from bitsmith.methods.ghn.training import evaluation_architectures

    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "bitsmith.cli.main", "ghn", "train", "--epochs", "1", *TINY, "--eval-archs", "3", "--out", str(run)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("GHN (") == 1  # only rank 0 reports
    ghn = load_ghn(run)
    assert ghn.info["epochs_trained"] == 1 and ghn.info["ranks"] == 2
    # the two ranks scored 2 + 1 of the 3 validation architectures; together they equal one process scoring all
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    train_ds, evals = build_datasets(runs.train_config(run))
    archs = evaluation_architectures(ghn.config, 3)
    predict_many([a.model for a in archs], ghn, [a.encoding for a in archs])
    scores = []
    for arch in archs:
        recalibrate_bn(arch.model, train_ds, 10)
        scores.append(evaluate_model(arch.model, evals["val"], 512, torch.device("cpu"))["acc"])
    assert logged["val_acc"] == pytest.approx(sum(scores) / 3, abs=2e-3)
    assert logged["val_acc_worst"] == pytest.approx(min(scores), abs=2e-3)


def test_ghn_option_help_names_every_shipped_hypernetwork(cli):
    from bitsmith.methods.ghn.io import shipped

    for command in (("predict",), ("ghn", "eval")):
        code, out, _ = cli(*command, "--help")
        assert code == 0
        assert all(name in " ".join(out.split()) for name in shipped()), (command, shipped())
