"""DNAS search vs uniform LSQ vs CGMQ at the same BOPs, and the grid-search variance study (issue 8).

    bash benchmarks/setup.sh && .venv-bench/bin/python -m benchmarks.dnas --part search --models lenet5
    .venv-bench/bin/python -m benchmarks.dnas --part grid --models lenet5

Everything trains from scratch with the reference recipe of BENCHMARK_PROTOCOL.md (Adam lr 1e-3; digits: batch 64,
30 epochs; Fashion-MNIST: batch 128, 15 epochs), every conv and linear quantized, first and last included. Budgets
are the BOPs of the uniform W4A4 / W3A3 model (0.25 / 0.140625 of W8A8; W2A2 is the cheapest point of the
search space without pruning, so only one configuration has its BOPs). DNAS: per-filter weight widths 2/4/8,
per-layer activation widths 2/4/8 (with "+prune" also a pruned option per filter), "target" cost term with weight
1, architecture Adam lr 0.1, 20 % warm-up epochs; the search runs the recipe's epochs on the training split minus
the validation split (digits: stratified 20 %; Fashion-MNIST: last 5 000), then the derived configuration is
retrained from scratch on the full training split with the same recipe. Search time is reported as a multiple of
that retraining (one plain training run, same process). Uniform LSQ: the DirectQ benchmark's "lsq" runs; CGMQ:
the CGMQ benchmark's runs (per-layer gates, widths 2/4/8). Grid: random configurations of the same search space
(without pruning) within 3 % below the budget, each trained with the same recipe and seeds 0-2.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from benchmarks._common import ROOT, environment, mean_std, pm, publish, reference_config
from benchmarks.cgmq import OUT as CGMQ_OUT
from benchmarks.cgmq import cgmq_run
from benchmarks.directq import OUT as LSQ_OUT
from benchmarks.directq import accuracy_run as uniform_run
from bitsmith import _io, searches
from bitsmith.methods import dnas

BOUNDS = {"w4a4": (0.25, 4), "w3a3": (0.140625, 3), "w2a2": (0.0625, 2)}
VARIANTS = {"gumbel": ("gumbel", False), "score": ("score", False), "gumbel+prune": ("gumbel", True),
            "score+prune": ("score", True)}
OUT = ROOT / "benchmarks" / "out" / "dnas"


def search_config(bound: str, estimator: str = "gumbel", prune: bool = False) -> dnas.DNASConfig:
    return dnas.DNASConfig(budget_bops=BOUNDS[bound][0], relative_to="w8a8", weight_bits=[2, 4, 8],
                           act_bits=[2, 4, 8], estimator=estimator, prune=prune)


def dnas_run(model_name: str, dataset: str, bound: str, variant: str, seed: int, out: Path, threads: int) -> dict:
    """Search, derive and retrain one (model, dataset, bound, variant, seed); cached as JSON in ``out``."""
    key = f"{model_name}-{dataset}-{bound}-{variant}-s{seed}"
    path = out / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    estimator, prune = VARIANTS[variant]
    summary = searches.dnas_search(search_config(bound, estimator, prune), out / "runs" / key,
                                   base=reference_config(model_name, dataset, seed, threads), retrain_from="scratch",
                                   quiet=True, resume=True)
    row = {"model": model_name, "dataset": dataset, "bound": bound, "variant": variant, "seed": seed,
           **{k: summary[k] for k in ("test_acc", "bops", "budget_bops", "searched_bops", "repaired",
                                      "search_time_s", "retrain_time_s")},
           "kept_filters": sum(v["kept"] for v in summary["layers"].values()),
           "filters": sum(v["out_channels"] for v in summary["layers"].values())}
    _io.write_json(path, row)
    print(json.dumps(row), flush=True)
    return row


def grid_run(model_name: str, dataset: str, bound: str, configs: int, seeds: list[int], out: Path,
             threads: int) -> dict:
    """The grid study at one budget (its runs are reused when the study is re-run)."""
    cfg = reference_config(model_name, dataset, seeds[0], threads)
    return searches.grid_study(search_config(bound), out / "grid" / f"{model_name}-{dataset}-{bound}", base=cfg,
                               configs=configs, seeds=seeds, quiet=True)


def search_part(args: argparse.Namespace, seeds: list[int]) -> list[str]:
    lines = [
        f"## DNAS search vs uniform LSQ and CGMQ at the same BOPs: {args.models} on {args.datasets}",
        "",
        f"Measured {environment()}. " + " ".join(__doc__.split("\n\n")[2].split()),
        "",
        f"Command: `bash benchmarks/setup.sh && .venv-bench/bin/python -m benchmarks.dnas --part search --models "
        f"{args.models} --datasets {args.datasets} --bounds {args.bounds} --variants {args.variants} --seeds "
        f"{args.seeds} --threads {args.threads}{' --no-cgmq' if args.no_cgmq else ''}`",
        "",
        "| model | dataset | budget (= uniform BOPs) | DNAS variant | seeds | DNAS accuracy (%) | BOPs / budget | "
        "repaired | filters kept | uniform LSQ (%) | CGMQ per-layer (%) | grid best / median (%) | search time / "
        "one training |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model_name in args.models.split(","):
        for dataset in args.datasets.split(","):
            for bound in args.bounds.split(","):
                width = BOUNDS[bound][1]
                uniform = [uniform_run(model_name, dataset, "lsq", width, s, LSQ_OUT, args.threads)["test_acc"]
                           for s in seeds]
                cg = pm([cgmq_run(model_name, dataset, bound, "layer", s, CGMQ_OUT, args.threads)["test_acc"]
                         for s in seeds]) if not args.no_cgmq else "see CGMQ table"
                grid_path = OUT / "grid" / f"{model_name}-{dataset}-{bound}" / searches.GRID_RESULT
                grid = "—"
                if grid_path.exists():
                    g = json.loads(grid_path.read_text())
                    grid = f"{100 * g['means'][g['best']]:.2f} / {100 * g['means'][g['median']]:.2f}"
                for variant in args.variants.split(","):
                    rows = [dnas_run(model_name, dataset, bound, variant, s, args.out, args.threads) for s in seeds]
                    acc = [r["test_acc"] for r in rows]
                    ratio = max(r["bops"] / r["budget_bops"] for r in rows)
                    repaired = sum(r["repaired"] for r in rows)
                    kept = statistics.fmean(r["kept_filters"] / r["filters"] for r in rows)
                    times = [r["search_time_s"] / r["retrain_time_s"] for r in rows]
                    lines.append(
                        f"| {model_name} | {dataset} | {bound.upper()} | {variant} | {len(seeds)} | {pm(acc)} | "
                        f"≤ {ratio:.3f} | {repaired}/{len(rows)} | {100 * kept:.0f} % | {pm(uniform)} | {cg} | "
                        f"{grid} | {mean_std(times)[0]:.1f}× |")
    lines += ["", "± is the sample standard deviation over seeds. \"BOPs / budget\" is the largest ratio over the "
              "seeds, from the exact cost of the retrained model; \"repaired\" counts seeds whose derived "
              "configuration was over the budget and was lowered by the deterministic repair. Grid best / median: "
              "mean accuracy over seeds of the best and the median random configuration (see the grid table)."]
    return lines


def grid_part(args: argparse.Namespace, seeds: list[int]) -> list[str]:
    lines = [
        f"## Grid search at the same BOPs: configuration vs seed variance ({args.models} on {args.datasets})",
        "",
        f"Measured {environment()}. " + " ".join(__doc__.split("\n\n")[2].split()),
        "",
        f"Command: `bash benchmarks/setup.sh && .venv-bench/bin/python -m benchmarks.dnas --part grid --models "
        f"{args.models} --datasets {args.datasets} --bounds {args.bounds} --configs {args.configs} --seeds "
        f"{args.seeds} --threads {args.threads}` (the same as `bitsmith grid --model M --dataset D --budget-bops B "
        f"--configs {args.configs} --seeds {args.seeds}`)",
        "",
        "| model | dataset | budget | configs × seeds | std across configs (pt) | std across seeds (pt) | F | p | "
        "best / median / worst config (%) | DNAS gumbel (%) | DNAS − grid median (pt) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model_name in args.models.split(","):
        for dataset in args.datasets.split(","):
            for bound in args.bounds.split(","):
                g = grid_run(model_name, dataset, bound, args.configs, seeds, args.out, args.threads)
                means = g["means"]
                dnas_path = [args.out / f"{model_name}-{dataset}-{bound}-gumbel-s{s}.json" for s in seeds]
                dnas_acc = [json.loads(p.read_text())["test_acc"] for p in dnas_path if p.exists()]
                dn = pm(dnas_acc) if len(dnas_acc) > 1 else "—"
                delta = (f"{100 * (statistics.fmean(dnas_acc) - means[g['median']]):+.2f}" if len(dnas_acc) > 1
                         else "—")
                lines.append(
                    f"| {model_name} | {dataset} | {bound.upper()} | {g['configs']} × {len(seeds)} | "
                    f"{100 * g['config_std']:.2f} | {100 * g['seed_std']:.2f} | {g['f_statistic']:.2f} | "
                    f"{g['p_value']:.3g} | {100 * means[g['best']]:.2f} / {100 * means[g['median']]:.2f} / "
                    f"{100 * means[g['worst']]:.2f} | {dn} | {delta} |")
    lines += ["", "std across configs: sample std of the configurations' mean accuracies; std across seeds: pooled "
              "within-configuration std; F and p: one-way ANOVA (H0: all configurations have the same expected "
              "accuracy). Plots: `benchmarks/out/dnas/grid/<model>-<dataset>-<budget>/grid.png` (not committed)."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("search", "grid"), default="search")
    parser.add_argument("--models", default="lenet5")
    parser.add_argument("--datasets", default="digits")
    parser.add_argument("--bounds", default="w4a4,w3a3")
    parser.add_argument("--variants", default="gumbel,score,gumbel+prune")
    parser.add_argument("--configs", type=int, default=8)
    parser.add_argument("--no-cgmq", action="store_true", help="leave out the CGMQ column (its own table has it)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training run")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    parser.add_argument("--section", default=None, help="BENCHMARKS.md section (default: dnas-<part>)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = search_part(args, seeds) if args.part == "search" else grid_part(args, seeds)
    publish(args.section or f"dnas-{args.part}", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
