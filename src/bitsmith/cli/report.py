"""``bitsmith report RUN_DIR`` (the run's report.md) and ``bitsmith compare RUN_DIR...`` (one table and a Pareto chart
of accuracy against BOPs over runs of any method)."""

from __future__ import annotations

from pathlib import Path

import typer

from bitsmith.cli._common import check_writable_out, console


def report_cmd(run: Path = typer.Argument(..., help="run directory")) -> None:
    """(Re)write a run's report.md: final metrics, learning curves, the per-layer cost table, method sections."""
    from bitsmith import runs
    from bitsmith.engine import require_run_dir

    require_run_dir(run)
    console.print(f"report: {runs.write_run_report(run)}")


def compare_cmd(
    runs_: list[Path] = typer.Argument(..., metavar="RUN_DIR...", help="finished run directories (any method)"),
    out: Path | None = typer.Option(None, help="folder for compare.md, compare.json and pareto.png"),
) -> None:
    """Compare finished runs: method, model, data, setting, BOPs, size, DoF and accuracy (mean ± std over seeds),
    with the Pareto front of accuracy against BOPs."""
    from bitsmith.engine import require_run_dir
    from bitsmith.report import compare_runs

    for run in runs_:
        require_run_dir(run)
    if out is not None:
        check_writable_out(out)
    result = compare_runs(runs_, out)
    console.print(result["markdown"])
    if out is not None:
        console.print(f"table and chart: {out / 'compare.md'}")


def register(app: typer.Typer) -> None:
    """Add ``bitsmith report`` and ``bitsmith compare``."""
    app.command("report")(report_cmd)
    app.command("compare")(compare_cmd)
