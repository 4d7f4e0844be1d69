"""RPG: accuracy against the DoF ratio with the log-linear fit, RPG vs an equally small narrow plain model, step
time, and compression of a trained ring (issue 9).

    bash benchmarks/setup.sh && .venv-bench/bin/python -m benchmarks.rpg --part sweep --models resnet20
    .venv-bench/bin/python -m benchmarks.rpg --part narrow --models resnet20
    .venv-bench/bin/python -m benchmarks.rpg --part speed --models resnet20
    .venv-bench/bin/python -m benchmarks.rpg --part compress --models resnet20

Every run trains from scratch with the reference recipe of BENCHMARK_PROTOCOL.md (Adam lr 1e-3, constant; digits:
batch 64, 30 epochs; Fashion-MNIST: batch 128, 15 epochs). RPG generates every conv/linear weight but the stem conv
and the classifier ("inner"); the ring starts from N(0, 1) and trains at ring_lr_gain x lr / RMS(layer scales).
The DoF ratio is ring size / generated weights; "DoF" counts the ring plus every parameter not generated (stem,
classifier, BatchNorm). The narrow baseline is the plain model with its stage widths scaled so that its trainable
parameter count is closest to the RPG model's DoF. The full model is the plain model (100 % of its weights free).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from benchmarks._common import (
    ROOT,
    SETTINGS,
    environment,
    mean_std,
    pm,
    publish,
    reference_config,
    speedup_flags,
    speedup_sentence,
    speedup_tag,
    speedups,
    step_times,
)
from bitsmith import _io, data, runs, searches, zoo
from bitsmith.methods import rpg

OUT = ROOT / "benchmarks" / "out" / "rpg"
RATIOS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 1.0)


def sweep_dir(model_name: str, dataset: str, out: Path, changes: dict) -> Path:
    return out / "sweep" / f"{model_name}-{dataset}{speedup_tag(changes)}"


def sweep(model_name: str, dataset: str, seeds: list[int], threads: int, out: Path,
          ratios: tuple[float, ...] = RATIOS, **changes: object) -> dict:
    """The sweep's runs (reused when finished) and its fit over 0.01 %–1 %."""
    base = reference_config(model_name, dataset, 0, threads, **changes)
    return searches.rpg_sweep(base, sweep_dir(model_name, dataset, out, changes), ratios=ratios, seeds=seeds,
                              fit_range=(0.0001, 0.01), quiet=True)


def _params(model_name: str, ds: object, width: float) -> int:
    model = zoo.create_model(model_name, ds.num_classes, ds.in_channels, tuple(ds.image_size), width=width)
    return sum(p.numel() for p in model.parameters())


def narrow_width(model_name: str, dataset: str, dof: int) -> float:
    """The width multiplier whose plain model has the trainable parameter count closest to ``dof``."""
    ds = data.get(dataset, split="train")
    lo, hi = 0.01, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _params(model_name, ds, mid) < dof else (lo, mid)
    return min((lo, hi), key=lambda w: abs(_params(model_name, ds, w) - dof))


def narrow_run(model_name: str, dataset: str, width: float, seed: int, threads: int, out: Path,
               **changes: object) -> dict:
    """Train the narrow plain model (cached as JSON)."""
    path = out / "narrow" / f"{model_name}-{dataset}{speedup_tag(changes)}-w{width:.4f}-s{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    cfg = reference_config(model_name, dataset, seed, threads, **changes)
    cfg.model_kwargs = {"width": width}
    metrics = searches._plain_run(cfg, path.with_suffix(""), quiet=True)
    row = {"width": width, "seed": seed, "test_acc": metrics["test_acc"],
           "params": runs.run_cost(path.with_suffix("")).dof}
    _io.write_json(path, row)
    print(json.dumps(row), flush=True)
    return row


