"""FP32 baselines of every zoo model on digits and Fashion-MNIST (BENCHMARK_PROTOCOL.md reference recipe).

    bash benchmarks/setup.sh && .venv-bench/bin/python -m benchmarks.train_zoo

Writes one JSON file per (dataset, model, seed) under benchmarks/out/zoo (finished ones are skipped on re-run) and
the table into docs/BENCHMARKS.md. Epochs per model are chosen to fit the 2-core budget and are stated per row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks._common import ROOT, environment, pm, update_section
from bitsmith import _io
from bitsmith.engine import TrainConfig, train

# recipe name -> TrainConfig fields on top of the reference recipe (Adam lr 1e-3, constant lr)
RECIPES = {
    "reference": {},
    "tuned": {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 5e-4, "label_smoothing": 0.1, "scheduler": "cosine"},
}

# (dataset, model, recipe, epochs, batch size, seeds)
PLAN = [
    ("digits", "lenet5", "reference", 30, 64, (0, 1, 2, 3, 4)),
    ("digits", "lenet5", "tuned", 30, 64, (0, 1, 2, 3, 4)),
    ("digits", "resnet20", "reference", 30, 64, (0, 1, 2)),
    ("digits", "mobilenetv2", "reference", 15, 64, (0, 1, 2)),
    ("digits", "resnet18", "reference", 10, 64, (0, 1, 2)),
    ("digits", "vgg_small", "reference", 5, 64, (0, 1, 2)),
    ("fashion-mnist", "lenet5", "reference", 15, 128, (0, 1, 2)),
    ("fashion-mnist", "lenet5", "tuned", 15, 128, (0, 1, 2)),
]


def run_one(dataset: str, model: str, recipe: str, epochs: int, batch: int, seed: int, out: Path) -> dict:
    suffix = "" if recipe == "reference" else f"-{recipe}"
    path = out / f"{dataset}-{model}{suffix}-s{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    result = train(TrainConfig(model=model, dataset=dataset, epochs=epochs, batch_size=batch, seed=seed,
                               num_threads=2, **RECIPES[recipe]), quiet=True)
    wall = time.perf_counter() - t0
    steps = [r["step_ms_median"] for r in result.history if r["type"] == "epoch"][1:] or \
        [r["step_ms_median"] for r in result.history if r["type"] == "epoch"]
    row = {"dataset": dataset, "model": model, "recipe": recipe, "epochs": epochs, "batch": batch, "seed": seed,
           "test_acc": result.metrics["test_acc"], "params": sum(p.numel() for p in result.model.parameters()),
           "step_ms": statistics.median(steps), "wall_s": wall}
    _io.write_json(path, row)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "zoo")
    parser.add_argument("--only", default="", help="comma-separated dataset:model pairs to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    only = {tuple(x.split(":")) for x in args.only.split(",") if x}
    rows = []
    for dataset, model, recipe, epochs, batch, seeds in PLAN:
        if only and (dataset, model) not in only:
            continue
        runs = [run_one(dataset, model, recipe, epochs, batch, s, args.out) for s in seeds]
        rows.append((dataset, model, recipe, epochs, batch, runs))
    lines = [
        "## FP32 zoo baselines",
        "",
        f"Measured {environment()}. Reference recipe of BENCHMARK_PROTOCOL.md (Adam lr 1e-3, no augmentation, "
        "digits at 16×16, Fashion-MNIST at 28×28 with the official test set); epochs reduced for the heavy models "
        "to fit 2 CPU cores, as stated per row. Step = zero_grad + forward + backward + step, median over the full "
        "batches of every epoch after the first (absolute times move 10–15 % between runs on these machines).",
        "",
        "Command: `bash benchmarks/setup.sh && .venv-bench/bin/python -m benchmarks.train_zoo` (finished runs are "
        "kept under benchmarks/out/zoo and skipped). Timing caveat for the 2026-11-25 figures: other jobs shared "
        "the two cores during most runs, so `ms / step` and `wall s` are inflated and uneven (LeNet-5 alone: "
        "~2.3 ms / step); accuracies are unaffected. Not run: vgg_small, resnet18, mobilenetv2 and resnet20 on "
        "Fashion-MNIST (tens of minutes per epoch on 2 cores).",
        "",
        "Recipes: `reference` = Adam lr 1e-3, constant; `tuned` = " + ", ".join(
            f"{k} {v}" for k, v in RECIPES["tuned"].items()) + ".",
        "",
        "| dataset | model | recipe | params | epochs | batch | seeds | test accuracy (%) | ms / step | wall s / run |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for dataset, model, recipe, epochs, batch, runs in rows:
        lines.append(
            f"| {dataset} | {model} | {recipe} | {runs[0]['params']:,} | {epochs} | {batch} | {len(runs)} | "
            f"{pm([r['test_acc'] for r in runs])} | {statistics.median(r['step_ms'] for r in runs):.1f} | "
            f"{statistics.fmean(r['wall_s'] for r in runs):.0f} |")
    update_section("zoo-fp32", "\n".join(lines))


if __name__ == "__main__":
    main()
