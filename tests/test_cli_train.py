"""The foundation commands: train / eval / models / datasets, and their one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def test_train_then_eval(tmp_path, cli):
    run = tmp_path / "run"
    code, out, _ = cli("train", "--epochs", "2", "--out", str(run), "--quiet")
    assert code == 0 and "test accuracy" in out and str(run) in out
    assert (run / "report.md").is_file() and (run / "learning_curves.png").is_file()
    code, out, _ = cli("eval", str(run), "--json")
    scores = json.loads(out)
    final = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert code == 0 and scores["acc"] == pytest.approx(final["acc"])
    code, out, _ = cli("train", "--config", str(run / "config.json"), "--out", str(tmp_path / "again"),
                           "--quiet")
    rerun = [json.loads(line) for line in (tmp_path / "again" / "metrics.jsonl").read_text().splitlines()][-1]
    assert code == 0 and rerun["acc"] == final["acc"]


def test_lists(cli):
    code, out, _ = cli("models")
    assert code == 0 and all(m in out for m in ("lenet5", "resnet20", "resnet18", "vgg_small", "mobilenetv2"))
    code, out, _ = cli("datasets")
    assert code == 0 and all(d in out for d in ("digits", "mnist", "fashion-mnist", "cifar10", "imagefolder"))


@pytest.mark.parametrize("args,needle", [
    (("train", "--model", "alexnet"), "unknown model 'alexnet'; available: cellnet, lenet5"),
    (("train", "--dataset", "imagenet"), "unknown dataset 'imagenet'; available:"),
    (("train", "--dataset", "mnist", "--data-root", "{tmp}"), "train-images-idx3-ubyte"),
    (("train", "--epochs", "0"), "epochs must be a positive integer"),
    (("train", "--optimizer", "lion"), "unknown optimizer 'lion'; accepted: adam, adamw, sgd"),
    (("train", "--epochs", "x"), "'x' is not a valid integer"),
    (("train", "--no-such-flag"), "No such option"),
    (("eval", "{tmp}"), "is not a bitsmith run directory"),
    (("eval", "{tmp}/nowhere"), "no such run directory"),
    (("train", "--resume", "{tmp}"), "is not a bitsmith run directory"),
    (("train", "--config", "{tmp}/none.json"), "file not found"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, cli, args, needle):
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    code, out, err = cli(*args, "--out", str(tmp_path / "o")) if args[0] == "train" and \
        "--resume" not in args and "--config" not in args else cli(*args)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o" / "checkpoint.safetensors").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out_as_user(tmp_path, cli):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = cli("train", "--epochs", "1", "--out", str(locked / "run"))
    assert code == 2 and "not writable" in err


def test_unwritable_out(tmp_path, cli):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = cli("train", "--epochs", "1", "--out", str(blocker))
    assert code == 2 and "exists and is not a folder" in err
    code, _, err = cli("train", "--epochs", "1", "--out", str(blocker / "sub"))
    assert code == 2 and "not writable" in err


def test_entry_point_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bitsmith.cli.main", "train", "--model", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: unknown model 'nope'; available: cellnet, lenet5, mobilenetv2, resnet18, "
                                   "resnet20, vgg_small")
