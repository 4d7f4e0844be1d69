"""The run report: ``report.md`` with the configuration, final metrics, a per-epoch table and learning curves."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bitsmith import _io
from bitsmith.engine import CONFIG_FILE, METRICS_FILE, final_metrics

REPORT_FILE = "report.md"
CURVES_FILE = "learning_curves.png"


def _read(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    config = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    metrics = run_dir / METRICS_FILE
    lines = metrics.read_text(encoding="utf-8").splitlines() if metrics.exists() else []
    return config, [json.loads(line) for line in lines if line.strip()]


def plot_learning_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Loss and accuracy per epoch (train and every evaluated split) as one PNG; None when there is nothing to plot."""
    epochs = [r for r in history if r.get("type") == "epoch"]
    if not epochs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    xs = [r["epoch"] for r in epochs]
    ax_loss.plot(xs, [r["train_loss"] for r in epochs], label="train")
    ax_acc.plot(xs, [100 * r["train_acc"] for r in epochs], label="train")
    for split in sorted({r["split"] for r in history if r.get("type") == "eval"}):
        evals = [r for r in history if r.get("type") == "eval" and r["split"] == split]
        ax_loss.plot([r["epoch"] for r in evals], [r["loss"] for r in evals], label=split)
        ax_acc.plot([r["epoch"] for r in evals], [100 * r["acc"] for r in evals], label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = _io.savefig(path, fig, dpi=110)
    plt.close(fig)
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_report(run_dir: str | Path, sections: Sequence[tuple[str, str]] = ()) -> Path:
    """Write ``report.md`` (and the learning-curve PNG) for a run; ``sections`` adds (title, Markdown) blocks."""
    run_dir = Path(run_dir)
    config, history = _read(run_dir)
    final = final_metrics(history)
    train = config.get("train", {})
    lines = [f"# bitsmith run: {train.get('model', '?')} on {train.get('dataset', '?')}", ""]
    lines += [f"Command: `{config.get('command', '?')}`", ""]
    if final:
        lines += ["## Final metrics", "", "| metric | value |", "| --- | --- |"]
        for key in sorted(k for k in final if k.endswith(("_acc", "_loss"))):
            value = final[key]
            shown = f"{100 * value:.2f} %" if key.endswith("_acc") else f"{value:.4f}"
            lines.append(f"| {key} | {shown} |")
        if final.get("epoch"):
            lines.append(f"| epochs | {final['epoch']} |")
        if final.get("step_ms_median") is not None:
            lines.append(f"| median step (last epoch) | {final['step_ms_median']:.2f} ms |")
        lines.append("")
    if plot_learning_curves(history, run_dir / CURVES_FILE) is not None:
        lines += ["## Learning curves", "", f"![learning curves]({CURVES_FILE})", ""]
    for title, body in sections:
        lines += [f"## {title}", "", body.rstrip(), ""]
    epochs = [r for r in history if r.get("type") == "epoch"]
    if epochs:
        splits = sorted({r["split"] for r in history if r.get("type") == "eval"})
        lines += ["## Per epoch", "", "| epoch | lr | train loss | train acc | "
                  + " | ".join(f"{s} acc" for s in splits) + " |",
                  "| --- " * (4 + len(splits)) + "|"]
        for r in epochs:
            accs = {e["split"]: e["acc"] for e in history if e.get("type") == "eval" and e["epoch"] == r["epoch"]}
            cells = [str(r["epoch"]), _fmt(r["lr"]), f"{r['train_loss']:.4f}", f"{100 * r['train_acc']:.2f}"]
            cells += [f"{100 * accs[s]:.2f}" if s in accs else "" for s in splits]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Configuration", "", "```json", json.dumps(config, indent=2), "```", ""]
    return _io.write_text(run_dir / REPORT_FILE, "\n".join(lines))


def cost_markdown(report: Any) -> str:
    """A ``bitsmith.cost.CostReport`` as a Markdown table (one row per layer, then the totals)."""
    rows = ["| layer | kind | out (kept) | w bits | a bits | MACs | BOPs | params | weights KiB |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in report.layers:
        rows.append(f"| {c.name} | {c.kind} | {c.out_channels} ({c.out_channels_kept}) | {c.weight_bits:g} | "
                    f"{c.act_bits} | {c.macs:,} | {c.bops:,} | {c.params:,} | {c.weight_memory_bits / 8192:.2f} |")
    rows.append(f"| **total** | | | | | {report.total_macs:,} | {report.total_bops:,} | {report.total_params:,} | "
                f"{report.size_kib:.2f} |")
    return "\n".join(rows) + f"\n\n{report.summary()}"
