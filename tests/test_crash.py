"""Crash safety: `bitsmith train` and `bitsmith cgmq` SIGKILLed at exact points (mid-epoch, mid-checkpoint write,
between the checkpoint and the metrics, mid-report, mid-artifact) never leave a half-written file, and
`bitsmith train --resume` then reaches exactly the metrics (and method state) of an uninterrupted run.

Kill points come from ``bitsmith.engine.faults`` (``BITSMITH_KILL_AT``); the larger randomized sweep is
``benchmarks/reliability.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bitsmith import runs
from bitsmith.engine import faults, load_checkpoint

STEPS_PER_EPOCH = 23  # digits train split (1437 images) at batch 64
TIMING = ("epoch_time_s", "step_ms_median")  # wall-clock fields, the only ones allowed to differ
TRAIN = ("train", "--epochs", "4", "--seed", "3", "--threads", "1", "--quiet")
CGMQ = ("cgmq", "--bop-budget", "0.3", "--epochs", "5", "--seed", "1", "--threads", "1", "--quiet")


def _kill(args: tuple[str, ...], point: str) -> None:
    """Run ``bitsmith *args`` in a fresh process that SIGKILLs itself at ``point``; fail if it never got there."""
    env = {**os.environ, faults.ENV: point}
    proc = subprocess.run([sys.executable, "-m", "bitsmith.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"kill point {point} was not reached (exit {proc.returncode}): " \
                                               f"{proc.stderr[-2000:]}"


def _intact(run: Path) -> None:
    """Every file of the run parses whole; metrics.jsonl never runs ahead of the checkpoint."""
    assert faults.run_dir_problems(run) == []


def _deterministic(run: Path) -> list[dict]:
    """The run's metrics records without wall-clock fields."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in runs.read_metrics(run)]


def _epochs(run: Path) -> list[int]:
    return [r["epoch"] for r in runs.read_metrics(run) if r["type"] == "epoch"]


def _checkpoint_epoch(run: Path) -> int:
    return int(load_checkpoint(run / "checkpoint.safetensors")["epoch"]) + 1


def _finished_like(run: Path, reference: Path, cli) -> None:
    """Resume ``run`` to the end and compare it with the uninterrupted ``reference``."""
    code, _, err = cli("train", "--resume", str(run), "--quiet")
    assert code == 0, err
    assert _deterministic(run) == _deterministic(reference)
    assert runs.final_run_metrics(run)["test_acc"] == runs.final_run_metrics(reference)["test_acc"]
    _intact(run)
    assert faults.temp_files(run) == []
    assert (run / "report.md").is_file() and (run / "learning_curves.png").is_file()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted `bitsmith train` run (4 epochs, seed 3)."""
    from bitsmith.cli.main import main

    out = tmp_path_factory.mktemp("ref") / "run"
    main([*TRAIN, "--out", str(out)])
    return out


def test_trainer_survives_five_kill_points_in_a_row(reference, cli, tmp_path):
    run = tmp_path / "run"
    resume = ("train", "--resume", str(run), "--quiet")
    # (process arguments, kill point, epochs in the checkpoint after it, epochs in metrics.jsonl after it); a resumed
    # process first rewrites metrics.jsonl from the checkpoint (write 1), then checkpoints and logs each epoch
    chain = [
        ((*TRAIN, "--out", str(run)), f"step:{STEPS_PER_EPOCH + 7}", 1, 1),  # mid-epoch 2
        (resume, "write:checkpoint.safetensors:1", 1, 1),  # epoch 2's checkpoint half-written
        (resume, "write:metrics.jsonl:2", 2, 1),  # epoch 2 checkpointed, its metrics half-written
        (resume, "rename:checkpoint.safetensors:2", 4, 3),  # last epoch checkpointed, its metrics not yet written
        (resume, "write:report.md:1", 4, 4),  # training done, report half-written
    ]
    for args, point, in_checkpoint, in_metrics in chain:
        _kill(args, point)
        _intact(run)
        assert (_checkpoint_epoch(run), max(_epochs(run))) == (in_checkpoint, in_metrics), point
        if point.startswith("write:"):
            assert faults.temp_files(run), f"{point}: no half-written temporary file left to ignore"
        assert not (run / "report.md").exists()
    _finished_like(run, reference, cli)


def test_a_run_killed_before_its_first_checkpoint_is_refused_by_resume_and_restarts(reference, cli, tmp_path):
    run = tmp_path / "run"
    _kill((*TRAIN, "--out", str(run)), "step:10")
    _intact(run)
    assert not (run / "checkpoint.safetensors").exists() and runs.read_metrics(run) == []
    code, _, err = cli("train", "--resume", str(run), "--quiet")
    assert code == 2 and "missing checkpoint.safetensors" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli(*TRAIN, "--out", str(run))  # the same command again starts it over
    assert code == 0, err
    assert _deterministic(run) == _deterministic(reference)
    assert faults.temp_files(run) == []


def test_cgmq_gates_survive_kills_in_the_frozen_phase_and_mid_artifacts(cli, tmp_path):
    reference = tmp_path / "ref"
    code, _, err = cli(*CGMQ, "--out", str(reference))
    assert code == 0, err
    run = tmp_path / "run"
    _kill((*CGMQ, "--out", str(run)), f"step:{4 * STEPS_PER_EPOCH + 5}")  # epoch 5 of 5: gates frozen
    _intact(run)
    assert _checkpoint_epoch(run) == 4
    _kill(("train", "--resume", str(run), "--quiet"), "write:bits.json:1")  # trained; bits.json half-written
    _intact(run)
    assert not (run / "bits.json").exists()
    _finished_like(run, reference, cli)
    ref_state, state = (load_checkpoint(r / "checkpoint.safetensors") for r in (reference, run))
    assert state["callbacks"][0]["trajectory"] == ref_state["callbacks"][0]["trajectory"]
    assert state["callbacks"][0]["projected"] == ref_state["callbacks"][0]["projected"]
    gates = [k for k in state["model"] if k.endswith("gates")]
    assert gates and all(state["model"][k].equal(ref_state["model"][k]) for k in gates)
    for name in ("bits.json", "bits_chart.png", "bops_trajectory.png"):
        assert (run / name).is_file()
    assert (run / "bits.json").read_text() == (reference / "bits.json").read_text()


def test_the_integrity_check_sees_cut_files_and_bad_kill_points_are_refused(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    assert faults.run_dir_problems(run) == []
    for name in ("checkpoint.safetensors", "metrics.jsonl", "config.json", "learning_curves.png"):
        damaged = tmp_path / name
        shutil.copytree(reference, damaged)
        data = (damaged / name).read_bytes()
        cut = len(data) // 2 - (data[len(data) // 2 - 1:len(data) // 2] == b"\n")  # mid-line, as a crash leaves it
        (damaged / name).write_bytes(data[:cut])
        problems = faults.run_dir_problems(damaged)
        assert problems and problems[0].startswith(name), problems
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(lines[:2] + lines[4:]))  # a record lost: not a prefix any more
    assert faults.run_dir_problems(run) == ["metrics.jsonl is not a prefix of the checkpoint's history"]
    assert faults.parse("write:report.md:2") == faults.KillPoint("write", 2, "report.md")
    assert str(faults.parse("step:7")) == "step:7"
    for bad in ("step:0", "step:x", "write:3", "sleep:1", "rename:a.json:-1"):
        with pytest.raises(ValueError, match="expected step:N, write:NAME:N or rename:NAME:N"):
            faults.parse(bad)
