"""Training precision: bfloat16 autocast (``--precision bf16``) against float32, for accuracy and step time.

Accuracy: float training with the reference recipe of BENCHMARK_PROTOCOL.md and LSQ W4A4 QAT fine-tuning of that
float run (10 epochs, cosine lr 1e-4, every conv/linear quantized, first and last included), each in both
precisions and with several seeds; evaluation is float32 in every row. Step time: float and LSQ W4A4 models, fp32
vs bf16 forward, interleaved in one process (protocol timing: 2 threads, full batches, median).

    bash benchmarks/setup.sh
    .venv-bench/bin/python -m benchmarks.precision --models lenet5,resnet20 --datasets digits --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from benchmarks._common import (
    ROOT,
    SETTINGS,
    cpu_flags,
    environment,
    mean_std,
    pm,
    publish,
    reference_config,
    step_times,
)
from bitsmith import _io, data, quantize, runs, zoo
from bitsmith.engine import train
from bitsmith.quant import QConfig

OUT = ROOT / "benchmarks" / "out" / "precision"
PRECISIONS = ("fp32", "bf16")


def float_run(model: str, dataset: str, precision: str, seed: int, threads: int) -> Path:
    """The float run of the reference recipe in ``precision`` (reused when finished)."""
    out = OUT / "runs" / f"{model}-{dataset}-{precision}-s{seed}"
    if not runs.run_finished(out):
        train(reference_config(model, dataset, seed, threads, precision=precision), out, quiet=True)
    return out


def qat_run(model: str, dataset: str, precision: str, seed: int, threads: int) -> Path:
    """LSQ W4A4 fine-tuning, in ``precision``, of the float32 run with the same seed (reused when finished)."""
    source = float_run(model, dataset, "fp32", seed, threads)
    out = OUT / "runs" / f"{model}-{dataset}-w4a4-{precision}-s{seed}"
    if not runs.run_finished(out):
        runs.quantize_run(source, QConfig(weight_bits=4, act_bits=4, first_last_bits=None), out, seed=seed,
                          num_threads=threads, precision=precision, quiet=True)
    return out


def result(run: Path) -> dict:
    """Test accuracy and training wall time of a finished run (cached beside it as JSON)."""
    path = run.with_suffix(".json")
    if not path.exists():
        epochs = [r for r in runs.read_metrics(run) if r["type"] == "epoch"]
        _io.write_json(path, {"test_acc": runs.final_run_metrics(run)["test_acc"],
                              "train_s": sum(r["epoch_time_s"] for r in epochs)})
    return json.loads(path.read_text())


def timing(model_name: str, dataset: str) -> dict[str, float]:
    """Step times (ms) of the float and the W4A4 model, each with an fp32 and a bf16 forward, and bf16 on NHWC."""
    torch.set_num_threads(2)
    ds = data.get(dataset, split="train")
    x, y = ds.tensors()
    torch.manual_seed(0)
    plain = zoo.create_model(model_name, ds.num_classes, ds.in_channels, tuple(ds.image_size))
    example = (ds.in_channels, *ds.image_size)
    qmodel = quantize(plain, QConfig(weight_bits=4, act_bits=4, first_last_bits=None), example_input_shape=example)
    nhwc = {kind: copy.deepcopy(m).to(memory_format=torch.channels_last)
            for kind, m in (("float", plain), ("W4A4", qmodel))}
    models = {"float fp32": plain, "float bf16": plain, "float bf16 NHWC": nhwc["float"],
              "W4A4 fp32": qmodel, "W4A4 bf16": qmodel, "W4A4 bf16 NHWC": nhwc["W4A4"]}
    return step_times(models, x, y, SETTINGS[dataset]["batch_size"], bf16=[v for v in models if "bf16" in v],
                      channels_last=[v for v in models if "NHWC" in v])


def _speed(times: dict[str, float], kind: str) -> str:
    """The step-time cells of one model kind: fp32, bf16 and bf16 + NHWC in ms, then the two ratios."""
    t32, t16, nhwc = (times[f"{kind} {v}"] for v in ("fp32", "bf16", "bf16 NHWC"))
    return f"{t32:.1f} | {t16:.1f} | {nhwc:.1f} | {t16 / t32:.2f}x | {nhwc / t32:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lenet5,resnet20")
    parser.add_argument("--datasets", default="digits")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training run")
    parser.add_argument("--time-also", default="", help="MODEL:DATASET,... timed only (no accuracy runs)")
    parser.add_argument("--runs-only", action="store_true", help="train the runs, publish nothing")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    models, datasets = args.models.split(","), args.datasets.split(",")
    rows = []
    for dataset in datasets:
        for model in models:
            acc = {}
            for precision in PRECISIONS:
                acc[("float", precision)] = [result(float_run(model, dataset, precision, s, args.threads))
                                             for s in seeds]
                acc[("W4A4", precision)] = [result(qat_run(model, dataset, precision, s, args.threads)) for s in seeds]
            if args.runs_only:
                continue
            times = timing(model, dataset)
            for kind in ("float", "W4A4"):
                a32, a16 = ([r["test_acc"] for r in acc[(kind, p)]] for p in PRECISIONS)
                w32, w16 = (mean_std([r["train_s"] for r in acc[(kind, p)]])[0] for p in PRECISIONS)
                rows.append(f"| {model} | {dataset} | {kind} | {pm(a32)} | {pm(a16)} | "
                            f"{100 * (mean_std(a16)[0] - mean_std(a32)[0]):+.2f} | {_speed(times, kind)} | "
                            f"{w16 / w32:.2f}x |")
    if args.runs_only:
        return
    for pair in filter(None, args.time_also.split(",")):
        model, dataset = pair.split(":")
        times = timing(model, dataset)
        for kind in ("float", "W4A4"):
            rows.append(f"| {model} | {dataset} | {kind} | – | – | – | {_speed(times, kind)} | – |")
    command = (f".venv-bench/bin/python -m benchmarks.precision --models {args.models} --datasets {args.datasets} "
               f"--seeds {args.seeds} --threads {args.threads}"
               + (f" --time-also {args.time_also}" if args.time_also else ""))
    lines = [
        "## Training precision: bfloat16 autocast vs float32",
        "",
        f"Measured {environment()}; CPU bfloat16 instructions: {cpu_flags() or 'none reported'}. Float rows: the "
        "reference recipe of BENCHMARK_PROTOCOL.md from scratch; W4A4 rows: LSQ QAT (10 epochs, cosine lr 1e-4, "
        "every conv and linear quantized, first and last included) of the float32 run of the same seed. bf16 = "
        "`--precision bf16`: the training forward pass under bfloat16 autocast (convolutions and matrix products), "
        "with parameters, optimizer state, quantizers and the loss in float32 (NHWC: `--channels-last` on top, "
        "conv weights and batches in channels-last memory order; timed only); every accuracy is evaluated in "
        f"float32. {len(seeds)} seeds, mean ± std. Step time: median ms of one training step at 2 threads, both "
        "precisions interleaved in one process on the same model; wall time: ratio of the runs' mean training time "
        f"({args.threads} thread(s) per run; other jobs may have shared the CPU).",
        "",
        f"Command: `bash benchmarks/setup.sh && {command}`",
        "",
        "| model | dataset | model kind | fp32 accuracy (%) | bf16 accuracy (%) | Δ bf16 − fp32 (pt) | fp32 step (ms) "
        "| bf16 step (ms) | bf16 + NHWC step (ms) | step bf16 / fp32 | step bf16 + NHWC / fp32 | "
        "wall time bf16 / fp32 |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ]
    publish("precision", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
