"""Sweeps: a grid of independent runs (command x options x seed) read from a TOML file, run in parallel worker
processes, resumable, then compared in one table and Pareto chart.

Each run is the ``bitsmith`` command a user would type, started as a child process, so every command that writes a
run directory (``train``, ``quantize``, ``directq``, ``cgmq``, ``search``, ``rpg``, ``predict``, ...) takes part
without a special case here. A run that ended well gets a marker file; a later call skips it. A run that was
interrupted resumes: with its command's own ``--resume`` flag where it has one, else with ``bitsmith train
--resume`` when its directory holds a checkpoint with trained epochs, else it starts again (an evaluation-only run
is cheap to redo).

The file::

    [sweep]
    out = "runs/pareto"          # folder of all runs (--out overrides)
    seeds = [0, 1, 2]            # one run per seed for commands that take --seed
    workers = 2                  # runs at once (default: CPU cores / threads)
    threads = 1                  # torch threads of each run

    [defaults]                   # options for every run whose command has them, except runs that start
                                 # from another run (they take model and data from it)
    model = "lenet5"

    [runs.fp32]                  # a group: a command and its options; a list is a grid axis
    command = "train"
    epochs = 30

    [runs.lsq]
    command = "quantize"
    from = "fp32"                # start from the group fp32's run of the same seed
    grid = [{wbits = 8, abits = 8}, {wbits = 4, abits = 4}]   # explicit combinations (zipped options)
    epochs = 10
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bitsmith import _io
from bitsmith.errors import ConfigError
from bitsmith.report.compare import SWEEP_MARK as DONE_MARK

LOG_DIR = "logs"
LOCK_FILE = ".sweep.lock"
COMPARE_DIR = "compare"
#: Options the sweep itself sets on every run; a TOML file may not give them.
_RESERVED = frozenset({"out", "seed", "threads", "resume", "config", "quiet"})
_SWEEP_KEYS = frozenset({"out", "seeds", "workers", "threads"})
_SCALAR = (str, int, float, bool)


@dataclass(frozen=True)
class OptionSpec:
    """One command-line option of a command: whether it is an on/off flag, and its "off" spelling if it has one."""

    flag: bool = False
    negative: str | None = None


#: For each command that can run in a sweep (a space joins group and sub-command, e.g. "ghn train"), its options
#: by name without the leading dashes.
CommandTable = Mapping[str, Mapping[str, OptionSpec]]


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its id (group/setting/seed), command, options, seed, the run it starts from, folder, and
    its grid point (the options its group varies; empty for a group without a grid)."""

    id: str
    group: str
    command: str
    options: tuple[tuple[str, Any], ...]
    seed: int | None
    source: str | None
    out: Path
    grid: tuple[tuple[str, Any], ...] = ()


@dataclass
class Sweep:
    """A parsed sweep file: where its runs go, how many run at once, and the runs in dependency order."""

    out: Path
    workers: int
    threads: int
    runs: list[PlannedRun]

    def by_id(self) -> dict[str, PlannedRun]:
        """The runs keyed by id."""
        return {r.id: r for r in self.runs}


@dataclass
class SweepResult:
    """How a sweep ended: finished (including those skipped as already done), failed and not started runs."""

    done: list[PlannedRun] = field(default_factory=list)
    skipped: list[PlannedRun] = field(default_factory=list)
    failed: list[PlannedRun] = field(default_factory=list)
    blocked: list[PlannedRun] = field(default_factory=list)
    compare: dict[str, Any] | None = None


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    return _io.read_parsed(path, tomllib.loads, (tomllib.TOMLDecodeError,), "TOML", "sweep file", ConfigError)


def _key(name: str) -> str:
    return name.replace("_", "-")


def _slug(options: Mapping[str, Any]) -> str:
    text = "-".join(f"{k}{v}" for k, v in options.items())
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def _check_value(value: Any, where: str) -> None:
    if not isinstance(value, _SCALAR):
        raise ConfigError(f"{where}: expected a string, number or true/false, got {type(value).__name__}")


