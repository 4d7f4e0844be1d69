"""GHN-Q (issue 11): quantization-aware GHN training and the quantized-prediction table.

Three hypernetworks continue the float benchmark GHN (``benchmarks.ghn --part train``) with the same recipe for
the same number of epochs: float targets (the control: as much training, no quantization), every target at W8A8
(the fixed-width GHN), and widths drawn per architecture from {FP, 8, 4, 2} (the bit-conditioned GHN). The float
GHN itself is the paper's baseline (trained float, quantized only for testing).

    bash benchmarks/setup.sh
    .venv-bench/bin/python -m benchmarks.ghnq --part train --variant mixed --threads 1
    .venv-bench/bin/python -m benchmarks.ghnq --part train --variant w8a8 --threads 1
    .venv-bench/bin/python -m benchmarks.ghnq --part train --variant none --threads 1
    .venv-bench/bin/python -m benchmarks.ghnq --part eval --n 30 --worker 0 --workers 2   # and --worker 1
    .venv-bench/bin/python -m benchmarks.ghnq --part report --plot

Evaluation protocol (``bitsmith.methods.ghn.predict_quantized``): parameters predicted at the target widths (first
and last layer at 8 bits), ranges calibrated on 8 training batches (MSE observer), BN statistics recalibrated on 10
training batches under the quantized forward, eval mode on the test split.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from benchmarks._common import ROOT, environment, mean_std, publish
from bitsmith import _io
from bitsmith.methods import ghn as ghn_lib

OUT = ROOT / "benchmarks" / "out" / "ghnq"
FLOAT_RUN = ROOT / "benchmarks" / "out" / "ghn"
VARIANTS = {"none": "none", "w8a8": "w8a8", "mixed": "mixed"}


def float_ghn(dataset: str) -> Path:
    """The float benchmark GHN the variants start from."""
    path = FLOAT_RUN / dataset / "train-gatedgnn" / ghn_lib.GHN_FILE
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run `python -m benchmarks.ghn --part train --dataset {dataset}` first")
    return path


def train(dataset: str, variant: str, epochs: int, lr: float, meta_batch: int, threads: int, ship: bool) -> Path:
    """Train (or resume) one GHN-Q variant from the float GHN; with ``ship``, copy it into the package."""
    out = OUT / dataset / f"train-{variant}"
    cfg = ghn_lib.recipe(dataset, epochs=epochs, lr=lr, num_threads=threads)
    train_cfg = ghn_lib.GHNTrainConfig(meta_batch=meta_batch, quant=VARIANTS[variant],
                                       init_from=str(float_ghn(dataset)))
    resume = (out / "checkpoint.safetensors").exists()
    t0 = time.perf_counter()
    _, metrics = ghn_lib.train_ghn(cfg, None, train_cfg, out, resume=resume)
    wall = time.perf_counter() - t0
    record = out / "wall.json"
    if resume and record.is_file():  # a resumed (or already finished) run adds its time to the earlier part's
        wall += float(_io.read_json(record, "wall time record", SystemExit).get("wall_s", 0.0))
    _io.write_json(record, {"wall_s": wall, "resumed": resume, "threads": threads, **metrics})
    print(f"{dataset} {variant}: {wall / 60:.1f} min, {metrics}")
    if ship:
        target = ghn_lib.io.PRETRAINED_DIR / f"{dataset}-q.safetensors"
        shutil.copyfile(out / ghn_lib.GHN_FILE, target)
        print(f"shipped as {target} ({target.stat().st_size / 2**20:.2f} MiB)")
    return out


WIDTHS = ("FP", "W8A8", "W4A4", "W2A2")
QAT_WIDTHS = ("W4A4", "W2A2")
#: name -> (label in the tables, where the GHN file is)
SOURCES = {
    "float": ("(a) float-trained GHN (paper's baseline)", lambda d: float_ghn(d)),
    "float+": ("(a') float, trained as long again (control)", lambda d: OUT / d / "train-none" / ghn_lib.GHN_FILE),
    "w8a8": ("(b) trained at fixed W8A8", lambda d: OUT / d / "train-w8a8" / ghn_lib.GHN_FILE),
    "mixed": ("(c) bit-conditioned, widths {FP, 8, 4, 2}", lambda d: OUT / d / "train-mixed" / ghn_lib.GHN_FILE),
}
SPLITS = (("test", "n"), ("wide", "n_ood"), ("deep", "n_ood"), ("predefined", None))


def _setup(dataset: str) -> tuple:
    from bitsmith.engine import TrainConfig, load_split

    base = TrainConfig(dataset=dataset, batch_size=64 if dataset == "digits" else 128)
    return base, load_split(base, "train"), load_split(base, "test")


def _plan(dataset: str, n: int, n_ood: int) -> list[tuple[str, int, str, object]]:
    """(split, index, architecture name, builder) of every evaluated architecture."""
    shape = ghn_lib.load_ghn(float_ghn(dataset)).config
    sizes = {"n": n, "n_ood": n_ood, None: 4}
    return [(split, i, name, build) for split, size in SPLITS
            for i, (name, build) in enumerate(ghn_lib.evaluate.architectures(split, sizes[size], shape))]


def evaluate(dataset: str, n: int, n_ood: int, qat_n: int, qat_steps: int, worker: int, workers: int) -> None:
    """Rows of every architecture (this worker's share), cached under out/<dataset>/eval/rows."""
    base, train_ds, test_ds = _setup(dataset)
    ghns = {}
    for name, (_, where) in SOURCES.items():
        path = where(dataset)
        if not Path(path).is_file():
            raise SystemExit(f"{path} is missing: run `python -m benchmarks.ghnq --part train --variant ...` first")
        ghns[name] = ghn_lib.load_ghn(path)
    settings = {"dataset": dataset, "widths": list(WIDTHS), "sgd_steps": 100, "calib_batches": 8, "bn_batches": 10,
                "first_last_bits": 8, "sources": {k: ghn_lib.io.digest(g) for k, g in ghns.items()}}
    for k, (split, i, name, build) in enumerate(_plan(dataset, n, n_ood)):
        if k % workers != worker:
            continue
        steps = qat_steps if split == "test" and i < qat_n else 0
        t0 = time.perf_counter()
        row = ghn_lib.evaluate.cached_row(
            OUT / dataset / "eval" / "rows" / f"{name}.json", {**settings, "qat_steps": steps},
            lambda build=build, steps=steps: ghn_lib.evaluate.quantized_row(
                build, ghns, WIDTHS, base, train_ds, test_ds, sgd_steps=100, qat_steps=steps,
                qat_widths=QAT_WIDTHS))
        print(name, f"{time.perf_counter() - t0:.0f} s", {k: round(v, 3) for k, v in row.items() if ":" in k})


def _stats(values: list[float]) -> str:
    m, s = mean_std(values)
    return f"{100 * m:.1f} ± {100 * s:.1f} [{100 * min(values):.0f}, {100 * max(values):.0f}]"


def report(dataset: str, n: int, n_ood: int, qat_steps: int, plot: bool) -> None:
    """Tables (and the plot) of the cached rows: accuracy per source and width, ratios to each GHN's own FP
    prediction, the issue's targets, and QAT fine-tuning."""
    rows: dict[str, list[dict]] = {}
    for split, _, name, _ in _plan(dataset, n, n_ood):
        path = OUT / dataset / "eval" / "rows" / f"{name}.json"
        if path.is_file():
            rows.setdefault(split, []).append({"arch": name, **_io.read_json(path, "row", SystemExit)})
    test = rows.get("test", [])
    if not test:
        raise SystemExit("no evaluated rows: run --part eval first")
    sources = [*SOURCES, "random", "sgd_100"]
    names = {**{k: v[0] for k, v in SOURCES.items()}, "random": "(d) random init",
             "sgd_100": "(e) SGD 100 steps from random init"}
    lines = [f"## GHN-Q: quantized prediction on held-out architectures ({dataset})", "",
             f"Test split, {len(test)} unseen architectures: accuracy (%) mean ± std [min, max] at each width. Each "
             "GHN predicts; the model is quantized by the core (LSQ quantizers, per-channel weights, first and last "
             "layer at 8 bits), its ranges calibrated on 8 training batches (MSE observer) and its BN statistics "
             "recalibrated on 10 training batches under the quantized forward. (d) and (e) are quantized and "
             "calibrated the same way (post-training quantization).", "",
             "| source | " + " | ".join(WIDTHS) + " |", "|---" * (len(WIDTHS) + 1) + "|"]
    for src in sources:
        lines.append(f"| {names[src]} | " + " | ".join(_stats([r[f"{src}:{w}"] for r in test]) for w in WIDTHS)
                     + " |")
    lines += ["", "Ratio to the same GHN's own FP prediction, per architecture: mean (worst) and how many "
                  "architectures fall below 0.9x; targets: W8A8 >= 0.99x, W4A4 >= 0.97x mean and >= 0.9x worst, "
                  "W2A2 >= 0.8x mean (bit-conditioned GHN).", "",
              "| GHN | W8A8 | W4A4 | W2A2 | targets met |", "|---|---|---|---|---|"]
    for src in SOURCES:
        ratios = {w: [r[f"{src}:{w}"] / max(r[f"{src}:FP"], 1e-12) for r in test] for w in WIDTHS[1:]}
        cells = [f"{mean_std(v)[0]:.3f} ({min(v):.3f}), {sum(x < 0.9 for x in v)} < 0.9x" for v in ratios.values()]
        met = [mean_std(ratios["W8A8"])[0] >= 0.99, mean_std(ratios["W4A4"])[0] >= 0.97, min(ratios["W4A4"]) >= 0.9,
               mean_std(ratios["W2A2"])[0] >= 0.8]
        lines.append(f"| {names[src]} | " + " | ".join(cells) + f" | {sum(met)}/4 |")
    lines += ["", "Paired difference, bit-conditioned minus float-trained GHN (percentage points, mean ± std over "
                  "architectures; wins = architectures where the bit-conditioned GHN is more accurate):", "",
              "| width | (c) - (a) | wins | (c) - (a') | wins |", "|---|---|---|---|---|"]
    for w in WIDTHS:
        cells = []
        for ref in ("float", "float+"):
            diff = [r[f"mixed:{w}"] - r[f"{ref}:{w}"] for r in test]
            m, s = mean_std(diff)
            cells += [f"{100 * m:+.1f} ± {100 * s:.1f}", f"{sum(d > 0 for d in diff)}/{len(diff)}"]
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    tuned = [r for r in test if any(k.endswith(":qat") for k in r)]
    if tuned:
        lines += ["", f"Short QAT fine-tuning ({qat_steps} steps, Adam lr 1e-3, batch 64, learned LSQ ranges) from "
                      f"each start, first {len(tuned)} test architectures: accuracy (%) before -> after.", "",
                  "| start | " + " | ".join(QAT_WIDTHS) + " |", "|---" * (len(QAT_WIDTHS) + 1) + "|"]
        for src in sources:
            cells = [f"{_stats([r[f'{src}:{w}'] for r in tuned])} -> {_stats([r[f'{src}:{w}:qat'] for r in tuned])}"
                     for w in QAT_WIDTHS]
            lines.append(f"| {names[src]} | " + " | ".join(cells) + " |")
    ood = [s for s in ("wide", "deep", "predefined") if s in rows]
    if ood:
        lines += ["", "Out of distribution (wide: widths 64-128, deep: 10-14 cells, predefined: LeNet-5, VGG-Small, "
                      "ResNet-20, MobileNetV2): mean accuracy (%) per architecture group at FP / W8A8 / W4A4 / W2A2.",
                  "", "| source | " + " | ".join(f"{s} (n={len(rows[s])})" for s in ood) + " |",
                  "|---" * (len(ood) + 1) + "|"]
        for src in sources:
            cells = [" / ".join(f"{100 * mean_std([r[f'{src}:{w}'] for r in rows[s]])[0]:.1f}" for w in WIDTHS)
                     for s in ood]
            lines.append(f"| {names[src]} | " + " | ".join(cells) + " |")
    if rows.get("predefined"):
        shown = ("float", "w8a8", "mixed", "sgd_100")
        lines += ["", "Zoo models, accuracy (%) at FP / W8A8 / W4A4 / W2A2:", "",
                  "| model | " + " | ".join(names[s] for s in shown) + " |", "|---" * (len(shown) + 1) + "|"]
        for arch_row in rows["predefined"]:
            lines.append(f"| {arch_row['arch']} | " + " | ".join(
                " / ".join(f"{100 * arch_row[f'{src}:{w}']:.0f}" for w in WIDTHS) for src in shown) + " |")
    if plot:
        figure = ROOT / "docs" / "figures" / f"ghnq-{dataset}.png"
        _plot(test, sources, names, figure)
        lines += ["", f"![GHN-Q on {dataset}](figures/{figure.name})"]
    lines += ["", f"Commands: `.venv-bench/bin/python -m benchmarks.ghnq --part train --variant mixed|w8a8|none` "
                  f"(each continues the float benchmark GHN for 60 epochs, AdamW lr 3e-4 cosine, meta-batch 4, 1 "
                  f"thread), then `--part eval --n {n} --n-ood {n_ood}` and `--part report --plot`. {environment()}"]
    publish(f"ghnq-{dataset}", lines)


def _plot(test: list[dict], sources: list[str], names: dict[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(WIDTHS))
    for k, src in enumerate(sources):
        values = [[100 * r[f"{src}:{w}"] for r in test] for w in WIDTHS]
        means = [mean_std(v)[0] for v in values]
        lows = [m - min(v) for m, v in zip(means, values, strict=True)]
        highs = [max(v) - m for m, v in zip(means, values, strict=True)]
        ax.errorbar([x + 0.05 * (k - 2) for x in xs], means, yerr=[lows, highs], marker="o", capsize=3,
                    label=names[src])
    ax.set_xticks(list(xs), WIDTHS)
    ax.set(ylabel="test accuracy (%)", title="held-out architectures: mean, whiskers = min..max")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    _io.savefig(path, fig, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["train", "eval", "report"], required=True)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--variant", default="mixed", choices=sorted(VARIANTS))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--n", type=int, default=30, help="test-split architectures")
    parser.add_argument("--n-ood", type=int, default=3, help="architectures of the wide and deep splits")
    parser.add_argument("--qat-n", type=int, default=10, help="test architectures that also get QAT fine-tuning")
    parser.add_argument("--qat-steps", type=int, default=50)
    parser.add_argument("--worker", type=int, default=0, help="this process's share: architectures k % workers")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--plot", action="store_true", help="write docs/figures/ghnq-<dataset>.png")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ship", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part == "train":
        train(args.dataset, args.variant, args.epochs, args.lr, args.meta_batch, args.threads, args.ship)
    elif args.part == "eval":
        evaluate(args.dataset, args.n, args.n_ood, args.qat_n, args.qat_steps, args.worker, args.workers)
    else:
        report(args.dataset, args.n, args.n_ood, args.qat_steps, args.plot)
    print(environment())


if __name__ == "__main__":
    main()
