"""GHN (issue 10): train the graph hypernetwork on a dataset, evaluate it on held-out architectures (test split,
out-of-distribution wide/deep splits, zoo models) against random init, k SGD steps, fine-tuning and training to
convergence, and time prediction (one architecture and batched).

    bash benchmarks/setup.sh
    .venv-bench/bin/python -m benchmarks.ghn --part train --dataset digits --threads 1 --ship
    .venv-bench/bin/python -m benchmarks.ghn --part baselines --dataset digits --n 30 --splits test
    .venv-bench/bin/python -m benchmarks.ghn --part eval --dataset digits --n 30
    .venv-bench/bin/python -m benchmarks.ghn --part speed --dataset digits

Evaluation protocol: after parameters are set (predicted, random, or trained), BatchNorm statistics are recalibrated
on 10 training batches of 64 and the model is evaluated in eval mode on the test split; the accuracy with test-batch
statistics is an extra column. SGD rows use the reference recipe (Adam lr 1e-3; batch 64 digits / 128 F-MNIST).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import torch

from benchmarks._common import ROOT, SETTINGS, environment, publish
from bitsmith import _io
from bitsmith.engine import TrainConfig, load_split
from bitsmith.methods import ghn as ghn_lib
from bitsmith.methods.ghn.encoding import encode
from bitsmith.zoo import space

OUT = ROOT / "benchmarks" / "out" / "ghn"
SHIPPED_NAME = {"digits": "digits", "fashion-mnist": "fashion-mnist"}


def train(dataset: str, encoder: str, epochs: int, meta_batch: int, threads: int, ship: bool) -> Path:
    """Train (or resume) the benchmark GHN of ``dataset``; with ``ship``, copy its file into the package."""
    out = OUT / dataset / f"train-{encoder}"
    cfg = ghn_lib.recipe(dataset, epochs=epochs, num_threads=threads)
    resume = (out / "checkpoint.safetensors").exists()
    t0 = time.perf_counter()
    _, metrics = ghn_lib.train_ghn(cfg, {"encoder": encoder}, ghn_lib.GHNTrainConfig(meta_batch=meta_batch), out,
                                   resume=resume)
    wall = time.perf_counter() - t0
    _io.write_json(out / "wall.json", {"wall_s": wall, "resumed": resume, "threads": threads, **metrics})
    print(f"{dataset}: {wall / 60:.1f} min, val acc of predictions {metrics.get('val_acc')}")
    if ship:
        target = ghn_lib.io.PRETRAINED_DIR / f"{SHIPPED_NAME[dataset]}.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / ghn_lib.GHN_FILE, target)
        print(f"shipped as {target} ({target.stat().st_size / 2**20:.2f} MiB)")
    return out


def evaluate(dataset: str, splits: list[str], n: int, threads: int, source: str) -> dict:
    """The evaluation table of the GHN ``source`` on ``splits`` (rows cached; baselines shared across GHNs)."""
    torch.set_num_threads(threads)
    ghn = ghn_lib.load_ghn(source)
    batch, epochs = SETTINGS[dataset]["batch_size"], SETTINGS[dataset]["epochs"]
    base = TrainConfig(dataset=dataset, batch_size=batch)
    train_ds, test_ds = load_split(base, "train"), load_split(base, "test")
    cfg = ghn_lib.EvalConfig(splits=splits, n=n, steps=[1, 10, 100], converge_epochs=epochs, bn_batches=10)
    out = OUT / dataset / f"eval-{Path(str(source)).stem}"
    result = ghn_lib.evaluate_ghn(ghn, base, train_ds, test_ds, cfg, out, baselines=OUT / dataset / "baselines",
                                  progress=lambda split, row: print(split, row["arch"], round(row["predicted"], 4)))
    lines = [
        f"Hypernetwork `{source}` on {dataset}: accuracy (%) over held-out architectures, mean ± std [min, max]. "
        f"BN statistics recalibrated on 10 training batches of 64 for every column; `batch stats` uses test-batch "
        f"statistics (extra column, not a headline figure). Converged: reference recipe, {epochs} epochs.",
        "",
        "| split | n | predicted | batch stats | random init | SGD 1 | SGD 10 | SGD 100 | fine-tune 10 | "
        "fine-tune 100 | converged | predicted / converged (worst) | < 0.9x | steps worth (median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(s: dict, key: str) -> str:
        if key not in s:
            return "–"
        v = s[key]
        return f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f} [{100 * v['min']:.0f}, {100 * v['max']:.0f}]"

    for split, part in result["splits"].items():
        s = part["summary"]
        ratio = f"{s['ratio']['mean']:.3f} ({s['ratio']['min']:.3f})" if "ratio" in s else "–"
        worth = s["steps_worth_median"]
        worth_text = f"{worth:.0f}" if worth is not None else f"> 100 for {s['steps_worth_beyond']}"
        lines.append(f"| {split} | {s['n']} | {cell(s, 'predicted')} | {cell(s, 'pred_batchstat')} | "
                     f"{cell(s, 'random')} | {cell(s, 'sgd_1')} | {cell(s, 'sgd_10')} | {cell(s, 'sgd_100')} | "
                     f"{cell(s, 'finetune_10')} | {cell(s, 'finetune_100')} | {cell(s, 'converged')} | {ratio} | "
                     f"{s.get('below_0.9_of_converged', '–')} | {worth_text} |")
    lines += ["", f"Command: `.venv-bench/bin/python -m benchmarks.ghn --part eval --dataset {dataset} --n {n} "
                  f"--splits {','.join(splits)}`. {environment()}"]
    publish(f"ghn-eval-{dataset}", lines)
    return result


def baselines(dataset: str, splits: list[str], n: int, threads: int) -> None:
    """The hypernetwork-free columns (random init, SGD-k, converged) of the evaluation table, cached for reuse."""
    torch.set_num_threads(threads)
    batch, epochs = SETTINGS[dataset]["batch_size"], SETTINGS[dataset]["epochs"]
    base = TrainConfig(dataset=dataset, batch_size=batch)
    train_ds, test_ds = load_split(base, "train"), load_split(base, "test")
    shape = ghn_lib.GHNConfig(num_classes=train_ds.num_classes, in_channels=train_ds.in_channels,
                              image_size=train_ds.image_size[0])
    cfg = ghn_lib.EvalConfig(splits=splits, n=n, steps=[1, 10, 100], converge_epochs=epochs, bn_batches=10)
    ghn_lib.compute_baselines(shape, base, train_ds, test_ds, cfg, OUT / dataset / "baselines",
                                       progress=lambda split, row: print(split, row["arch"], row.get("converged")))


def speed(dataset: str, threads: int, source: str, count: int = 100) -> None:
    """Prediction time per architecture (one at a time, and batched) for ``count`` test architectures."""
    torch.set_num_threads(threads)
    ghn = ghn_lib.load_ghn(source)
    cfg = ghn.config
    models = [space.build_network(s, cfg.num_classes, cfg.in_channels, cfg.image_size)
              for s in space.split("test", count)]
    encodings = [encode(m, cfg.input_shape, cutoff=cfg.cutoff) for m in models]
    ghn_lib.predict_many(models[:2], ghn, encodings[:2])
    single = []
    for m, e in zip(models, encodings, strict=True):
        t0 = time.perf_counter()
        ghn_lib.predict_many([m], ghn, [e])
        single.append(time.perf_counter() - t0)
    batched = []
    for _ in range(3):
        t0 = time.perf_counter()
        ghn_lib.predict_many(models, ghn, encodings)
        batched.append((time.perf_counter() - t0) / count)
    t0 = time.perf_counter()
    for m in models[:20]:
        encode(m, cfg.input_shape, cutoff=cfg.cutoff)
    encode_ms = (time.perf_counter() - t0) / 20 * 1000
    lines = [
        f"Prediction time per architecture, {count} test-split architectures of the search space, hypernetwork "
        f"`{source}` ({ghn.num_parameters():,} parameters), {threads} thread(s).",
        "",
        "| mode | median ms / architecture | p90 ms |",
        "|---|---|---|",
        f"| one at a time (graph already encoded) | {1000 * statistics.median(single):.1f} | "
        f"{1000 * sorted(single)[int(0.9 * len(single))]:.1f} |",
        f"| batched, {count} at once | {1000 * statistics.median(batched):.1f} | – |",
        f"| graph tracing + encoding (once per architecture) | {encode_ms:.1f} | – |",
        "",
        f"Command: `.venv-bench/bin/python -m benchmarks.ghn --part speed --dataset {dataset}`. {environment()}",
    ]
    publish(f"ghn-speed-{dataset}", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["train", "baselines", "eval", "speed"], required=True)
    parser.add_argument("--dataset", default="digits", choices=sorted(SETTINGS))
    parser.add_argument("--encoder", default="gatedgnn", choices=list(ghn_lib.ENCODERS))
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--n", type=int, default=30, help="architectures per evaluation split")
    parser.add_argument("--splits", default="test,wide,deep,predefined")
    parser.add_argument("--ghn", default=None, help="GHN to evaluate (default: this benchmark's trained one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ship", action="store_true", help="copy the trained GHN into the package")
    args = parser.parse_args()
    source = args.ghn or str(OUT / args.dataset / f"train-{args.encoder}" / ghn_lib.GHN_FILE)
    if args.part == "train":
        train(args.dataset, args.encoder, args.epochs, args.meta_batch, args.threads, args.ship)
    elif args.part == "baselines":
        baselines(args.dataset, args.splits.split(","), args.n, args.threads)
    elif args.part == "eval":
        evaluate(args.dataset, args.splits.split(","), args.n, args.threads, source)
    else:
        speed(args.dataset, args.threads, source)


if __name__ == "__main__":
    main()