def gain_part(args: argparse.Namespace, seeds: list[int]) -> list[str]:
    lines = header(args, f"RPG: the ring's learning-rate gain ({args.models} on {args.datasets})")
    lines += ["| model | dataset | DoF ratio | ring_lr_gain | accuracy (%) | seeds |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for model_name in args.models.split(","):
        for dataset in args.datasets.split(","):
            for ratio in (0.001, 0.003):
                base = reference_config(model_name, dataset, 0, args.threads)
                for gain in (1.0, 3.0):
                    acc = []
                    for seed in seeds:
                        run_dir = args.out / "gain" / f"{model_name}-{dataset}-r{ratio:g}-g{gain:g}-s{seed}"
                        metrics = searches._run("rpg", rpg.RPGConfig(dof_ratio=ratio, ring_lr_gain=gain), run_dir,
                                                source=None, base=base,
                                                quiet=True, resume=True, seed=seed)
                        acc.append(metrics["test_acc"])
                    lines.append(f"| {model_name} | {dataset} | {100 * ratio:g} % | {gain:g} | {pm(acc)} | "
                                 f"{len(acc)} |")
    lines += ["", "The ring's permutation and signs use seed 0 in every run; the seed varies the ring's start and the "
              "batch order."]
    return lines


#: The better recipe reported beside the reference one (BENCHMARK_PROTOCOL.md allows it when both are shown).
BETTER_RECIPE = {"lr": 3e-3, "scheduler": "cosine"}


def recipe_part(args: argparse.Namespace, seeds: list[int]) -> list[str]:
    """The full model and RPG at 0.1 % / 0.3 % DoF under the reference recipe and under Adam lr 3e-3 with a cosine
    schedule (same epochs and batch): the issue's targets are ratios to the full model of the same recipe."""
    lines = header(args, f"RPG under a cosine learning-rate schedule ({args.models} on {args.datasets})")
    lines += ["| model | dataset | recipe | full model (%) | RPG 0.3 % (%) | % of full | RPG 0.1 % (%) | % of full |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for model_name in args.models.split(","):
        for dataset in args.datasets.split(","):
            reference = sweep(model_name, dataset, seeds, args.threads, args.out, (0.001, 0.003))
            full = {"reference": reference["reference_acc"], "cosine": []}
            ring = {("reference", p["ratio"]): p["test_acc"] for p in reference["points"]}
            folder = args.out / "recipe" / f"{model_name}-{dataset}"
            for seed in seeds:
                base = reference_config(model_name, dataset, seed, args.threads, **BETTER_RECIPE)
                full["cosine"].append(searches._plain_run(base, folder / f"full-s{seed}", quiet=True)["test_acc"])
                for ratio in (0.001, 0.003):
                    metrics = searches._run("rpg", rpg.RPGConfig(dof_ratio=ratio), folder / f"r{ratio:g}-s{seed}",
                                            source=None, base=base, quiet=True, resume=True, seed=seed)
                    ring.setdefault(("cosine", ratio), []).append(metrics["test_acc"])
            for recipe, label in (("reference", "reference (Adam 1e-3, constant)"),
                                  ("cosine", "Adam 3e-3, cosine schedule")):
                base_mean = statistics.fmean(full[recipe])
                cells = [f"{pm(ring[recipe, r])} | {100 * statistics.fmean(ring[recipe, r]) / base_mean:.1f}"
                         for r in (0.003, 0.001)]
                lines.append(f"| {model_name} | {dataset} | {label} | {pm(full[recipe])} | {' | '.join(cells)} |")
    lines += ["", "Both recipes train for the same epochs with the same batch size; \"% of full\" divides by the "
              "full model trained with the same recipe. The reference rows are the sweep's runs."]
    return lines


def precision_part(args: argparse.Namespace, seeds: list[int]) -> list[str]:
    """RPG at the sweep's ratios trained in float32 and under bf16 autocast with channels-last, same seeds: what the
    faster recipe of the Fashion-MNIST tables costs in accuracy (runs shared with the sweeps' caches)."""
    lines = header(args, f"RPG under bfloat16 autocast vs float32 ({args.models} on {args.datasets})")
    lines += ["| model | dataset | DoF ratio | float32 (%) | bf16 + channels-last (%) | Δ bf16 − float32 (pt) | "
              "seeds |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for model_name in args.models.split(","):
        for dataset in args.datasets.split(","):
            for ratio in args.ratios:
                acc = {}
                for label, changes in (("fp32", {}), ("bf16", speedups("bf16", True))):
                    base = reference_config(model_name, dataset, 0, args.threads, **changes)
                    folder = sweep_dir(model_name, dataset, args.out, changes) / "runs"
                    acc[label] = [searches._run("rpg", rpg.RPGConfig(dof_ratio=ratio, include="inner"),
                                                folder / f"r{ratio:g}-s{seed}", source=None, base=base, quiet=True,
                                                resume=True, seed=seed)["test_acc"] for seed in seeds]
                delta = 100 * (statistics.fmean(acc["bf16"]) - statistics.fmean(acc["fp32"]))
                lines.append(f"| {model_name} | {dataset} | {100 * ratio:g} % | {pm(acc['fp32'])} | "
                             f"{pm(acc['bf16'])} | {delta:+.2f} | {len(seeds)} |")
    lines += ["", "Both columns: the reference recipe, every run from scratch, one thread each; bf16 = the Trainer's "
              "`precision=\"bf16\"` (training forward under bfloat16 autocast, evaluation in float32) with "
              "`channels_last=True`. Runs are shared with the sweep tables' caches."]
    return lines


def header(args: argparse.Namespace, title: str) -> list[str]:
    faster = speedup_sentence(args.changes)
    flags = speedup_flags(args.changes)
    return [f"## {title}", "", f"Measured {environment()}. " + " ".join(__doc__.split("\n\n")[2].split()) + faster,
            "", f"Command: `bash benchmarks/setup.sh && .venv-bench/bin/python -m benchmarks.rpg --part {args.part} "
            f"--models {args.models} --datasets {args.datasets} --seeds {args.seeds}"
            + (f" --ratios {','.join(f'{r:g}' for r in args.ratios)}" if args.ratios != RATIOS else "")
            + f"{flags} --threads {args.threads}`", ""]


def sweep_part(args: argparse.Namespace, seeds: list[int]) -> list[str]:
    lines = header(args, f"RPG: accuracy against the DoF ratio ({args.models} on {args.datasets})")
    lines += ["| model | dataset | DoF ratio | DoF | accuracy (%) | % of full model | seeds |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    fits = []
    for model_name in args.models.split(","):
        for dataset in args.datasets.split(","):
            result = sweep(model_name, dataset, seeds, args.threads, args.out, args.ratios, **args.changes)
            full = result["reference_acc"]
            full_mean = statistics.fmean(full)
            full_dir = sweep_dir(model_name, dataset, args.out, args.changes) / "runs" / f"full-s{seeds[0]}"
            lines.append(f"| {model_name} | {dataset} | full model | {runs.run_cost(full_dir).dof:,}"
                         f" | {pm(full)} | 100 | {len(full)} |")
            for p in result["points"]:
                lines.append(f"| {model_name} | {dataset} | {100 * p['ratio']:g} % | {p['dof']:,} | "
                             f"{pm(p['test_acc'])} | {100 * p['mean'] / full_mean:.1f} | {len(p['test_acc'])} |")
            fit = result["fit"]
            fits.append(f"{model_name} on {dataset}: accuracy = {100 * fit['slope']:.2f} pt × log10(ratio) + "
                        f"{100 * fit['intercept']:.2f} over DoF ratios 0.01 %–1 % (means of {len(seeds)} seeds), "
                        f"R² = {fit['r2']:.3f}")
    lines += ["", "Log-linear fit: " + "; ".join(fits) + f". Plot: `benchmarks/out/rpg/sweep/<model>-<dataset>"
              f"{speedup_tag(args.changes)}/sweep.png` (not committed)."]
    return lines


def narrow_part(args: argparse.Namespace, seeds: list[int]) -> list[str]:
    lines = header(args, f"RPG vs a narrow plain model with as many free parameters ({args.models} on "
                         f"{args.datasets})")
    lines += ["| model | dataset | DoF ratio | RPG DoF | RPG accuracy (%) | narrow width | narrow params | narrow "
              "accuracy (%) | Δ RPG − narrow (pt) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for model_name in args.models.split(","):
        for dataset in args.datasets.split(","):
            result = sweep(model_name, dataset, seeds, args.threads, args.out, args.ratios, **args.changes)
            for p in result["points"]:
                if p["ratio"] not in (0.001, 0.003, 0.01):
                    continue
                width = narrow_width(model_name, dataset, p["dof"])
                rows = [narrow_run(model_name, dataset, width, s, args.threads, args.out, **args.changes)
                        for s in seeds]
                acc = [r["test_acc"] for r in rows]
                delta = 100 * (p["mean"] - mean_std(acc)[0])
                lines.append(f"| {model_name} | {dataset} | {100 * p['ratio']:g} % | {p['dof']:,} | "
                             f"{pm(p['test_acc'])} | {width:.3f} | {rows[0]['params']:,} | {pm(acc)} | {delta:+.2f} |")
    return lines


def speed_part(args: argparse.Namespace, seeds: list[int]) -> list[str]:
    torch.set_num_threads(2)
    lines = header(args, f"RPG step time vs the plain model ({args.models} on {args.datasets})")
    lines += ["| model | dataset | batch | plain step (ms) | RPG 0.3 % step (ms) | RPG 10 % step (ms) | ratio 0.3 % | "
              "ratio 10 % |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for model_name in args.models.split(","):
        for dataset in args.datasets.split(","):
            ds = data.get(dataset, split="train")
            x, y = ds.tensors()
            batch = SETTINGS[dataset]["batch_size"]
            torch.manual_seed(0)
            plain = zoo.create_model(model_name, ds.num_classes, ds.in_channels, tuple(ds.image_size))
            models = {"plain": plain, "rpg0.003": rpg.wrap(plain, dof_ratio=0.003),
                      "rpg0.1": rpg.wrap(plain, dof_ratio=0.1)}
            t = step_times(models, x, y, batch)
            lines.append(f"| {model_name} | {dataset} | {batch} | {t['plain']:.1f} | {t['rpg0.003']:.1f} | "
                         f"{t['rpg0.1']:.1f} | {t['rpg0.003'] / t['plain']:.2f}× | {t['rpg0.1'] / t['plain']:.2f}× |")
    lines += ["", "Timing per BENCHMARK_PROTOCOL.md: torch.set_num_threads(2), median over 7 interleaved rounds of "
              "15 full-batch steps (zero_grad + forward + backward + Adam step) after 5 warm-up steps, all models "
              "in one process."]
    return lines


def compress_part(args: argparse.Namespace, seeds: list[int]) -> list[str]:
    lines = header(args, f"RPG: pruning and quantizing a trained ring ({args.models} on {args.datasets}, "
                         "DoF ratio 0.3 %, no retraining)")
    lines += ["| model | dataset | seeds | change | accuracy (%) | storage (KiB) |",
              "| --- | --- | ---: | --- | ---: | ---: |"]
    for model_name in args.models.split(","):
        for dataset in args.datasets.split(","):
            results = []
            for seed in seeds:
                run_dir = args.out / "sweep" / f"{model_name}-{dataset}" / "runs" / f"r0.003-s{seed}"
                train_ds, test_ds = data.get(dataset, split="train"), data.get(dataset, split="test")
                shape = (train_ds.in_channels, *train_ds.image_size)
                results.append(rpg.compression_study(runs.load_model(run_dir), train_ds, test_ds, shape,
                                                     [0.25, 0.5, 0.75], [8, 4, 3, 2]))
            kib = 8192
            lines.append(f"| {model_name} | {dataset} | {len(seeds)} | none (trained, 32-bit ring) | "
                         f"{pm([r['test_acc'] for r in results])} | {results[0]['storage_bits'] / kib:.1f} |")
            for i, fraction in enumerate([0.25, 0.5, 0.75]):
                ring = [r["prune"][i]["ring_acc"] for r in results]
                weights = [r["prune"][i]["weights_acc"] for r in results]
                lines.append(f"| {model_name} | {dataset} | {len(seeds)} | prune {100 * fraction:g} % of ring entries "
                             f"| {pm(ring)} | {results[0]['prune'][i]['ring_storage_bits'] / kib:.1f} |")
                lines.append(f"| {model_name} | {dataset} | {len(seeds)} | prune {100 * fraction:g} % of generated "
                             f"weights | {pm(weights)} | — |")
            for i, bits in enumerate([8, 4, 3, 2]):
                acc = [r["quantize"][i]["core_acc"] for r in results]
                err = max(r["quantize"][i]["integer_rel_error"] for r in results)
                lines.append(f"| {model_name} | {dataset} | {len(seeds)} | ring at {bits} bits → core layers (A8), "
                             f"integer forward max rel. error {err:.0e} | {pm(acc)} | "
                             f"{results[0]['quantize'][i]['storage_bits'] / kib:.1f} |")
    lines += ["", "Storage: the ring at its bit width (pruned: non-zero entries with a 32-bit index each), a 64-bit "
              "seed, one 32-bit scale per generated layer, and the parameters not generated at 32 bits. Pruning "
              "generated weights does not shrink the ring's storage (the weights are not stored), hence \"—\"."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("sweep", "narrow", "speed", "compress", "gain", "recipe", "precision"),
                        default="sweep")
    parser.add_argument("--models", default="resnet20")
    parser.add_argument("--datasets", default="digits")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ratios", default=",".join(f"{r:g}" for r in RATIOS), help="DoF ratios of the sweep")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training run")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    parser.add_argument("--section", default=None, help="BENCHMARKS.md section (default: rpg-<part>)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="training precision of the sweep and narrow runs (bf16: autocast, stated in the table)")
    parser.add_argument("--channels-last", action="store_true", help="train the sweep and narrow runs in NHWC")
    args = parser.parse_args()
    args.changes = speedups(args.precision, args.channels_last)
    if args.changes and args.part not in ("sweep", "narrow"):
        parser.error(f"--precision bf16 / --channels-last apply to --part sweep and narrow, not {args.part}")
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    args.ratios = tuple(float(r) for r in args.ratios.split(","))
    part = {"sweep": sweep_part, "narrow": narrow_part, "speed": speed_part, "compress": compress_part,
            "gain": gain_part, "recipe": recipe_part, "precision": precision_part}[args.part]
    publish(args.section or f"rpg-{args.part}-{args.models}-{args.datasets}", part(args, seeds),
            write=not args.no_write)


if __name__ == "__main__":
    main()
