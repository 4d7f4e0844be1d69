"""Crash safety sweep (issue 14): `bitsmith train` and `bitsmith cgmq` SIGKILLed at randomly drawn points, one to
three times per run, each killed run resumed with `bitsmith train --resume` to the end.

    .venv/bin/python -m benchmarks.reliability --kills 50 --seed 0     # prints "kill points tried N, survived M"

A kill point (``bitsmith.engine.faults``, env ``BITSMITH_KILL_AT``) is drawn among those the next process reaches,
first its kind (each equally likely), then the point: after any optimizer step, during (temporary file cut in half,
never renamed) or right after the atomic write of any file the run writes (config.json, metrics.jsonl,
checkpoint.safetensors, the report and its plot, CGMQ's bits.json and plots). A kill point is survived when (a)
right after the kill every file of the run directory parses whole and metrics.jsonl is a prefix of the checkpoint's
history, and (b) the run, resumed to the end (or, killed before its first checkpoint, started again with the same
command), has exactly the metrics records of an uninterrupted run with the same seed (wall-clock fields aside), no
temporary file left, and, for CGMQ, the same gates, BOPs trajectory and bits.json. Every process runs one torch
thread.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, environment
from bitsmith import _io, runs
from bitsmith.engine import faults, load_checkpoint

OUT = ROOT / "benchmarks" / "out" / "reliability"
STEPS_PER_EPOCH = 23  # digits train split (1437 images) at batch 64
TIMING = ("epoch_time_s", "step_ms_median")
JOBS: dict[str, dict[str, Any]] = {
    "train": {"args": ("train", "--epochs", "4", "--seed", "3", "--threads", "1", "--quiet"), "epochs": 4,
              "artifacts": ()},
    "cgmq": {"args": ("cgmq", "--bop-budget", "0.3", "--epochs", "5", "--seed", "1", "--threads", "1", "--quiet"),
             "epochs": 5, "artifacts": ("bits.json", "bits_chart.png", "bops_trajectory.png")},
}
REPORT = ("learning_curves.png", "report.md")


def bitsmith(args: list[str] | tuple[str, ...]) -> int:
    """Run the ``bitsmith`` CLI in this process; its exit code."""
    from bitsmith.cli.main import main

    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def done_epochs(run: Path) -> int:
    """Epochs in the run's checkpoint (0: none yet)."""
    path = run / "checkpoint.safetensors"
    return int(load_checkpoint(path)["epoch"]) + 1 if path.is_file() else 0


def candidates(job: str, run: Path) -> list[str]:
    """Every kill point the next process of ``job`` on ``run`` reaches (a fresh start if there is no checkpoint)."""
    epochs = JOBS[job]["epochs"]
    left = epochs - done_epochs(run)
    points = [f"step:{k}" for k in range(1, left * STEPS_PER_EPOCH + 1)]
    files = [(name, n) for name in ("checkpoint.safetensors",) for n in range(1, left + 1)]
    files += [("metrics.jsonl", n) for n in range(1, left + 2)]
    files += [(name, 1) for name in (*JOBS[job]["artifacts"], *REPORT)]
    if left == epochs:
        files.append(("config.json", 1))
    points += [f"{kind}:{name}:{n}" for name, n in files for kind in ("write", "rename")]
    return points


def next_args(job: str, run: Path) -> list[str]:
    """The command that continues ``run``: ``train --resume``, or the original command if nothing was saved."""
    if done_epochs(run):
        return ["train", "--resume", str(run), "--quiet"]
    return [*JOBS[job]["args"], "--out", str(run)]


