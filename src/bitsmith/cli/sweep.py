"""``bitsmith sweep CONFIG.toml``: a grid of runs (command x options x seed) in parallel worker processes,
resumable, ending with ``bitsmith compare`` over everything that finished."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import click
import typer

from bitsmith.cli._common import check_writable_out, console


def command_table() -> dict[str, dict[str, Any]]:
    """Every ``bitsmith`` command that writes a run directory (has ``--out``), with its options."""
    from typer.main import get_command

    from bitsmith.cli.main import app
    from bitsmith.sweeps import OptionSpec

    table: dict[str, dict[str, Any]] = {}

    def visit(cmd: click.Command, prefix: str) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                visit(sub, f"{prefix} {name}".strip())
            return
        options: dict[str, OptionSpec] = {}
        for param in cmd.params:
            if not isinstance(param, click.Option):
                continue
            long = [o for o in param.opts if o.startswith("--")]
            if not long:
                continue
            negative = next((o for o in param.secondary_opts if o.startswith("--")), None)
            options[long[0][2:]] = OptionSpec(flag=bool(param.is_flag), negative=negative)
        if "out" in options and prefix not in ("sweep", "demo"):
            table[prefix] = options

    visit(get_command(app), "")
    return table


def sweep_cmd(
    config: Path = typer.Argument(..., metavar="CONFIG.toml", help="the sweep file (see `bitsmith sweep --help`)"),
    out: Path | None = typer.Option(None, help="folder of the sweep's runs (default: the file's [sweep] out)"),
    workers: int | None = typer.Option(None, help="runs at once (default: the file's, or CPU cores / threads)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the runs, their state and command lines; run none"),
) -> None:
    """Run a grid of runs from a TOML file: [sweep] out, seeds, workers, threads; [defaults] options for every run
    that does not start from another run;
    one [runs.NAME] table per group with a command, its options (a list is a grid axis; grid = [{...}, ...] lists
    combinations) and optionally from = "GROUP" to start from that group's run of the same seed. Finished runs are
    skipped and an interrupted one resumes, so the same command continues a stopped sweep. Ends with `bitsmith
    compare` over all finished runs (<out>/compare)."""
    from bitsmith import sweeps

    commands = command_table()
    sweep = sweeps.load_sweep(config, commands, out=out, workers=workers)
    if dry_run:
        for run_id, state, line in sweeps.plan_table(sweep, commands):
            console.print(f"{state:8s} {run_id}: {line}")
        return
    check_writable_out(sweep.out)
    result = run_with_progress(sweep, commands)
    if result.failed or result.blocked:
        console.print(f"{len(result.failed)} run(s) failed and {len(result.blocked)} could not start; fix the "
                      "cause and run the same command again to finish them")
        raise typer.Exit(1)


def run_with_progress(sweep: Any, commands: dict[str, dict[str, Any]]) -> Any:
    """Run a loaded sweep, printing a line per run with the whole sweep's progress and time left, then the
    comparison table; returns the ``SweepResult``."""
    from bitsmith import sweeps

    sweeps.write_plan(sweep, commands)
    total = len(sweep.runs)
    counts = {"ended": 0}
    durations: list[float] = []
    started = time.monotonic()

    def eta() -> str:
        if not durations:
            return ""
        left = (total - counts["ended"]) * (sum(durations) / len(durations)) / sweep.workers
        return f"; {_clock(time.monotonic() - started)} elapsed, about {_clock(left)} left"

    console.print(f"sweep: {total} runs in {sweep.out}, {sweep.workers} at once, {sweep.threads} thread(s) each")

    def report(event: str, run: sweeps.PlannedRun, info: dict[str, Any]) -> None:
        if event == "start":
            console.print(f"  start   {run.id}" + (" (resuming)" if info["resumed"] else ""))
            return
        counts["ended"] += 1
        tag = f"[{counts['ended']}/{total}]"
        if event == "skip":
            console.print(f"{tag} done earlier {run.id}")
        elif event == "done":
            durations.append(info["seconds"])
            acc = info.get("test_acc")
            shown = f"test {100 * acc:.2f} %, " if acc is not None else ""
            console.print(f"{tag} done    {run.id} ({shown}{info['seconds']:.0f} s{eta()})")
        elif event == "fail":
            console.print(f"{tag} FAILED  {run.id} (exit {info['code']}; log {info['log']})")
        else:
            console.print(f"{tag} not run {run.id} (its source {info['source']} failed)")

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = sweeps.run_sweep(sweep, commands, report=report)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result.compare is not None:
        console.print("\n" + result.compare["markdown"])
        console.print(f"\ncomparison: {sweep.out / sweeps.COMPARE_DIR / 'compare.md'}")
    return result


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM stops a sweep like Ctrl-C: the runs in progress are stopped too, and resume on the next call."""
    raise KeyboardInterrupt


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def register(app: typer.Typer) -> None:
    """Add ``bitsmith sweep``."""
    app.command("sweep")(sweep_cmd)