def _group_runs(name: str, table: dict[str, Any], defaults: dict[str, Any], commands: CommandTable,
                seeds: list[int], out: Path, where: str) -> list[dict[str, Any]]:
    """The runs of one ``[runs.NAME]`` group, before their sources are resolved."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [runs.{name}] must be a table")
    command = table.get("command")
    if command not in commands:
        raise ConfigError(f"{where}: [runs.{name}] command {command!r} cannot run in a sweep; known: "
                          f"{', '.join(sorted(commands))}")
    known = commands[command]
    grid = table.get("grid", [{}])
    if not isinstance(grid, list) or not grid or not all(isinstance(g, dict) for g in grid):
        raise ConfigError(f"{where}: [runs.{name}] grid must be a non-empty list of tables")
    options = {_key(k): v for k, v in table.items() if k not in ("command", "from", "grid")}
    for key in [*options, *{_key(k) for g in grid for k in g}]:
        if key in _RESERVED:
            raise ConfigError(f"{where}: [runs.{name}] may not set --{key} (the sweep sets it)")
        if key not in known:
            raise ConfigError(f"{where}: [runs.{name}] bitsmith {command} has no option --{key}; known: "
                              f"{', '.join(sorted(k for k in known if k not in _RESERVED))}")
    inherited = {} if table.get("from") is not None else defaults
    fixed: dict[str, Any] = {_key(k): v for k, v in inherited.items() if _key(k) in known}
    axes: dict[str, list[Any]] = {}
    for key, value in options.items():
        if isinstance(value, list):
            if not value:
                raise ConfigError(f"{where}: [runs.{name}] {key} is an empty list")
            for v in value:
                _check_value(v, f"{where}: [runs.{name}] {key}")
            axes[key] = value
        else:
            _check_value(value, f"{where}: [runs.{name}] {key}")
            fixed[key] = value
    planned = []
    for combo in grid:
        combo = {_key(k): v for k, v in combo.items()}
        for key, value in combo.items():
            _check_value(value, f"{where}: [runs.{name}] grid {key}")
        for values in itertools.product(*axes.values()):
            varying = {**combo, **dict(zip(axes, values, strict=True))}
            slug = _slug(varying)
            for seed in (seeds if "seed" in known else [None]):
                parts = [name, *([slug] if slug else []), *([f"seed{seed}"] if seed is not None else [])]
                planned.append({"id": "/".join(parts), "group": name, "command": command,
                                "options": tuple({**fixed, **varying}.items()), "seed": seed,
                                "grid": tuple(varying.items()), "from": table.get("from"),
                                "out": out.joinpath(*parts)})
    return planned


def load_sweep(path: str | Path, commands: CommandTable, *, out: str | Path | None = None,
               workers: int | None = None) -> Sweep:
    """Parse and check a sweep file against ``commands`` (each command's options); ``out``/``workers`` override
    the file's. Every problem is a one-line ConfigError naming the file and the entry."""
    path = Path(path)
    doc = _read_toml(path)
    unknown = set(doc) - {"sweep", "defaults", "runs"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; known: sweep, defaults, runs")
    head = doc.get("sweep", {})
    bad = set(head) - _SWEEP_KEYS
    if bad:
        raise ConfigError(f"{path}: unknown [sweep] key(s) {', '.join(sorted(bad))}; known: "
                          f"{', '.join(sorted(_SWEEP_KEYS))}")
    if out is None and "out" not in head:
        raise ConfigError(f"{path}: no output folder; set [sweep] out = \"...\" or pass --out")
    root = Path(out if out is not None else head["out"])
    seeds = head.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise ConfigError(f"{path}: [sweep] seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: [sweep] seeds repeat a seed: {seeds}")
    threads = _positive_int(head.get("threads", 1), f"{path}: [sweep] threads")
    n_workers = _positive_int(workers if workers is not None else head.get("workers", max(1, (os.cpu_count() or 1)
                                                                                          // threads)),
                              f"{path}: workers")
    groups = doc.get("runs")
    if not isinstance(groups, dict) or not groups:
        raise ConfigError(f"{path}: no runs; add at least one [runs.NAME] table with a command")
    defaults = doc.get("defaults", {})
    planned = [r for name, table in groups.items()
               for r in _group_runs(name, table, defaults, commands, seeds, root, str(path))]
    ids = [r["id"] for r in planned]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: two runs share an id; give the grid distinct values")
    runs = _resolve_sources(planned, groups, commands, path)
    return Sweep(out=root, workers=n_workers, threads=threads, runs=runs)


def _resolve_sources(planned: list[dict[str, Any]], groups: dict[str, Any], commands: CommandTable,
                     path: Path) -> list[PlannedRun]:
    """Point every run with ``from`` at the run of that group with the same seed; order runs after their source."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for r in planned:
        by_group.setdefault(r["group"], []).append(r)
    resolved: dict[str, PlannedRun] = {}
    for r in planned:
        source = None
        if r["from"] is not None:
            name = r["from"]
            if name not in groups or name == r["group"]:
                raise ConfigError(f"{path}: [runs.{r['group']}] from = {name!r} must name another group; groups: "
                                  f"{', '.join(groups)}")
            if "from" not in commands[r["command"]]:
                raise ConfigError(f"{path}: [runs.{r['group']}] bitsmith {r['command']} has no --from option")
            if by_group[name][0]["from"] is not None:
                raise ConfigError(f"{path}: [runs.{r['group']}] from = {name!r}: that group starts from another "
                                  "group itself; chains are not supported")
            matches = [s for s in by_group[name] if s["seed"] == r["seed"] or s["seed"] is None]
            if len(matches) != 1:
                raise ConfigError(f"{path}: [runs.{r['group']}] from = {name!r} must name a group with exactly one "
                                  f"run per seed (it has {len(matches)} for seed {r['seed']})")
            source = matches[0]["id"]
        resolved[r["id"]] = PlannedRun(id=r["id"], group=r["group"], command=r["command"], options=r["options"],
                                       seed=r["seed"], source=source, out=r["out"], grid=r["grid"])
    ordered = [run for run in resolved.values() if run.source is None]
    ordered += [run for run in resolved.values() if run.source is not None]
    return ordered


def _render(key: str, value: Any, spec: OptionSpec) -> list[str]:
    if spec.flag:
        if value is True:
            return [f"--{key}"]
        return [spec.negative] if spec.negative else []
    return [f"--{key}", str(value)]


def run_argv(sweep: Sweep, run: PlannedRun, commands: CommandTable) -> list[str]:
    """The ``bitsmith`` arguments that start ``run`` afresh."""
    known = commands[run.command]
    argv = run.command.split()
    for key, value in run.options:
        argv += _render(key, value, known[key])
    if run.seed is not None:
        argv += ["--seed", str(run.seed)]
    if run.source is not None:
        argv += ["--from", str(sweep.by_id()[run.source].out)]
    if "threads" in known:
        argv += ["--threads", str(sweep.threads)]
    return [*argv, "--out", str(run.out)]


def run_state(run: PlannedRun) -> str:
    """``done`` (the sweep saw it end well), ``partial`` (its folder holds something) or ``new``."""
    if (run.out / DONE_MARK).is_file():
        return "done"
    if run.out.is_dir() and any(run.out.iterdir()):
        return "partial"
    return "new"


def resume_argv(sweep: Sweep, run: PlannedRun, commands: CommandTable) -> list[str] | None:
    """The arguments that continue an interrupted ``run``, or None when it has to start again."""
    from bitsmith import runs
    from bitsmith.engine import is_run_dir

    spec = commands[run.command].get("resume")
    if spec is not None and spec.flag:
        return [*run_argv(sweep, run, commands), "--resume"]
    try:
        trained = is_run_dir(run.out) and any(r.get("type") == "epoch" for r in runs.read_metrics(run.out))
    except Exception:  # noqa: BLE001 - an unreadable partial run is restarted, not resumed
        trained = False
    if not trained:
        return None
    return ["train", "--resume", str(run.out), "--threads", str(sweep.threads)]


def run_settings(run: PlannedRun) -> dict[str, Any]:
    """What makes a run what it is (command, options, seed), as recorded in its done marker."""
    return {"command": run.command, "options": {k: v for k, v in run.options}, "seed": run.seed}


def _log_path(sweep: Sweep, run: PlannedRun) -> Path:
    return sweep.out / LOG_DIR / (run.id.replace("/", "__") + ".log")


def _test_acc(run: PlannedRun) -> float | None:
    from bitsmith import runs

    try:
        return runs.final_run_metrics(run.out).get("test_acc")
    except Exception:  # noqa: BLE001 - a figure for the progress line only
        return None


class _Active:
    """A run in progress: its child process, log file and start time."""

    def __init__(self, run: PlannedRun, argv: list[str], log: Path, threads: int) -> None:
        self.run, self.argv, self.start = run, argv, time.monotonic()
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(log, "a", encoding="utf-8")  # noqa: SIM115 - closed in finish()
        self.log.write(f"$ bitsmith {' '.join(argv)}\n")
        self.log.flush()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen([sys.executable, "-m", "bitsmith.cli.main", *argv], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def finish(self) -> float:
        self.log.close()
        return time.monotonic() - self.start

    def stop(self) -> None:
        """Terminate the child (then kill it if it does not end within a few seconds)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


Reporter = Callable[[str, PlannedRun, dict[str, Any]], None]


def _ignore(event: str, run: PlannedRun, info: dict[str, Any]) -> None:
    return None


def run_sweep(sweep: Sweep, commands: CommandTable, *, report: Reporter = _ignore,
              poll_s: float = 0.2) -> SweepResult:
    """Run every run of ``sweep`` that has not ended well yet, at most ``sweep.workers`` at once, each after the
    run it starts from; then compare all finished runs into ``<out>/compare``. ``report(event, run, info)`` hears
    of each ``skip``, ``start``, ``done``, ``fail`` and ``blocked``. Interrupting it stops the runs in progress;
    calling it again continues where it stopped."""
    with _exclusive(sweep.out):
        return _run_locked(sweep, commands, report, poll_s)


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold ``<out>/.sweep.lock`` for the sweep's duration: a second sweep over the same folder is refused instead
    of running the same runs twice at once. The lock goes with the process, however it ends."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"another sweep is running in {out}; wait for it or stop it first") from None
        yield


def _run_locked(sweep: Sweep, commands: CommandTable, report: Reporter, poll_s: float) -> SweepResult:
    result = SweepResult()
    pending: list[PlannedRun] = []
    for run in sweep.runs:
        if run_state(run) == "done":
            marker = _io.read_json(run.out / DONE_MARK, "sweep marker", ConfigError)
            made = marker.get("settings")
            if made is not None and made != run_settings(run):
                raise ConfigError(f"{run.out} finished with other settings than the sweep now asks ({made}); delete "
                                  "it, or give the sweep another --out")
            if made is not None and "grid" not in marker:
                _io.write_json(run.out / DONE_MARK, {**marker, "grid": dict(run.grid)})
    for run in sweep.runs:
        if run_state(run) == "done":
            result.skipped.append(run)
            result.done.append(run)
            report("skip", run, {})
        else:
            pending.append(run)
    finished = {r.id for r in result.done}
    failed: set[str] = set()
    active: list[_Active] = []
    try:
        while pending or active:
            for run in list(pending):
                if run.source in failed:
                    pending.remove(run)
                    failed.add(run.id)
                    result.blocked.append(run)
                    report("blocked", run, {"source": run.source})
                    continue
                if len(active) >= sweep.workers or (run.source is not None and run.source not in finished):
                    continue
                pending.remove(run)
                argv = None
                resumed = run_state(run) == "partial"
                if resumed:
                    argv = resume_argv(sweep, run, commands)
                    if argv is None:
                        shutil.rmtree(run.out)
                        resumed = False
                argv = argv or run_argv(sweep, run, commands)
                active.append(_Active(run, argv, _log_path(sweep, run), sweep.threads))
                report("start", run, {"argv": argv, "resumed": resumed})
            for job in list(active):
                code = job.proc.poll()
                if code is None:
                    continue
                active.remove(job)
                seconds = job.finish()
                if code == 0:
                    _io.write_json(job.run.out / DONE_MARK, {"id": job.run.id, "argv": job.argv,
                                                             "settings": run_settings(job.run),
                                                             "grid": dict(job.run.grid),
                                                             "seconds": round(seconds, 1)})
                    finished.add(job.run.id)
                    result.done.append(job.run)
                    report("done", job.run, {"seconds": seconds, "test_acc": _test_acc(job.run)})
                else:
                    failed.add(job.run.id)
                    result.failed.append(job.run)
                    report("fail", job.run, {"seconds": seconds, "code": code, "log": _log_path(sweep, job.run)})
            if pending or active:
                time.sleep(poll_s)
    except BaseException:
        for job in active:
            job.stop()
        raise
    if result.done:
        from bitsmith.report import compare_runs

        result.compare = compare_runs([r.out for r in result.done], sweep.out / COMPARE_DIR)
    return result


def plan_table(sweep: Sweep, commands: CommandTable) -> list[tuple[str, str, str]]:
    """(id, state, command line) of every run, for a dry run."""
    return [(r.id, run_state(r), "bitsmith " + " ".join(run_argv(sweep, r, commands))) for r in sweep.runs]


def write_plan(sweep: Sweep, commands: CommandTable) -> Path:
    """Record the planned runs and their command lines in ``<out>/sweep_plan.json`` (what a sweep was asked)."""
    rows = [{"id": i, "command": c} for i, _, c in plan_table(sweep, commands)]
    return _io.write_text(sweep.out / "sweep_plan.json", json.dumps(rows, indent=2) + "\n")


__all__ = ["COMPARE_DIR", "LOCK_FILE", "CommandTable", "OptionSpec", "PlannedRun", "Sweep", "SweepResult", "load_sweep",
           "plan_table", "resume_argv", "run_argv", "run_settings", "run_state", "run_sweep", "write_plan"]
