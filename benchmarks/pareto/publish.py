"""Publish a Pareto-study sweep (benchmarks/pareto/*.toml, run with `bitsmith sweep`) as a section of
docs/BENCHMARKS.md: the grouped table, the chart (docs/figures/pareto-<name>.png) and a reading computed from the
numbers (which method is best at each budget, and whether the lead is inside the seed noise).

    .venv/bin/bitsmith sweep benchmarks/pareto/lenet5-digits.toml
    .venv/bin/python -m benchmarks.pareto.publish benchmarks/pareto/lenet5-digits.toml
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, update_section
from bitsmith import sweeps
from bitsmith.cli.sweep import command_table
from bitsmith.report import compare_runs


def _rows(sweep: Any) -> list[dict[str, Any]]:
    """compare.json's groups (the sweep labels each by its group, as method, and setting)."""
    groups = json.loads((sweep.out / sweeps.COMPARE_DIR / "compare.json").read_text(encoding="utf-8"))
    return [{**g, "method": g["command"], "label": g["setting"]} for g in groups]


def _spans(sweep: Any) -> list[tuple[float, float]]:
    """(start, end) epoch seconds of every finished run, from the done markers of the sweep's runs."""
    marks = [r.out / sweeps.DONE_MARK for r in sweep.runs if (r.out / sweeps.DONE_MARK).is_file()]
    return [(m.stat().st_mtime - json.loads(m.read_text())["seconds"], m.stat().st_mtime) for m in marks]


def timing(spans: list[tuple[float, float]], threads: int, pause: float = 600.0) -> str:
    """The header's timing sentence from the runs' (start, end) times: how many ran at once (the most that
    overlapped), the wall-clock span and the summed run time; when the runs have an idle gap longer than ``pause``
    seconds (a stop between sessions, rows re-run later) the span is not a wall time and the sentence says so."""
    if not spans:
        return "no finished runs"
    spans = sorted(spans)
    total = sum(e - s for s, e in spans)
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])  # an end before a start at a tie
    running = at_once = 0
    for _, step in events:
        running += step
        at_once = max(at_once, running)
    reach, gap = spans[0][1], 0.0
    for s, e in spans[1:]:
        gap = max(gap, s - reach)
        reach = max(reach, e)
    first, last = spans[0][0], max(e for _, e in spans)
    head = f"up to {at_once} at once with {threads} thread(s) each"
    if gap <= pause:
        return f"{head}: wall time {(last - first) / 60:.1f} min ({total / 60:.1f} min of runs)"
    return (f"{head}, not in one sitting (runs made between {_utc(first)} and {_utc(last)} UTC, with pauses; "
            f"some rows re-run later): {total / 60:.1f} min of runs")


def _utc(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _noise(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when two rows' mean accuracies differ by less than the larger of their standard deviations."""
    return abs(a["acc_mean"] - b["acc_mean"]) < max(a["acc_std"], b["acc_std"])


def _pct(row: dict[str, Any]) -> str:
    return f"{100 * row['acc_mean']:.2f} ± {100 * row['acc_std']:.2f} %"


def reading(rows: list[dict[str, Any]]) -> list[str]:
    """Sentences computed from the table: the best row under each uniform-LSQ BOP level, the runners-up inside its
    noise, and the fewest-DoF row within one point of FP32."""
    out = []
    levels = sorted((r for r in rows if r["method"] == "lsq"), key=lambda r: -r["bops"])
    for level in levels:
        under = [r for r in rows if r["bops"] <= level["bops"] * 1.0001]
        best = max(under, key=lambda r: r["acc_mean"])
        tied = [r for r in under if r is not best and _noise(best, r)]
        text = (f"At ≤ {level['bops'] / 1e6:.3g} M BOPs (uniform {level['label']}): best is {best['method']} "
                f"{best['label']} with {_pct(best)}")
        if tied:
            text += "; within its noise: " + ", ".join(f"{r['method']} {r['label']} ({_pct(r)})" for r in tied)
        else:
            text += f"; every other row at this cost is more than one std below (n = {best['n']})"
        worst = min(under, key=lambda r: r["acc_mean"])
        if worst is not best and not _noise(best, worst):
            text += f"; lowest: {worst['method']} {worst['label']} ({_pct(worst)})"
        out.append(text + ".")
    fp32 = next((r for r in rows if r["method"] == "fp32"), None)
    if fp32 is not None:
        close = [r for r in rows if r["acc_mean"] >= fp32["acc_mean"] - 0.01]
        fewest = min(close, key=lambda r: r["dof"])
        out.append(f"Fewest degrees of freedom within 1 point of FP32 ({_pct(fp32)}, DoF {fp32['dof']:,.0f}): "
                   f"{fewest['method']} {fewest['label']} with DoF {fewest['dof']:,.0f} ({_pct(fewest)}).")
        smallest = min(close, key=lambda r: r["size_kib"])
        out.append(f"Smallest weights within 1 point of FP32: {smallest['method']} {smallest['label']}, "
                   f"{smallest['size_kib']:.1f} KiB ({_pct(smallest)}).")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the study's sweep TOML (already run)")
    parser.add_argument("--no-write", action="store_true", help="print the section, do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    commands = command_table()
    sweep = sweeps.load_sweep(args.config, commands)
    name = args.config.stem
    rel = args.config.resolve().relative_to(ROOT)
    compare_runs([r.out for r in sweep.runs if sweeps.run_state(r) == "done"], sweep.out / sweeps.COMPARE_DIR)
    rows = _rows(sweep)
    figure = ROOT / "docs" / "figures" / f"pareto-{name}.png"
    if not args.no_write:
        shutil.copyfile(sweep.out / sweeps.COMPARE_DIR / "pareto.png", figure)
    lines = [f"## Pareto study: {name} (accuracy against BOPs, size and DoF, every method)", "",
             f"Measured {datetime.date.today().isoformat()}; {len(sweep.runs)} runs, "
             f"{timing(_spans(sweep), sweep.threads)}. Settings: the header of `{rel}`.", "",
             f"Command: `.venv/bin/bitsmith sweep {rel} && .venv/bin/python -m "
             f"benchmarks.pareto.publish {rel}`", "",
             "| method | setting | seeds | M BOPs | weights KiB | DoF | test accuracy (%) | Pareto (BOPs) |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["bops"], -r["acc_mean"])):
        lines.append(f"| {r['method']} | {r['label']} | {r['n']} | {r['bops'] / 1e6:.3f} | {r['size_kib']:.1f} | "
                     f"{r['dof']:,.0f} | {100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} | "
                     f"{'yes' if r['pareto'] else ''} |")
    lines += ["", f"![accuracy against BOPs, size and DoF](figures/{figure.name})", "",
              "Reading (computed from the table; a difference smaller than the larger of the two standard "
              "deviations is called within noise):", ""]
    lines += [f"- {s}" for s in reading(rows)]
    text = "\n".join(lines)
    if not args.no_write:
        update_section(f"pareto-{name}", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
