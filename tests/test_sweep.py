"""`bitsmith sweep`: the TOML grid expands into the right runs and command lines, bad files are refused in one line,
and a sweep killed mid-way and started again skips what finished, resumes what was interrupted and loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitsmith import runs, sweeps
from bitsmith.cli.main import main
from bitsmith.cli.sweep import command_table
from bitsmith.errors import ConfigError


@pytest.fixture(scope="module")
def commands() -> dict:
    return command_table()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    return path


GRID = """
[sweep]
out = "{out}"
seeds = [0, 1]
threads = 1

[defaults]
model = "lenet5"

[runs.fp32]
command = "train"
epochs = 2

[runs.lsq]
command = "quantize"
from = "fp32"
grid = [{{wbits = 8, abits = 8}}, {{wbits = 4, abits = 4}}]
per_channel = false
epochs = 1

[runs.rpg]
command = "rpg"
dof-ratio = [0.1, 0.5]
"""


def test_grid_expands_into_runs_per_combination_and_seed(tmp_path, commands) -> None:
    sweep = sweeps.load_sweep(_write(tmp_path, GRID.format(out=tmp_path / "out")), commands, workers=3)
    ids = [r.id for r in sweep.runs]
    assert len(ids) == 2 + 2 * 2 + 2 * 2 and len(set(ids)) == len(ids)
    assert ids.index("lsq/wbits4-abits4/seed1") > ids.index("fp32/seed1")
    assert sweep.workers == 3 and sweep.threads == 1
    by_id = sweep.by_id()
    argv = sweeps.run_argv(sweep, by_id["lsq/wbits4-abits4/seed1"], commands)
    assert argv[0] == "quantize"
    assert argv[argv.index("--from") + 1] == str(tmp_path / "out" / "fp32" / "seed1")
    assert argv[argv.index("--wbits") + 1] == "4" and argv[argv.index("--seed") + 1] == "1"
    assert "--per-tensor" in argv and "--model" not in argv  # a false flag uses its off spelling; no defaults with from
    rpg = sweeps.run_argv(sweep, by_id["rpg/dof-ratio0.1/seed0"], commands)
    assert rpg[rpg.index("--dof-ratio") + 1] == "0.1" and rpg[rpg.index("--model") + 1] == "lenet5"
    assert by_id["lsq/wbits4-abits4/seed1"].grid == (("wbits", 4), ("abits", 4))
    assert by_id["rpg/dof-ratio0.1/seed0"].grid == (("dof-ratio", 0.1),) and by_id["fp32/seed1"].grid == ()
    assert all(sweeps.run_state(r) == "new" for r in sweep.runs)


@pytest.mark.parametrize(("text", "message"), [
    ('[runs.a]\ncommand = "train"', "no output folder"),
    ('[sweep]\nout = "o"\n[runs.a]\ncommand = "fly"', "command 'fly' cannot run in a sweep"),
    ('[sweep]\nout = "o"\n[runs.a]\ncommand = "train"\nepochz = 3', "bitsmith train has no option --epochz"),
    ('[sweep]\nout = "o"\n[runs.a]\ncommand = "train"\nseed = 3', "may not set --seed"),
    ('[sweep]\nout = "o"\nseeds = []\n[runs.a]\ncommand = "train"', "seeds must be a non-empty list"),
    ('[sweep]\nout = "o"\nworkers = 0\n[runs.a]\ncommand = "train"', "workers must be a positive integer"),
    ('[sweep]\nout = "o"\n[runs.a]\ncommand = "quantize"\nfrom = "b"', "must name another group"),
    ('[sweep]\nout = "o"\n[runs.a]\ncommand = "train"\nepochs = [2, 2]', "share an id"),
    ('[sweep]\nout = "o"\n[runs.a]\ncommand = "train"\n[runs.b]\ncommand = "quantize"\nfrom = "a"\nwbits = 4\n'
     '[runs.c]\ncommand = "quantize"\nfrom = "b"\nwbits = 2', "chains are not supported"),
    ('[sweep]\nout = "o"\n[runs.a]\ncommand = "train"\nepochs = [1, 2]\n[runs.b]\ncommand = "quantize"\n'
     'from = "a"\nwbits = 4', "exactly one run per seed"),
    ('[sweep]\nout = "o"\n[runs.a]\ncommand = "train"\nlr = {x = 1}', "expected a string, number or true/false"),
    ('[sweep\nout = "o"', "not valid TOML"),
    ('[sweep]\nout = "o"', "no runs"),
])
def test_bad_sweep_files_are_refused_in_one_line(tmp_path, commands, text, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        sweeps.load_sweep(_write(tmp_path, text), commands)
    assert "\n" not in str(info.value) and "sweep.toml" in str(info.value)


def _sweep_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bitsmith.cli.main", "sweep", *args]


RESUMABLE = """
[sweep]
out = "{out}"
seeds = [0]
workers = 2
threads = 1

[runs.short]
command = "train"
model = "lenet5"
epochs = 1

[runs.long]
command = "train"
model = "lenet5"
epochs = 30

