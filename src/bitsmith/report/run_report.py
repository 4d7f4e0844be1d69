"""The run report: ``report.md`` and ``report.html`` with the configuration, final metrics, learning curves, a
per-epoch table, and the figures method sections bring (bit widths per layer and filter, RPG parameters, GHN
predictions)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bitsmith import _io
from bitsmith.engine import CONFIG_FILE, METRICS_FILE, final_metrics
from bitsmith.report.html import markdown_to_html

REPORT_FILE = "report.md"
HTML_FILE = "report.html"
CURVES_FILE = "learning_curves.png"
BITS_FILE = "bit_widths.png"
PARAMS_FILE = "layer_params.png"
PREDICTED_FILE = "predicted_vs_trained.png"


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
    plt = _pyplot()
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
    markdown = "\n".join(lines)
    _io.write_text(run_dir / HTML_FILE, markdown_to_html(markdown, title=lines[0].lstrip("# ")))
    return _io.write_text(run_dir / REPORT_FILE, markdown)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bit_widths(cost: Any, bits: Any, path: str | Path) -> Path:
    """Per layer: the share of its filters at each weight width (pruned filters grey) and its input-activation
    width; ``cost`` is the run's CostReport, ``bits`` its BitsAssignment."""
    plt = _pyplot()
    layers = [c for c in cost.layers if c.name in bits.layers]
    widths = sorted({w for c in layers for w in bits.layers[c.name].channel_bits(c.out_channels)})
    colours = plt.get_cmap("viridis")
    fig, (ax_w, ax_a) = plt.subplots(2, 1, figsize=(max(5.0, 0.55 * len(layers) + 2), 5.2), sharex=True)
    xs = range(len(layers))
    bottom = [0.0] * len(layers)
    for k, width in enumerate(widths):
        share = []
        for c in layers:
            entry = bits.layers[c.name]
            pairs = zip(entry.channel_bits(c.out_channels), entry.channel_keep(c.out_channels), strict=True)
            share.append(sum(1 for w, keep in pairs if w == width and keep) / c.out_channels)
        ax_w.bar(xs, share, bottom=bottom, color=colours(k / max(1, len(widths) - 1)), label=f"{width} bits")
        bottom = [b + s for b, s in zip(bottom, share, strict=True)]
    pruned = [1.0 - b for b in bottom]
    if any(p > 1e-9 for p in pruned):
        ax_w.bar(xs, pruned, bottom=bottom, color="lightgrey", label="pruned")
    ax_w.set_ylabel("share of filters")
    ax_w.set_title("Weight bit width per filter", fontsize=9)
    ax_w.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax_a.bar(xs, [bits.layers[c.name].act_bits for c in layers], color="tab:red", alpha=0.7)
    ax_a.set_ylabel("input activation bits")
    ax_a.set_xticks(list(xs), [c.name for c in layers], rotation=45, ha="right", fontsize=7)
    for ax in (ax_w, ax_a):
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    out = _io.savefig(path, fig, dpi=110)
    plt.close(fig)
    return out


def plot_layer_params(cost: Any, generated: set[str], ring: int, path: str | Path) -> Path:
    """Parameters of each weight layer (log scale), those generated from a shared ring marked, with the ring's
    size as a line: how many weights the ring's few free scalars stand for."""
    plt = _pyplot()
    layers = [c for c in cost.layers if c.params]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(layers) + 2), 3.6))
    ax.bar(range(len(layers)), [c.params for c in layers],
           color=["tab:blue" if c.name in generated else "tab:grey" for c in layers])
    from matplotlib.patches import Patch

    line = ax.axhline(ring, color="tab:red", ls="--")
    ax.legend([line, Patch(color="tab:blue"), Patch(color="tab:grey")],
              [f"ring: {ring:,} free scalars", "generated from the ring", "own parameters"], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("parameters")
    ax.set_xticks(range(len(layers)), [c.name for c in layers], rotation=45, ha="right", fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    out = _io.savefig(path, fig, dpi=110)
    plt.close(fig)
    return out


def plot_predicted(predicted: float, history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Test accuracy of predicted parameters (epoch 0) and after each epoch of fine-tuning them."""
    plt = _pyplot()
    tests = [r for r in history if r.get("type") == "eval" and r.get("split") == "test" and r.get("epoch", 0) > 0]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot([0] + [r["epoch"] for r in tests], [100 * predicted] + [100 * r["acc"] for r in tests], "o-")
    ax.axhline(100 * predicted, color="tab:grey", ls=":", label=f"predicted: {100 * predicted:.2f} %")
    ax.set(xlabel="fine-tuning epoch (0 = as predicted)", ylabel="test accuracy (%)",
           title="Predicted parameters, then trained")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = _io.savefig(path, fig, dpi=110)
    plt.close(fig)
    return out


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
