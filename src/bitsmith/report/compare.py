"""Cross-run comparison: one table (method, model, data, setting, BOPs, size, DoF, accuracy mean ± std over seeds)
and a Pareto chart of accuracy against BOPs, from run directories of any method.

Runs are grouped without knowing the methods: two runs belong together when their command, model and dataset are
the same and their configurations differ only in the seed (and in machine details such as threads or timings).
A group's "setting" names the configuration fields that vary between groups of the same command, so a new method
shows up with its own knobs (bit widths, a BOP budget, a DoF ratio, ...) without a special case here.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bitsmith import _io
from bitsmith.errors import CheckpointError

COMPARE_MD, COMPARE_JSON, PARETO_PNG = "compare.md", "compare.json", "pareto.png"
#: Configuration fields that never separate groups: the seed (averaged over) and machine or timing details.
_IGNORED = frozenset({"train.seed", "train.num_threads", "train.data_root", "from", "ghn"})
_IGNORED_SUFFIXES = ("_ms", "_s", "_time", "test_acc")


@dataclass
class RunPoint:
    """One finished run: what it is, its seed, its cost per sample and its test accuracy."""

    run: str
    command: str
    model: str
    dataset: str
    seed: int
    acc: float
    bops: int
    size_kib: float
    dof: int
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Group:
    """Runs that differ only in their seed, summarised."""

    command: str
    model: str
    dataset: str
    setting: str
    points: list[RunPoint]

    @property
    def acc(self) -> tuple[float, float]:
        """Mean and sample std (0 for one run) of the test accuracy."""
        values = [p.acc for p in self.points]
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    @property
    def bops(self) -> float:
        """Mean BOPs per sample (equal across seeds for fixed widths; learned widths may differ)."""
        return statistics.fmean(p.bops for p in self.points)

    def to_dict(self) -> dict[str, Any]:
        """The group as plain JSON data."""
        mean, std = self.acc
        return {"command": self.command, "model": self.model, "dataset": self.dataset, "setting": self.setting,
                "n": len(self.points), "acc_mean": mean, "acc_std": std, "bops": self.bops,
                "size_kib": statistics.fmean(p.size_kib for p in self.points),
                "dof": statistics.fmean(p.dof for p in self.points), "runs": [p.run for p in self.points]}


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    """Scalar fields of a run configuration (train fields, each transform's config, top-level settings)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key == "train" and isinstance(value, dict):
            flat.update({f"train.{k}": v for k, v in value.items()})
        elif key == "model_transforms" and isinstance(value, list):
            for step in value:
                flat.update({f"{step.get('name')}.{k}": v for k, v in (step.get("config") or {}).items()})
        else:
            flat[key] = value
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for k, v in flat.items()
            if k not in _IGNORED and not k.endswith(_IGNORED_SUFFIXES)}


def run_point(run_dir: str | Path) -> RunPoint:
    """The comparison point of a finished run directory (its final test accuracy and exact cost)."""
    from bitsmith import runs

    config = runs.read_config(run_dir)
    final = runs.final_run_metrics(run_dir)
    if "test_acc" not in final:
        raise CheckpointError(f"{run_dir}: the run has no test accuracy yet (unfinished, or trained without a test "
                              "evaluation)")
    cost = runs.run_cost(run_dir)
    train = config.get("train", {})
    return RunPoint(run=str(run_dir), command=str(config.get("command", "train")), model=str(train.get("model")),
                    dataset=str(train.get("dataset")), seed=int(train.get("seed", 0)), acc=float(final["test_acc"]),
                    bops=int(cost.total_bops), size_kib=float(cost.size_kib), dof=int(cost.dof),
                    fields=_flatten(config))


def _short(key: str) -> str:
    return key.split(".", 1)[1] if key.startswith("train.") else key