[runs.ptq]
command = "quantize"
from = "short"
grid = [{{wbits = 8, abits = 8}}]
ptq = true
"""


def _epochs_done(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not (run_dir / "checkpoint.safetensors").is_file() or not path.is_file():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"type": "epoch"' in line)


def test_killed_sweep_restarts_without_redoing_finished_runs_and_loses_nothing(tmp_path) -> None:
    out = tmp_path / "out"
    config = _write(tmp_path, RESUMABLE.format(out=out))
    proc = subprocess.Popen(_sweep_cli(str(config)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while not ((out / "short" / "seed0" / sweeps.DONE_MARK).is_file() and 1 <= _epochs_done(out / "long" / "seed0")
               < 30):
        assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before the kill point"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    short = out / "short" / "seed0"
    before = {p.name: p.stat().st_mtime_ns for p in short.iterdir()}
    assert not (out / "long" / "seed0" / sweeps.DONE_MARK).exists()

    again = subprocess.run(_sweep_cli(str(config)), capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "done earlier short/seed0" in again.stdout
    assert "start   short/seed0" not in again.stdout
    assert "start   long/seed0 (resuming)" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in short.iterdir()} == before
    for run_id in ("short/seed0", "long/seed0", "ptq/wbits8-abits8/seed0"):
        assert (out / run_id / sweeps.DONE_MARK).is_file()
    compare = json.loads((out / "compare" / "compare.json").read_text())
    assert sum(g["n"] for g in compare) == 3
    assert {g["command"]: g["setting"] for g in compare} == {"short": "-", "long": "-", "ptq": "wbits=8, abits=8, ptq"}

    reference = tmp_path / "reference"
    main(["train", "--model", "lenet5", "--epochs", "30", "--seed", "0", "--threads", "1", "--quiet",
          "--out", str(reference)])
    resumed = runs.final_run_metrics(out / "long" / "seed0")
    assert resumed["test_acc"] == runs.final_run_metrics(reference)["test_acc"]
    assert resumed["test_loss"] == runs.final_run_metrics(reference)["test_loss"]


def test_failed_run_blocks_its_dependents_and_the_sweep_exits_1(tmp_path) -> None:
    config = _write(tmp_path, f"""
[sweep]
out = "{tmp_path / 'out'}"
[runs.bad]
command = "train"
optimizer = "nope"
[runs.after]
command = "quantize"
from = "bad"
wbits = 4
""")
    result = subprocess.run(_sweep_cli(str(config)), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "FAILED  bad/seed0 (exit 2" in result.stdout and "not run after/seed0" in result.stdout
    log = (tmp_path / "out" / "logs" / "bad__seed0.log").read_text()
    assert "optimizer" in log and "Traceback" not in log


@pytest.mark.slow
def test_demo_ends_with_the_pareto_chart_and_reports(tmp_path) -> None:
    """The README's main command, shortened: every method of the demo finishes and the chart and reports exist."""
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "bitsmith.cli.main", "demo", "--out", str(out), "--epochs", "2",
                             "--qat-epochs", "1", "--seeds", "1", "--workers", "2"], capture_output=True, text=True,
                            timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"chart: {out / 'compare' / 'pareto.png'}" in result.stdout
    groups = json.loads((out / "compare" / "compare.json").read_text())
    assert {g["command"] for g in groups} == {"fp32", "lsq-ptq", "lsq", "directq", "cgmq", "rpg"}
    settings = {g["command"]: g["setting"] for g in groups if g["command"] != "lsq"}
    assert settings["directq"] == "wbits=2, abits=2" and settings["rpg"] == "dof-ratio=0.25", settings
    assert sorted(g["setting"] for g in groups if g["command"] == "lsq") == ["wbits=2, abits=2", "wbits=4, abits=4"]
    assert (out / "compare" / "pareto.png").stat().st_size > 10_000
    assert (out / "cgmq" / "seed0" / "report.html").is_file() and (out / "sweep.toml").is_file()


def test_a_finished_run_with_other_settings_is_not_silently_reused(tmp_path, commands) -> None:
    text = '[sweep]\nout = "{out}"\n[runs.a]\ncommand = "train"\nepochs = {epochs}\n'
    first = sweeps.load_sweep(_write(tmp_path, text.format(out=tmp_path / "o", epochs=1)), commands)
    run = first.runs[0]
    run.out.mkdir(parents=True)
    (run.out / sweeps.DONE_MARK).write_text(json.dumps({"settings": sweeps.run_settings(run)}))
    changed = sweeps.load_sweep(_write(tmp_path, text.format(out=tmp_path / "o", epochs=2)), commands)
    with pytest.raises(ConfigError, match="finished with other settings"):
        sweeps.run_sweep(changed, commands)


def test_a_run_finished_before_grid_points_were_recorded_gets_its_point_and_its_label(tmp_path, commands) -> None:
    """A marker written before markers recorded the grid point is completed when the sweep skips its run, so the
    run's seeds stay one row, labelled like a new run's, not by the folder name."""
    text = f'[sweep]\nout = "{tmp_path / "o"}"\nseeds = [0]\n[runs.a]\ncommand = "train"\nmodel = "lenet5"\n' \
           'epochs = [1]\n'
    sweep = sweeps.load_sweep(_write(tmp_path, text), commands)
    sweeps.run_sweep(sweep, commands)
    path = sweep.runs[0].out / sweeps.DONE_MARK
    marker = json.loads(path.read_text())
    assert marker["grid"] == {"epochs": 1}
    path.write_text(json.dumps({k: v for k, v in marker.items() if k != "grid"}))
    result = sweeps.run_sweep(sweep, commands)
    assert [r.id for r in result.skipped] == ["a/epochs1/seed0"]
    assert json.loads(path.read_text()) == marker
    assert [(g["command"], g["setting"]) for g in result.compare["groups"]] == [("a", "epochs=1")]


def test_a_second_sweep_over_the_same_folder_is_refused(tmp_path, commands) -> None:
    import fcntl

    sweep = sweeps.load_sweep(_write(tmp_path, f'[sweep]\nout = "{tmp_path / "o"}"\n[runs.a]\ncommand = "train"\n'),
                              commands)
    (tmp_path / "o").mkdir()
    with open(tmp_path / "o" / sweeps.LOCK_FILE, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another sweep is running in"):
            sweeps.run_sweep(sweep, commands)
    assert not sweep.runs[0].out.exists()
