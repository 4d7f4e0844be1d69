"""A run killed mid-way and resumed reaches exactly the final metrics of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bitsmith.engine import TrainConfig, train
from bitsmith.runs import read_metrics

EPOCHS = 6
KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bitsmith.cli.main", *args]


def _epochs_done(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(json.loads(line)["type"] == "epoch" for line in path.read_text().splitlines() if line.strip())


def _final(records: list[dict]) -> dict:
    last_epoch = max(r["epoch"] for r in records)
    out = {}
    for r in records:
        if r["epoch"] == last_epoch:
            prefix = "" if r["type"] == "epoch" else f"{r['split']}_"
            out.update({prefix + k: v for k, v in r.items()})
    return {k: out[k] for k in KEYS}


def test_killed_run_resumes_to_identical_metrics(tmp_path):
    reference = train(TrainConfig(epochs=EPOCHS, seed=3, num_threads=1), tmp_path / "ref", quiet=True)
    expected = {k: reference.metrics[k] for k in KEYS}

    run = tmp_path / "killed"
    args = ("train", "--epochs", str(EPOCHS), "--seed", "3", "--threads", "1", "--quiet", "--out", str(run))
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _epochs_done(run) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.15)  # land somewhere inside a later epoch
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _epochs_done(run)
    assert 2 <= done < EPOCHS

    resumed = subprocess.run(_cli("train", "--resume", str(run), "--quiet"), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    records = read_metrics(run)
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == list(range(1, EPOCHS + 1))
    assert _final(records) == expected
    assert not list(run.glob(".*.tmp"))
    assert (run / "report.md").is_file()