def kill(args: list[str], point: str) -> bool:
    """Run ``bitsmith *args`` in a fresh process that SIGKILLs itself at ``point``; True if it got there."""
    env = {**os.environ, faults.ENV: point}
    proc = subprocess.run([sys.executable, "-m", "bitsmith.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    return proc.returncode == -signal.SIGKILL


def records(run: Path) -> list[dict[str, Any]]:
    """The run's metrics records without wall-clock fields."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in runs.read_metrics(run)]


def differences(job: str, run: Path, reference: Path) -> list[str]:
    """How a finished ``run`` differs from the uninterrupted ``reference`` (empty if it does not)."""
    found = []
    if records(run) != records(reference):
        found.append("metrics records differ")
    if faults.temp_files(run):
        found.append(f"temporary files left: {[p.name for p in faults.temp_files(run)]}")
    for name in (*REPORT, *JOBS[job]["artifacts"]):
        if not (run / name).is_file():
            found.append(f"{name} missing")
    if job == "cgmq":
        ours, theirs = (load_checkpoint(r / "checkpoint.safetensors") for r in (run, reference))
        mine, ref = ours["callbacks"][0], theirs["callbacks"][0]
        if (mine["trajectory"], mine["projected"]) != (ref["trajectory"], ref["projected"]) or not all(
                a.equal(b) for a, b in zip(mine["momentum"] or [], ref["momentum"] or [], strict=True)):
            found.append("CGMQ callback state (trajectory, projections, gate momentum) differs")
        gates = [k for k in theirs["model"] if k.endswith("gates")]
        if not all(ours["model"][k].equal(theirs["model"][k]) for k in gates):
            found.append("CGMQ gates differ")
        if (run / "bits.json").read_text() != (reference / "bits.json").read_text():
            found.append("bits.json differs")
    found += faults.run_dir_problems(run)
    return found


def trial(job: str, run: Path, reference: Path, rng: random.Random, kills: int) -> list[dict[str, Any]]:
    """Kill one run of ``job`` ``kills`` times at random points, then finish it; one record per kill point."""
    shutil.rmtree(run, ignore_errors=True)
    tried = []
    for _ in range(kills):
        points = candidates(job, run)
        kind = rng.choice(sorted({p.split(":")[0] for p in points}))
        point = rng.choice([p for p in points if p.startswith(kind + ":")])
        reached = kill(next_args(job, run), point)
        problems = faults.run_dir_problems(run) if reached else []
        tried.append({"job": job, "point": point, "reached": reached, "problems": problems})
    code = bitsmith(next_args(job, run))
    final = [f"finishing exited {code}"] if code else differences(job, run, reference)
    for record in tried:
        record["final"] = final
        record["survived"] = record["reached"] and not record["problems"] and not final
    return tried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=50, help="kill points to try in all")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill point draws")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    OUT.mkdir(parents=True, exist_ok=True)
    references = {}
    for job, spec in JOBS.items():
        references[job] = OUT / f"reference-{job}"
        shutil.rmtree(references[job], ignore_errors=True)
        assert bitsmith([*spec["args"], "--out", str(references[job])]) == 0
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    while len(results) < args.kills:
        job = rng.choice(list(JOBS))
        count = min(rng.randint(1, 3), args.kills - len(results))
        for record in trial(job, OUT / f"run-{job}", references[job], rng, count):
            results.append(record)
            status = "survived" if record["survived"] else f"FAILED {record['problems'] + record['final']}"
            if not record["reached"]:
                status = "FAILED (kill point not reached)"
            print(f"{len(results):3d} {job:5s} {record['point']:36s} {status}", flush=True)
    survived = sum(r["survived"] for r in results)
    kinds = Counter(r["point"].split(":")[0] for r in results)
    files = Counter(r["point"].split(":")[1] for r in results if not r["point"].startswith("step"))
    summary = {"tried": len(results), "survived": survived, "jobs": dict(Counter(r["job"] for r in results)),
               "kinds": dict(kinds), "files": dict(files), "seed": args.seed,
               "minutes": (time.perf_counter() - t0) / 60, "environment": environment()}
    _io.write_json(OUT / "result.json", {"summary": summary, "kills": results})
    print(json.dumps(summary))
    print(f"kill points tried {len(results)}, survived {survived}")


if __name__ == "__main__":
    main()
