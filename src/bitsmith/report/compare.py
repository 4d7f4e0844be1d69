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
#: The marker a sweep leaves in each run it finished (its id names the run's group and setting).
SWEEP_MARK = "sweep_done.json"
#: Configuration fields that never separate groups: seeds (averaged over; also a method's own, such as the RPG
#: ring's, ``<transform>.seed``) and machine or timing details.
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
    label: tuple[str, str] | None = None


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
    """Scalar fields of a run configuration (train fields, each transform's config, top-level settings), less those
    the run learned rather than was given (its ``learned`` list of field prefixes, e.g. a searched quantization)."""
    learned = tuple(config.get("learned", []))
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key == "learned":
            continue
        if key == "train" and isinstance(value, dict):
            flat.update({f"train.{k}": v for k, v in value.items()})
        elif key == "model_transforms" and isinstance(value, list):
            for step in value:
                flat.update({f"{step.get('name')}.{k}": v for k, v in (step.get("config") or {}).items()})
        else:
            flat[key] = value
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for k, v in flat.items()
            if k not in _IGNORED and not k.endswith(_IGNORED_SUFFIXES) and not k.endswith(".seed")
            and not any(k == p or k.startswith(f"{p}.") for p in learned)}


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
    return RunPoint(label=_sweep_label(Path(run_dir)),
                    run=str(run_dir), command=str(config.get("command", "train")), model=str(train.get("model")),
                    dataset=str(train.get("dataset")), seed=int(train.get("seed", 0)), acc=float(final["test_acc"]),
                    bops=int(cost.total_bops), size_kib=float(cost.size_kib), dof=int(cost.dof),
                    fields=_flatten(config))


#: Sweep options with their own columns in the table (never part of a setting).
_OWN_COLUMNS = frozenset({"model", "dataset"})
#: Sweep options that a group's setting leaves out: its own columns, and epochs (recipe, unless a grid varies them).
_UNDESCRIBED = _OWN_COLUMNS | {"epochs"}


def _describe(options: Any, omit: frozenset[str] = _UNDESCRIBED) -> str:
    """``{"wbits": 2, "abits": 2, "epochs": 10}`` → ``"wbits=2, abits=2"``: sweep options as a group's setting (a flag
    reads as its name, or ``no-`` and its name when off); keys in ``omit`` are left out."""
    if not isinstance(options, dict):
        return "-"
    words = [(k if v else f"no-{k}") if isinstance(v, bool) else f"{k}={v}"
             for k, v in options.items() if k not in omit]
    return ", ".join(words) or "-"


def _sweep_label(run_dir: Path) -> tuple[str, str] | None:
    """(group, setting) of a run a sweep made, from its done marker: the group from the id
    (``group[/setting]/seedN``), the setting from the group's own options (the marker's ``settings``), the grid
    point the marker records first and kept whole (epochs too; model and data have their own columns). A marker
    older than the grid record keeps the id's folder name as its setting; one without settings reads "-"."""
    path = run_dir / SWEEP_MARK
    if not path.is_file():
        return None
    marker = _io.read_json(path, "sweep marker", CheckpointError)
    parts = str(marker.get("id", "")).split("/")
    if parts and parts[-1].startswith("seed") and parts[-1][4:].isdigit():
        parts = parts[:-1]
    if not parts or not parts[0]:
        return None
    settings = marker.get("settings")
    options = settings.get("options") if isinstance(settings, dict) else None
    grid = marker.get("grid")
    if isinstance(grid, dict) and isinstance(options, dict):
        point = _describe(grid, _OWN_COLUMNS)
        rest = _describe({k: v for k, v in options.items() if k not in grid})
        return parts[0], ", ".join(w for w in (point, rest) if w != "-") or "-"
    return parts[0], "/".join(parts[1:]) or _describe(options)


def _short(key: str) -> str:
    return key.split(".", 1)[1] if key.startswith("train.") else key


def group_points(points: Sequence[RunPoint]) -> list[Group]:
    """Group runs that differ only in the seed; label each group by the fields that vary within its command (runs
    a sweep made: by their sweep group and setting)."""
    varying: dict[str, list[str]] = {}
    for command in {p.command for p in points}:
        mine = [p for p in points if p.command == command]
        keys = sorted({k for p in mine for k in p.fields})
        varying[command] = [k for k in keys if len({json.dumps(p.fields.get(k)) for p in mine}) > 1
                            and k not in ("train.model", "train.dataset")]
    groups: dict[tuple, Group] = {}
    for p in points:
        if p.label is not None:
            command, setting = p.label
        else:
            command = p.command
            setting = ", ".join(f"{_short(k)}={p.fields.get(k)}" for k in varying[p.command]) or "-"
        key = (command, p.model, p.dataset, setting)
        groups.setdefault(key, Group(command, p.model, p.dataset, setting, [])).points.append(p)
    return sorted(groups.values(), key=lambda g: (g.dataset, g.model, g.bops, -g.acc[0]))


