"""CGMQ under BOP bounds equal to the uniform W8A8 / W4A4 / W2A2 BOPs vs uniform LSQ at those widths (issue 7).

    bash benchmarks/setup.sh && .venv-bench/bin/python -m benchmarks.cgmq --models lenet5 --datasets digits

Both train from scratch with the reference recipe of BENCHMARK_PROTOCOL.md (Adam lr 1e-3; digits: batch 64,
30 epochs; Fashion-MNIST: batch 128, 15 epochs), every conv and linear quantized, first and last included.
CGMQ: weight gates per output channel or per layer, activation gates per layer, widths 2/4/8 (the integer
widths the uniform rows use; with 16/32 in the list the cheap classifier layers stay at 16-32 bits and overfit
digits like the FP32 model), gate lr 1e-2 with the rms gate step and the constraint pushing only gates that are
on (the rule since 2026-12-02), CGGD factor 2, gates frozen for the last 30 % of the epochs, all gates on at the
start (8/8 bits). Uniform LSQ: the same runs as the DirectQ benchmark's "lsq"
rows (benchmarks/out/directq cache). BOPs are per sample, counted by bitsmith.cost on the final hard gates.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks._common import ROOT, environment, mean_std, pm, publish, reference_config
from benchmarks.directq import OUT as LSQ_OUT
from benchmarks.directq import accuracy_run as uniform_run
from bitsmith import _io, data, zoo
from bitsmith.engine import seeding, train
from bitsmith.methods import cgmq

# bound name -> (budget relative to W8A8, the uniform width with those BOPs)
BOUNDS = {"w8a8": (1.0, 8), "w4a4": (0.25, 4), "w3a3": (0.140625, 3), "w2a2": (0.0625, 2)}
OUT = ROOT / "benchmarks" / "out" / "cgmq"


def cgmq_run(model_name: str, dataset: str, bound: str, granularity: str, seed: int, out: Path,
             threads: int) -> dict:
    """Train CGMQ at one bound, granularity and seed (cached as JSON in ``out``)."""
    path = out / f"{model_name}-{dataset}-{bound}-{granularity}-s{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    ds = data.get(dataset, split="train")
    shape = (ds.in_channels, *ds.image_size)
    seeding.seed_everything(seed)
    model = zoo.create_model(model_name, ds.num_classes, ds.in_channels, tuple(ds.image_size))
    config = cgmq.CGMQConfig(bop_budget=BOUNDS[bound][0], relative_to="w8a8", granularity=granularity,
                             bits=[2, 4, 8])
    qmodel = cgmq.prepare(model, config, shape)
    callback = cgmq.CGMQCallback(qmodel, config, shape)
    cfg = reference_config(model_name, dataset, seed, threads)
    t0 = time.perf_counter()
    metrics = train(cfg, model=qmodel, callbacks=[callback], quiet=True).metrics
    row = {"model": model_name, "dataset": dataset, "bound": bound, "granularity": granularity, "seed": seed,
           "test_acc": metrics["test_acc"],
           "bops": metrics["bops"], "bops_bound": metrics["bops_bound"], "bound_met": metrics["bound_met"],
           "projected_gates": metrics["projected_gates"], "wall_s": time.perf_counter() - t0}
    _io.write_json(path, row)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,resnet20")
    parser.add_argument("--datasets", default="digits,fashion-mnist")
    parser.add_argument("--bounds", default="w8a8,w4a4,w2a2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--granularities", default="channel,layer")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each training run")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    parser.add_argument("--section", default="cgmq", help="BENCHMARKS.md section to (re)write")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = [
        f"## CGMQ vs uniform LSQ at the same BOPs: {args.models} on {args.datasets}",
        "",
        f"Measured {environment()}. " + " ".join(__doc__.split("\n\n")[2].split()),
        "",
        f"Command: `bash benchmarks/setup.sh && .venv-bench/bin/python -m benchmarks.cgmq --models {args.models} "
        f"--datasets {args.datasets} --bounds {args.bounds} --granularities {args.granularities} --seeds {args.seeds} "
        f"--threads {args.threads}{'' if args.section == 'cgmq' else ' --section ' + args.section}`",
        "",
        "| model | dataset | bound (= uniform BOPs) | CGMQ gates | seeds | CGMQ accuracy (%) | uniform LSQ "
        "accuracy (%) | Δ (pt) | CGMQ BOPs / bound | bound met | runs projected |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model_name in args.models.split(","):
        for dataset in args.datasets.split(","):
            for bound, granularity in [(b, g) for b in args.bounds.split(",") for g in args.granularities.split(",")]:
                width = BOUNDS[bound][1]
                rows = [cgmq_run(model_name, dataset, bound, granularity, s, args.out, args.threads) for s in seeds]
                uniform = [uniform_run(model_name, dataset, "lsq", width, s, LSQ_OUT, args.threads)["test_acc"]
                           for s in seeds]
                acc = [r["test_acc"] for r in rows]
                ratio = max(r["bops"] / r["bops_bound"] for r in rows)
                met = sum(r["bound_met"] for r in rows)
                projected = sum(r["projected_gates"] > 0 for r in rows)
                delta = 100 * (mean_std(acc)[0] - mean_std(uniform)[0])
                lines.append(f"| {model_name} | {dataset} | {bound.upper()} | {granularity} | {len(seeds)} | {pm(acc)} "
                             f"| {pm(uniform)} | {delta:+.2f} | ≤ {ratio:.3f} | {met}/{len(rows)} | "
                             f"{projected}/{len(rows)} |")
    lines += ["", "± is the sample standard deviation over seeds. \"CGMQ BOPs / bound\" is the largest ratio over "
              "the seeds; \"runs projected\" counts runs in which the projection switched gates off (when the "
              "gates froze for the last 30 % of the epochs, or after the last step)."]
    publish(args.section, lines, write=not args.no_write)


if __name__ == "__main__":
    main()
