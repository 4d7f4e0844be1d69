"""Time ``trace`` + ``model_cost`` of a zoo model on CPU (median of 5 after one warm-up) and print a Markdown row.

    python -m benchmarks.bench_cost                 # resnet18 at 3x32x32, the published figure (target < 1 s)
    python -m benchmarks.bench_cost --model resnet20
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import torch

from benchmarks._common import cpu_name, update_section
from bitsmith.cost import model_cost
from bitsmith.graph import trace
from bitsmith.zoo import create_model


def time_trace_and_cost(name: str, shape: tuple[int, int, int], repeats: int) -> tuple[float, list[float]]:
    """Median and all wall times (s) of trace + model_cost at W4A4 for a freshly built ``name``."""
    model = create_model(name, in_channels=shape[0], image_size=shape[1:])
    model_cost(trace(model, shape), weight_bits=4, act_bits=4)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model_cost(trace(model, shape), weight_bits=4, act_bits=4)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main() -> None:
    """Parse arguments, time, print one Markdown table row."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--input", default="3x32x32", help="CxHxW")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="put the row into docs/BENCHMARKS.md")
    args = parser.parse_args()
    shape = tuple(int(d) for d in args.input.split("x"))
    torch.set_num_threads(2)
    median, times = time_trace_and_cost(args.model, shape, args.repeats)
    spread = f"{min(times):.3f}-{max(times):.3f}"
    rows = [
        "| what | model | input | median s (min-max) | target | torch | CPU | date |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| trace + model_cost | {args.model} | {args.input} | {median:.3f} ({spread}) | < 1 s | "
        f"{torch.__version__} | {cpu_name()}, 2 threads | "
        f"{datetime.date.today().isoformat()} |",
    ]
    print("\n".join(rows))
    if args.write:
        update_section("cost-speed", "\n".join([
            "## Cost model speed", "",
            "Trace (torch.fx + shape propagation, one forward pass) plus exact per-layer cost at W4A4, median of "
            f"{args.repeats} after a warm-up.", "",
            f"Command: `python -m benchmarks.bench_cost --model {args.model} --input {args.input} --write`", "",
            *rows]))


if __name__ == "__main__":
    main()