_AXES = {"bops": "BOPs per sample", "size_kib": "weights KiB", "dof": "degrees of freedom"}


def _cost(group: Group, axis: str) -> float:
    """The group's mean cost on ``axis`` (a RunPoint field: bops, size_kib or dof)."""
    return statistics.fmean(getattr(p, axis) for p in group.points)


def pareto_front(groups: Sequence[Group], axis: str = "bops") -> list[bool]:
    """Per group: True when no other group of the same model and data is at most as costly (on ``axis``: bops,
    size_kib or dof) and at least as accurate (mean), with one of the two strictly better."""
    if axis not in _AXES:
        raise ValueError(f"unknown cost axis {axis!r}; known: {', '.join(_AXES)}")
    flags = []
    for g in groups:
        cost = _cost(g, axis)
        dominated = any(o is not g and o.model == g.model and o.dataset == g.dataset and _cost(o, axis) <= cost
                        and o.acc[0] >= g.acc[0] and (_cost(o, axis) < cost or o.acc[0] > g.acc[0]) for o in groups)
        flags.append(not dominated)
    return flags


#: The accuracy axis spans at most this many points below the best row; rows further down sit on its edge as ▼.
_Y_SPAN = 15.0


def _compact(value: float) -> str:
    """A tick label such as 250k, 1.5M or 5G."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _plot(groups: Sequence[Group], path: Path) -> Path:
    """Accuracy (mean ± std over seeds) against BOPs, weight size and DoF (log x where the costs span a decade),
    one panel each, every panel with its own Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    best = max(100 * g.acc[0] for g in groups)
    floor = max(min(100 * g.acc[0] - 100 * g.acc[1] for g in groups), best - _Y_SPAN) - 1.0
    below = [g for g in groups if 100 * g.acc[0] < floor]
    fig, axes = plt.subplots(1, len(_AXES), figsize=(15, 4.4), sharey=True)
    for ax, (axis, label) in zip(axes, _AXES.items(), strict=True):
        for command in sorted({g.command for g in groups}):
            mine = [g for g in groups if g.command == command]
            shown = ax.errorbar([_cost(g, axis) for g in mine], [max(100 * g.acc[0], floor) for g in mine],
                                yerr=[100 * g.acc[1] for g in mine], fmt="o", capsize=3, label=command)
            low = [g for g in mine if g in below]
            if low:
                ax.scatter([_cost(g, axis) for g in low], [floor] * len(low), marker="v", s=60,
                           color=shown[0].get_color(), zorder=3)
        front = pareto_front(groups, axis)
        on_front = sorted((_cost(g, axis), 100 * g.acc[0]) for g, f in zip(groups, front, strict=True) if f)
        if on_front:
            ax.plot(*zip(*on_front, strict=True), "k--", lw=1, alpha=0.6, label="Pareto front")
        costs = [_cost(g, axis) for g in groups if _cost(g, axis) > 0]
        wide = bool(costs) and max(costs) / min(costs) >= 10
        if wide:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        else:
            ax.xaxis.set_major_locator(ticker.MaxNLocator(5))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _compact(v)))
        ax.set(xlabel=f"{label}{' (log)' if wide else ''}", title=f"accuracy vs {label}")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylim(bottom=floor - 0.5)
    axes[0].set_ylabel("test accuracy (%, mean ± std over seeds)")
    if below:
        fig.text(0.01, 0.01, "▼ below the axis: " + "; ".join(f"{g.command} {g.setting} {100 * g.acc[0]:.1f} %"
                                                               for g in below), fontsize=7)
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="center right")
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    out = _io.savefig(path, fig, dpi=100)
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
        chart = _plot(groups, out / PARETO_PNG)
        _io.write_text(out / COMPARE_MD, "# bitsmith compare\n\n" + markdown
                       + "\n\nAccuracy: mean ± sample std over the runs of a row (seeds). Pareto: no other row of "
                         "the same model and data is as cheap in BOPs and as accurate. The chart also shows accuracy "
                         "against weight size and degrees of freedom, each panel with its own front.\n\n"
                       + f"![accuracy vs BOPs, size and DoF]({chart.name})\n")
    return result


__all__ = ["Group", "RunPoint", "compare_runs", "group_points", "pareto_front", "run_point"]