def group_points(points: Sequence[RunPoint]) -> list[Group]:
    """Group runs that differ only in the seed; label each group by the fields that vary within its command."""
    varying: dict[str, list[str]] = {}
    for command in {p.command for p in points}:
        mine = [p for p in points if p.command == command]
        keys = sorted({k for p in mine for k in p.fields})
        varying[command] = [k for k in keys if len({json.dumps(p.fields.get(k)) for p in mine}) > 1
                            and k not in ("train.model", "train.dataset")]
    groups: dict[tuple, Group] = {}
    for p in points:
        keys = varying[p.command]
        setting = ", ".join(f"{_short(k)}={p.fields.get(k)}" for k in keys) or "-"
        key = (p.command, p.model, p.dataset, setting)
        groups.setdefault(key, Group(p.command, p.model, p.dataset, setting, [])).points.append(p)
    return sorted(groups.values(), key=lambda g: (g.dataset, g.model, g.bops, -g.acc[0]))


def pareto_front(groups: Sequence[Group]) -> list[bool]:
    """Per group: True when no other group of the same model and data is at most as costly (BOPs) and at least as
    accurate (mean), with one of the two strictly better."""
    flags = []
    for g in groups:
        dominated = any(o is not g and o.model == g.model and o.dataset == g.dataset and o.bops <= g.bops
                        and o.acc[0] >= g.acc[0] and (o.bops < g.bops or o.acc[0] > g.acc[0]) for o in groups)
        flags.append(not dominated)
    return flags


def _plot(groups: Sequence[Group], front: Sequence[bool], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for command in sorted({g.command for g in groups}):
        mine = [g for g in groups if g.command == command]
        ax.errorbar([g.bops for g in mine], [100 * g.acc[0] for g in mine], yerr=[100 * g.acc[1] for g in mine],
                    fmt="o", capsize=3, label=command)
    on_front = sorted((g.bops, 100 * g.acc[0]) for g, f in zip(groups, front, strict=True) if f)
    if on_front:
        ax.plot(*zip(*on_front, strict=True), "k--", lw=1, alpha=0.6, label="Pareto front")
    ax.set_xscale("log")
    ax.set(xlabel="BOPs per sample (log)", ylabel="test accuracy (%)", title="accuracy vs BOPs (mean ± std)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = _io.savefig(path, fig, dpi=110)
    plt.close(fig)
    return out


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> dict[str, Any]:
    """Compare finished runs: the grouped table, its Pareto front, and (with ``out``) compare.md, compare.json and
    pareto.png written there. Returns {"groups": [...], "markdown": str}."""
    if not run_dirs:
        raise CheckpointError("compare needs at least one run directory")
    groups = group_points([run_point(r) for r in run_dirs])
    front = pareto_front(groups)
    lines = ["| method | model | data | setting | n | BOPs | size KiB | DoF | accuracy (%) | Pareto |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for g, on in zip(groups, front, strict=True):
        d = g.to_dict()
        gbops = f"{d['bops'] / 1e9:.4g} G" if d["bops"] >= 1e6 else f"{d['bops']:.4g}"
        lines.append(f"| {g.command} | {g.model} | {g.dataset} | {g.setting} | {d['n']} | {gbops} | "
                     f"{d['size_kib']:.1f} | {math.floor(d['dof']):,} | {100 * d['acc_mean']:.2f} ± "
                     f"{100 * d['acc_std']:.2f} | {'yes' if on else ''} |")
    markdown = "\n".join(lines)
    result = {"groups": [{**g.to_dict(), "pareto": on} for g, on in zip(groups, front, strict=True)],
              "markdown": markdown}
    if out is not None:
        out = Path(out)
        _io.write_json(out / COMPARE_JSON, result["groups"])
        chart = _plot(groups, front, out / PARETO_PNG)
        _io.write_text(out / COMPARE_MD, "# bitsmith compare\n\n" + markdown
                       + "\n\nAccuracy: mean ± sample std over the runs of a row (seeds). Pareto: no other row of "
                         "the same model and data is as cheap in BOPs and as accurate.\n\n"
                       + f"![accuracy vs BOPs]({chart.name})\n")
    return result


__all__ = ["Group", "RunPoint", "compare_runs", "group_points", "pareto_front", "run_point"]
