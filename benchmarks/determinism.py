"""What torch's fill of new tensors costs a training step under deterministic algorithms (engine/seeding.py).

``torch.use_deterministic_algorithms(True)`` also fills every freshly allocated tensor (NaN for floats) unless
``torch.utils.deterministic.fill_uninitialized_memory`` is False; the Trainer turns the fill off. This measures the
step's process CPU time with the fill on and off, alternating blocks of steps on one model in one process (so
machine load hits both alike), median over the blocks; reference batch size, the threads the first line names.

    bash benchmarks/setup.sh
    .venv-bench/bin/python -m benchmarks.determinism --models resnet20 --datasets fashion-mnist
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks._common import SETTINGS, environment, publish, train_step
from benchmarks.directq import build
from bitsmith import data
from bitsmith.engine import seeding

VARIANTS = ("fp32", "lsq", "dq-both")


def cpu_ms_per_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, blocks: int = 6,
                    steps: int = 3) -> dict[bool, float]:
    """Median process CPU time (ms) of a train step with the fill on (True) and off (False), alternating blocks
    of ``steps`` steps, each block after one untimed step in its setting."""
    model.train()
    step = train_step(model, x, y, batch)
    for i in range(3):
        step(i)
    times: dict[bool, list[float]] = {True: [], False: []}
    for b in range(blocks):
        for fill in (True, False):
            torch.utils.deterministic.fill_uninitialized_memory = fill
            step(0)
            t0 = time.process_time()
            for i in range(steps):
                step(b * steps + i + 1)
            times[fill].append(1000 * (time.process_time() - t0) / steps)
    seeding.deterministic_kernels()
    return {fill: statistics.median(t) for fill, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20")
    parser.add_argument("--datasets", default="fashion-mnist")
    parser.add_argument("--bits", type=int, default=2, help="weight and activation bits of the quantized variants")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the protocol's 2)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = ["## Deterministic kernels: the cost of torch's memory fill", "",
             f"Measured {environment()}. " + " ".join(__doc__.split("\n\n")[1].replace("``", "`").split()), "",
             f"Command: `bash benchmarks/setup.sh && .venv-bench/bin/python -m benchmarks.determinism --models "
             f"{args.models} --datasets {args.datasets} --bits {args.bits} --threads {args.threads}`", "",
             "| model | dataset | variant | CPU ms / step, fill on | fill off | off / on |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    for model_name in args.models.split(","):
        for dataset in args.datasets.split(","):
            ds = data.get(dataset, split="train")
            x, y = ds.tensors()
            for variant in VARIANTS:
                model = build(variant, model_name, ds, args.bits, 0)
                ms = cpu_ms_per_step(model, x, y, SETTINGS[dataset]["batch_size"])
                name = variant if variant == "fp32" else f"{variant} W{args.bits}A{args.bits}"
                lines.append(f"| {model_name} | {dataset} | {name} | {ms[True]:.0f} | {ms[False]:.0f} | "
                             f"{ms[False] / ms[True]:.3f} |")
    publish("engine-determinism", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
