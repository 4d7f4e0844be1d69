"""Quantization core vs FP32 vs Brevitas: LeNet-5 on digits and Fashion-MNIST (BENCHMARK_PROTOCOL.md).

    bash benchmarks/setup.sh && .venv-bench/bin/python -m benchmarks.quant_vs_brevitas

Every conv and linear is quantized, first and last included, at W8A8 / W4A4 / W2A2, trained from scratch with the
reference recipe (Adam lr 1e-3; digits: batch 64, 30 epochs; Fashion-MNIST: batch 128, 15 epochs), seeds 0, 1, 2.
bitsmith: LSQ (learned scales, per-channel weights, activation quantizer at the input of every conv/linear).
Brevitas: Int8WeightPerChannelFloat weights and Uint8ActPerTensorFloat activations (QuantIdentity on the input,
QuantReLU after each ReLU, i.e. at the input of the next layer) at the same bit widths, trained by the same Trainer.
Step time: zero_grad + forward + backward + Adam step on the same batches, all variants interleaved in one
process, median over rounds, reported as a ratio to FP32.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks._common import ROOT, SETTINGS, environment, mean_std, pm, reference_config, step_times, update_section
from bitsmith import _io, data, zoo
from bitsmith.engine import seeding, train
from bitsmith.quant import QConfig, quantize

BITS = (8, 4, 2)


def brevitas_lenet(bits: int, in_channels: int, image_size: tuple[int, int], num_classes: int) -> nn.Module:
    """LeNet-5 of the protocol built from Brevitas layers, every conv/linear and its input quantized at ``bits``."""
    import brevitas.nn as qnn
    from brevitas.quant import Int8WeightPerChannelFloat, Uint8ActPerTensorFloat

    w = {"weight_quant": Int8WeightPerChannelFloat, "weight_bit_width": bits}
    flat = 16 * (image_size[0] // 4) * (image_size[1] // 4)
    return nn.Sequential(
        qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=bits),
        qnn.QuantConv2d(in_channels, 6, 5, padding=2, **w), qnn.QuantReLU(bit_width=bits), nn.MaxPool2d(2),
        qnn.QuantConv2d(6, 16, 5, padding=2, **w), qnn.QuantReLU(bit_width=bits), nn.MaxPool2d(2),
        nn.Flatten(),
        qnn.QuantLinear(flat, 120, **w), qnn.QuantReLU(bit_width=bits),
        qnn.QuantLinear(120, 84, **w), qnn.QuantReLU(bit_width=bits),
        qnn.QuantLinear(84, num_classes, **w),
    )


def build(variant: str, ds, seed: int) -> nn.Module:
    """A freshly initialised model for ``variant`` ("fp32", "bitsmith-w4a4", "brevitas-w4a4", ...)."""
    seeding.seed_everything(seed)
    shape = (ds.in_channels, *ds.image_size)
    if variant == "fp32":
        return zoo.create_model("lenet5", ds.num_classes, ds.in_channels, tuple(ds.image_size))
    lib, wa = variant.split("-")
    bits = int(wa[1:wa.index("a")])
    if lib == "brevitas":
        return brevitas_lenet(bits, ds.in_channels, tuple(ds.image_size), ds.num_classes)
    model = zoo.create_model("lenet5", ds.num_classes, ds.in_channels, tuple(ds.image_size))
    return quantize(model, QConfig(weight_bits=bits, act_bits=bits, first_last_bits=None, method="lsq"),
                    example_input_shape=shape)


def variants() -> list[str]:
    return ["fp32"] + [f"{lib}-w{b}a{b}" for b in BITS for lib in ("bitsmith", "brevitas")]


def accuracy_run(dataset: str, variant: str, seed: int, out: Path) -> dict:
    path = out / f"{dataset}-{variant}-s{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    cfg = reference_config("lenet5", dataset, seed, 2)
    ds = data.get(dataset, split="train")
    t0 = time.perf_counter()
    result = train(cfg, model=build(variant, ds, seed), quiet=True)
    row = {"dataset": dataset, "variant": variant, "seed": seed, "test_acc": result.metrics["test_acc"],
           "wall_s": time.perf_counter() - t0}
    _io.write_json(path, row)
    print(json.dumps(row), flush=True)
    return row


def variant_step_times(dataset: str) -> dict[str, float]:
    """Median step time (ms) of every variant (see ``_common.step_times``)."""
    ds = data.get(dataset, split="train")
    x, y = ds.tensors()
    return step_times({v: build(v, ds, 0) for v in variants()}, x, y, SETTINGS[dataset]["batch_size"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,fashion-mnist")
    parser.add_argument("--seeds", default="0,1,2", help="seeds on digits")
    parser.add_argument("--fmnist-seeds", default="0,1,2", help="seeds on Fashion-MNIST")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "quant")
    args = parser.parse_args()
    torch.set_num_threads(2)
    import brevitas

    seeds_of = {"digits": [int(s) for s in args.seeds.split(",")],
                "fashion-mnist": [int(s) for s in args.fmnist_seeds.split(",")]}
    lines = [
        "## Quantization core: FP32 vs bitsmith LSQ vs Brevitas (LeNet-5)",
        "",
        f"Measured {environment()}, brevitas {brevitas.__version__}. " + " ".join(__doc__.split("\n\n")[2].split()),
        "",
        "Command: `bash benchmarks/setup.sh && .venv-bench/bin/python -m benchmarks.quant_vs_brevitas`",
        "",
        "| dataset | variant | seeds | test accuracy (%) | Δ vs FP32 (pt) | step ms | step / FP32 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for dataset in args.datasets.split(","):
        timing = variant_step_times(dataset)
        seeds = seeds_of[dataset]
        accs = {v: [accuracy_run(dataset, v, s, args.out)["test_acc"] for s in seeds] for v in variants()}
        fp32 = mean_std(accs["fp32"])[0]
        for v in variants():
            delta = 100 * (mean_std(accs[v])[0] - fp32)
            lines.append(f"| {dataset} | {v} | {len(seeds)} | {pm(accs[v])} | {delta:+.2f} | {timing[v]:.2f} | "
                         f"{timing[v] / timing['fp32']:.2f}× |")
    lines += ["", "± is the sample standard deviation over seeds (0 with a single seed)."]
    update_section("quant-core", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
