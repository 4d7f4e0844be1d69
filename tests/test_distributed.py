"""The same Trainer under torchrun: 2 CPU processes (gloo) give a valid run close to the 1-process run."""

from __future__ import annotations

import subprocess
import sys

from bitsmith.engine import TrainConfig, train
from bitsmith.runs import evaluate_run, read_metrics


def test_torchrun_two_processes_on_cpu(tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "bitsmith.cli.main", "train", "--epochs", "4", "--threads", "1", "--device", "cpu", "--quiet",
           "--out", str(run)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("test accuracy") == 1  # only rank 0 prints
    records = read_metrics(run)
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2, 3, 4]
    ddp_acc = [r for r in records if r["type"] == "eval"][-1]["acc"]
    single = train(TrainConfig(epochs=4, num_threads=1), tmp_path / "single", quiet=True).metrics["test_acc"]
    assert abs(ddp_acc - single) < 0.08, (ddp_acc, single)
    assert abs(evaluate_run(run)["acc"] - ddp_acc) < 1e-9
