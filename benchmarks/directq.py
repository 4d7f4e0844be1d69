"""DirectQ vs the quantization core (LSQ, PACT) vs Brevitas, with DirectQ's ablations (issue 6).

    bash benchmarks/setup.sh && .venv-bench/bin/python -m benchmarks.directq --models lenet5 --datasets digits

Every conv and linear is quantized, first and last included, at W{b}A{b}, trained from scratch with the reference
recipe of BENCHMARK_PROTOCOL.md (Adam lr 1e-3; digits: batch 64, 30 epochs; Fashion-MNIST: batch 128, 15
epochs). Variants: FP32; core LSQ and PACT (per-channel weights); DirectQ with direct weights only
(dq-weights), channel-aware activations only (dq-acts) and both (dq-both), one activation step size per tensor;
Brevitas (Int8WeightPerChannelFloat weights, Uint8ActPerTensorFloat inputs of every conv/linear) at the same
widths, trained by the same Trainer. Step time: interleaved in one process on identical batches, median,
as a ratio to LSQ's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

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
from bitsmith import _io, data, zoo
from bitsmith.engine import seeding, train
from bitsmith.methods import directq
from bitsmith.quant import QConfig, quantize

VARIANTS = ("fp32", "lsq", "pact", "dq-weights", "dq-acts", "dq-both", "brevitas")
OUT = ROOT / "benchmarks" / "out" / "directq"


def brevitas_model(model: nn.Module, bits: int) -> nn.Module:
    """``model`` with every Conv2d/Linear swapped for its Brevitas layer, weight and input quantized at ``bits``."""
    import brevitas.nn as qnn
    from brevitas.quant import Int8WeightPerChannelFloat, Uint8ActPerTensorFloat

    quant = {"weight_quant": Int8WeightPerChannelFloat, "weight_bit_width": bits,
             "input_quant": Uint8ActPerTensorFloat, "input_bit_width": bits}
    for name, module in list(model.named_children()):
        if isinstance(module, nn.Conv2d):
            layer = qnn.QuantConv2d(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                                    padding=module.padding, groups=module.groups, bias=module.bias is not None,
                                    **quant)
        elif isinstance(module, nn.Linear):
            layer = qnn.QuantLinear(module.in_features, module.out_features, bias=module.bias is not None, **quant)
        else:
            brevitas_model(module, bits)
            continue
        layer.load_state_dict(module.state_dict(), strict=False)
        setattr(model, name, layer)
    return model


def dq_options(variant: str) -> tuple[str, dict]:
    """``"dq-acts+act_trim=0"`` → ``("acts", {"act_trim": 0.0})``: a DirectQ variant, and DirectQConfig options
    that differ from the defaults (numbers and names), each after a ``+``."""
    ideas, *pairs = variant[3:].split("+")
    kinds = {"int": int, "float": float, "str": str}
    kind_of = {f.name: kinds[f.type] for f in dataclasses.fields(directq.DirectQConfig)
               if f.type in kinds and f.name not in ("weight_bits", "act_bits", "seed")}
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in kind_of or not value:
            raise ValueError(f"DirectQ variant option {pair!r} in {variant!r}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(sorted(kind_of))}")
        options[key] = kind_of[key](value)
    return ideas, options


def dq_config(variant: str, bits: int, seed: int) -> directq.DirectQConfig:
    """The DirectQConfig a DirectQ variant trains with (the library's defaults where the variant sets nothing)."""
    ideas, options = dq_options(variant)
    return directq.DirectQConfig.ablation(ideas, weight_bits=bits, act_bits=bits, first_last_bits=None, seed=seed,
                                          **options)


def build(variant: str, model_name: str, ds, bits: int, seed: int) -> nn.Module:
    """A freshly initialised (seeded) model for one variant."""
    seeding.seed_everything(seed)
    shape = (ds.in_channels, *ds.image_size)
    model = zoo.create_model(model_name, ds.num_classes, ds.in_channels, tuple(ds.image_size))
    if variant == "fp32":
        return model
    if variant in ("lsq", "pact"):
        return quantize(model, QConfig(weight_bits=bits, act_bits=bits, first_last_bits=None, method=variant),
                        example_input_shape=shape)
    if variant.startswith("dq-"):
        return directq.prepare(model, dq_config(variant, bits, seed), example_input_shape=shape)
    if variant == "brevitas":
        return brevitas_model(model, bits)
    raise ValueError(f"unknown variant {variant!r}; accepted: {', '.join(VARIANTS)}")


def accuracy_run(model_name: str, dataset: str, variant: str, bits: int, seed: int, out: Path,
                 threads: int = 2, scheduler: str = "none", changes: dict | None = None) -> dict:
    """Train one (model, dataset, variant, bits, seed) with the reference recipe (or its learning-rate
    ``scheduler``: "cosine", and the faster recipe's TrainConfig ``changes``); cached as JSON in ``out``. A DirectQ
    row records its full DirectQConfig, and a cached row whose config differs from what the variant means now (a
    default changed since) is trained again rather than reused; rows cached before 2026-12-07 carry none."""
    changes = changes or {}
    tag = ("fp32" if variant == "fp32" else f"{variant}-w{bits}a{bits}") + speedup_tag(changes)
    tag += "" if scheduler == "none" else f"-{scheduler}"
    path = out / f"{model_name}-{dataset}-{tag}-s{seed}.json"
    settings = dataclasses.asdict(dq_config(variant, bits, seed)) if variant.startswith("dq-") else None
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("directq", settings) == settings:
            return cached
        print(f"{path.name}: cached with another DirectQConfig than the variant's today; training it again", flush=True)
    cfg = reference_config(model_name, dataset, seed, threads, scheduler=scheduler, **changes)
    ds = data.get(dataset, split="train")
    t0 = time.perf_counter()
    print(f"training {path.stem}", file=sys.stderr, flush=True)  # its epochs follow: a bar, or a line each in a log
    result = train(cfg, model=build(variant, model_name, ds, bits, seed))
    row = {"model": model_name, "dataset": dataset, "variant": variant, "bits": bits, "seed": seed,
           "test_acc": result.metrics["test_acc"], "wall_s": time.perf_counter() - t0}
    if settings is not None:
        row["directq"] = settings
    _io.write_json(path, row)
    print(json.dumps(row), flush=True)
    return row


def variant_step_times(model_name: str, dataset: str, bits: int, variants: list[str],
                       changes: dict | None = None) -> dict[str, float]:
    """Median step time (ms) of each variant (see ``_common.step_times``), under the faster recipe's ``changes``
    when given, as its runs trained."""
    changes = changes or {}
    ds = data.get(dataset, split="train")
    x, y = ds.tensors()
    models = {v: build(v, model_name, ds, bits, 0) for v in variants}
    nhwc = list(variants) if changes.get("channels_last") else []
    for v in nhwc:
        models[v] = models[v].to(memory_format=torch.channels_last)
    bf16 = list(variants) if changes.get("precision") == "bf16" else []
    return step_times(models, x, y, SETTINGS[dataset]["batch_size"], rounds=5, steps=10, warmup=3, bf16=bf16,
                      channels_last=nhwc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,resnet20")
    parser.add_argument("--datasets", default="digits,fashion-mnist")
    parser.add_argument("--bits", default="2,3,4")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated; a DirectQ variant may set DirectQConfig numbers after '+', e.g. "
                             "dq-acts+act_trim=0+act_loss_weight=0.01")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    parser.add_argument("--section", default="directq", help="BENCHMARKS.md section to (re)write")
    parser.add_argument("--runs-only", action="store_true", help="train (and cache) the runs; no timing, no table")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each training run")
    parser.add_argument("--scheduler", default="none", help="learning-rate schedule: none (the reference) | cosine")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="training precision of every run (bf16: autocast, stated in the table)")
    parser.add_argument("--channels-last", action="store_true", help="train every run in NHWC")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    changes = speedups(args.precision, args.channels_last)
    import brevitas

    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    lines = [
        f"## DirectQ vs LSQ / PACT (core) vs Brevitas: {args.models} on {args.datasets}"
        + ("" if args.scheduler == "none" else f", {args.scheduler} learning rate"),
        "",
        f"Measured {environment()}, brevitas {brevitas.__version__}. " + " ".join(__doc__.split("\n\n")[2].split())
        + speedup_sentence(changes),
        "",
        f"Command: `bash benchmarks/setup.sh && .venv-bench/bin/python -m benchmarks.directq --models {args.models} "
        f"--datasets {args.datasets} --bits {args.bits} --seeds {args.seeds} --threads {args.threads} "
        f"--scheduler {args.scheduler}{speedup_flags(changes)}"
        f"{'' if args.variants == ','.join(VARIANTS) else ' --variants ' + args.variants}"
        f"{'' if args.section == 'directq' else ' --section ' + args.section}`",
        "",
        "| model | dataset | W/A | variant | seeds | test accuracy (%) | Δ vs LSQ (pt) | step / LSQ |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    grid = [(m, d, int(b)) for m in args.models.split(",") for d in args.datasets.split(",")
            for b in args.bits.split(",")]
    def seed_accs(m: str, d: str, b: int, v: str) -> list[float]:
        return [accuracy_run(m, d, v, b, s, args.out, args.threads, args.scheduler, changes)["test_acc"] for s in seeds]

    accs_of = {(m, d, b): {v: seed_accs(m, d, b, v) for v in variants} for m, d, b in grid}
    if args.runs_only:
        return
    torch.set_num_threads(2)
    for model_name, dataset, bits in grid:
        timed = [v for v in variants if v != "fp32"]
        timing = variant_step_times(model_name, dataset, bits, timed, changes) if "lsq" in timed else {}
        accs = accs_of[(model_name, dataset, bits)]
        ref = mean_std(accs["lsq"])[0] if "lsq" in accs else None
        for v in variants:
            delta = f"{100 * (mean_std(accs[v])[0] - ref):+.2f}" if ref is not None else "–"
            ratio = f"{timing[v] / timing['lsq']:.2f}×" if v in timing else "–"
            lines.append(f"| {model_name} | {dataset} | {bits}/{bits} | {v} | {len(seeds)} | {pm(accs[v])} "
                         f"| {delta} | {ratio} |")
    lines += ["", "± is the sample standard deviation over seeds."]
    publish(args.section, lines, write=not args.no_write)


if __name__ == "__main__":
    main()
