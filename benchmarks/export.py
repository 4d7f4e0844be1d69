"""Deployment (issue 12): onnxruntime int8 (QDQ) vs FP32 onnxruntime vs FP32 PyTorch on ResNet-20, which kernels
onnxruntime runs, parity, and the size of the packed format.

    .venv/bin/pip install -e ".[dev,export]"
    .venv/bin/python -m benchmarks.export --threads 2              # writes section export-digits of BENCHMARKS.md
    .venv/bin/python -m benchmarks.export --threads 1 --no-write   # print only

Models: ResNet-20 trained on digits with the reference recipe (cached under benchmarks/out/export), quantized
W8A8 (and W7A8) by PTQ with BatchNorm folded before quantization (``bitsmith quantize --ptq --fold-bn``, MSE observer,
8 calibration batches), exported with ``bitsmith.export.to_onnx`` (opset 13, parity-checked on the test split).
FP32 onnxruntime runs the float model exported by the same writer (BN folded in float). Timing: inference on a
batch of 1 and of 64 test images, every variant in this process with the same thread count (torch threads and
onnxruntime intra-op threads), interleaved: ``--rounds`` rounds of ``--calls`` timed calls per variant after
warm-up; the median per call. onnxruntime uses all graph optimisations (ORT_ENABLE_ALL); the kernels it picked
are read from its optimised graph and from a profiled run (time per op type).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks._common import ROOT, environment, publish, reference_config
from bitsmith import export, runs
from bitsmith.engine import load_split, train
from bitsmith.export.parity import session
from bitsmith.quant import QConfig, calibrate, quantize

OUT = ROOT / "benchmarks" / "out" / "export"


def float_run(epochs: int, seed: int, threads: int) -> Path:
    """The trained float ResNet-20 run on digits (trained once, then reused)."""
    out = OUT / f"resnet20-fp32-e{epochs}-s{seed}"
    if not runs.run_finished(out):
        train(reference_config("resnet20", "digits", seed, threads, epochs=epochs), out, quiet=True)
    return out


def w8a8_run(source: Path, threads: int, residual_bits: int | None = None, weight_bits: int = 8) -> Path:
    """The W8A8 (or W``weight_bits``A8) PTQ run of ``source`` with BatchNorm folded before quantization (created
    once); with ``residual_bits`` the residual sums are quantized too."""
    suffix = f"-res{residual_bits}" if residual_bits else ""
    out = source.parent / f"{source.name}-w{weight_bits}a8-ptq-foldbn{suffix}"
    if not runs.run_finished(out) and not (out / "checkpoint.safetensors").exists():
        qcfg = QConfig(weight_bits=weight_bits, act_bits=8, fold_bn=True, residual_bits=residual_bits)
        runs.quantize_run(source, qcfg, out, ptq=True, observer="mse", num_threads=threads, quiet=True)
    return out


def ort_session(payload: bytes, threads: int, profile: str | None = None, optimized: str | None = None):
    """An onnxruntime CPU session with every graph optimisation, as the parity check and the timing use, that
    profiles its runs or saves its optimised graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    if optimized:
        options.optimized_model_filepath = optimized
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


def kernels(payload: bytes, x: torch.Tensor, threads: int) -> tuple[Counter, dict[str, float]]:
    """Op types of onnxruntime's optimised graph, and the share of node time per op type in a profiled run."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        optimized = str(Path(tmp) / "optimized.onnx")
        ort_session(payload, threads, optimized=optimized)
        ops = Counter(node.op_type for node in onnx.load(optimized).graph.node)
        sess = ort_session(payload, threads, profile=str(Path(tmp) / "profile"))
        for _ in range(10):
            sess.run(None, {"input": x.numpy()})
        events = json.loads(Path(sess.end_profiling()).read_text())
    spent: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            spent[event["args"]["op_name"]] += event["dur"]
    total = sum(spent.values()) or 1.0
    return ops, {op: t / total for op, t in sorted(spent.items(), key=lambda kv: -kv[1])}


def timings(variants: dict[str, Callable[[], object]], rounds: int, calls: int, warmup: int = 5) -> dict[str, float]:
    """Median wall time (ms) per call of each variant, interleaved over ``rounds`` rounds of ``calls`` calls."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for name, fn in variants.items():
            for _ in range(calls):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def speed_section(float_model: torch.nn.Module, qmodels: dict[str, tuple[Path, torch.nn.Module]],
                  args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> list[str]:
    """Parity, kernels and the timing table of each quantized model (label -> (run, model)) against FP32."""
    shape = tuple(x.shape[1:])
    exported = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (_, qmodel) in qmodels.items():
            path = Path(tmp) / f"{len(exported)}.onnx"
            exported[label] = (export.to_onnx(qmodel, path, shape, data=(x, y), threads=args.threads),
                               path.read_bytes())
    fp32_proto, _, _ = export.build_onnx(float_model, shape, allow_float=True)
    fp32 = fp32_proto.SerializeToString()
    fp32_parity = export.check_parity(float_model, fp32, (x, y), threads=args.threads, raise_on_mismatch=False)
    sessions = {"fp32": session(fp32, args.threads)}
    sessions.update({label: session(payload, args.threads) for label, (_, payload) in exported.items()})
    rows = {}
    for batch in (1, 64):
        xb = x[:batch]
        feed = {"input": xb.numpy()}

        def torch_call(model: torch.nn.Module = float_model, xb: torch.Tensor = xb) -> object:
            with torch.inference_mode():
                return model(xb)

        variants: dict[str, Callable[[], object]] = {"PyTorch FP32": torch_call}
        for label, (_, qmodel) in qmodels.items():
            variants[f"PyTorch fake-quant {label}"] = lambda xb=xb, m=qmodel: torch_call(m, xb)
        variants["onnxruntime FP32"] = lambda feed=feed: sessions["fp32"].run(None, feed)
        for label in qmodels:
            variants[f"onnxruntime int8 (QDQ), {label}"] = lambda feed=feed, k=label: sessions[k].run(None, feed)
        rows[batch] = timings(variants, args.rounds, args.calls if batch == 64 else 4 * args.calls)
    lines = [
        "## Deployment: onnxruntime int8 (QDQ) vs FP32 (ResNet-20, digits)",
        "",
        f"ResNet-20 trained on digits (run {next(iter(qmodels.values()))[0].name.split('-w8a8')[0]}), W8A8 PTQ with "
        "BatchNorm folded before quantization (`bitsmith quantize --ptq --fold-bn`), residual sums in float or "
        "quantized to 8 bits (`--residual-bits 8`), and the same with 7-bit weights (signed codes that fit int8 "
        "without the uint8 shift, so onnxruntime's u8s8 kernels run instead of u8u8; docs/EXPORT.md), each exported "
        "by `bitsmith export --format onnx` and parity-checked on the test split:",
        "",
    ]
    for label, (result, _) in exported.items():
        report = result.parity
        lines.append(f"- {label}: opset {result.opset}, {result.size_bytes / 1000:.0f} kB; {report.samples} images, "
                     f"argmax agreement {100 * report.agreement:.2f} %, accuracy onnxruntime "
                     f"{100 * report.onnx_accuracy:.2f} % vs PyTorch fake-quant {100 * report.torch_accuracy:.2f} %.")
    lines += [f"- FP32 ONNX {len(fp32) / 1000:.0f} kB; onnxruntime vs PyTorch agreement "
              f"{100 * fp32_parity.agreement:.2f} %.", "",
              f"Median wall time per inference call, {args.threads} thread(s) (torch and onnxruntime intra-op), "
              f"{args.rounds} interleaved rounds; speed-up relative to PyTorch FP32:", "",
              "| variant | batch 1 (ms) | speed-up | batch 64 (ms) | speed-up |",
              "| --- | ---: | ---: | ---: | ---: |"]
    base1, base64 = rows[1]["PyTorch FP32"], rows[64]["PyTorch FP32"]
    for name in rows[1]:
        lines.append(f"| {name} | {rows[1][name]:.3f} | {base1 / rows[1][name]:.2f}x | {rows[64][name]:.2f} | "
                     f"{base64 / rows[64][name]:.2f}x |")
    lines.append("")
    for label, (_, payload) in exported.items():
        ops, shares = kernels(payload, x[:64], args.threads)
        top = ", ".join(f"{op} {100 * share:.0f} %" for op, share in list(shares.items())[:6])
        integer = {op: n for op, n in ops.items()
                   if op.startswith(("QLinear", "QGemm", "MatMulInteger", "ConvInteger"))}
        lines += [f"Kernels onnxruntime ran for the int8 model, {label} (its optimised graph): "
                  f"{dict(ops.most_common())}; integer kernels: {integer or 'none'}. Share of node time (profiled, "
                  f"batch 64): {top}.", ""]
    lines.append(f"Environment: {environment()}; onnxruntime {_ort_version()}.")
    return lines


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def packed_section(float_model: torch.nn.Module, x_train: torch.Tensor, seed: int) -> list[str]:
    """Packed file sizes of the trained ResNet-20 at several weight widths (scales calibrated, sizes measured)."""
    shape = tuple(x_train.shape[1:])
    layers = [n for n, m in float_model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    rng = random.Random(seed)
    mixed = {name: {"weight_bits": [rng.choice((2, 3, 4, 8)) for _ in float_model.get_submodule(name).weight]}
             for name in layers}
    configs = {
        "W8 (all layers)": QConfig(weight_bits=8, act_bits=8, first_last_bits=None),
        "W4 (all layers)": QConfig(weight_bits=4, act_bits=8, first_last_bits=None),
        "W4, first/last W8": QConfig(weight_bits=4, act_bits=8),
        "W2 (all layers)": QConfig(weight_bits=2, act_bits=8, first_last_bits=None),
        "per channel 2/3/4/8 (random)": QConfig(act_bits=8, first_last_bits=None, overrides=mixed),
    }
    lines = [
        "",
        "### Packed format (`bitsmith export --format packed`)",
        "",
        "ResNet-20 (272 k parameters), BatchNorm unfolded (stored as float), scales calibrated on 8 training batches; "
        "FP32 = 4 bytes per parameter and BatchNorm statistic. The overhead is the float32 scales, biases, BatchNorm "
        "and the safetensors header.",
        "",
        "| weights | mean bits | file (kB) | bit-packed codes (kB) | other (kB) | FP32 (kB) | file / FP32 | "
        "codes / FP32 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for label, qcfg in configs.items():
            qmodel = quantize(float_model, qcfg, example_input_shape=shape)
            calibrate(qmodel, [x_train[i:i + 64] for i in range(0, 512, 64)], num_batches=8, observer="mse")
            summary = export.save_packed(qmodel, Path(tmp) / "model.safetensors")
            restored = export.load_packed(summary.path, model=quantize(float_model, qcfg, example_input_shape=shape))
            with torch.no_grad():
                exact = torch.equal(restored(x_train[:64]), qmodel.eval()(x_train[:64]))
            if not exact:
                raise SystemExit(f"{label}: the packed model does not restore bit for bit")
            bits = 8 * summary.code_bytes / sum(m.weight.numel() for n, m in qmodel.named_modules() if n in layers)
            other = (summary.size_bytes - summary.code_bytes) / 1000
            lines.append(f"| {label} | {bits:.2f} | {summary.size_bytes / 1000:.1f} | {summary.code_bytes / 1000:.1f} "
                         f"| {other:.1f} | {summary.fp32_bytes / 1000:.1f} | {summary.ratio:.3f} | "
                         f"{summary.code_bytes / summary.fp32_bytes:.3f} |")
    lines.append("")
    lines.append("Every packed model reloads bit for bit (eval-mode outputs equal on 64 training images).")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs of the float ResNet-20 (reference: 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--calls", type=int, default=10, help="timed calls per variant and round at batch 64 (4x at 1)")
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave BENCHMARKS.md alone")
    parser.add_argument("--section", default="export-digits", help="BENCHMARKS.md section to (re)write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = float_run(args.epochs, args.seed, args.threads)
    qruns = {"W8A8, residual sums float": w8a8_run(source, args.threads),
             "W8A8, residual sums 8-bit": w8a8_run(source, args.threads, residual_bits=8),
             "W7A8, residual sums 8-bit": w8a8_run(source, args.threads, residual_bits=8, weight_bits=7)}
    float_model = runs.load_model(source)
    qmodels = {label: (run, runs.load_model(run)) for label, run in qruns.items()}
    cfg = runs.train_config(source)
    x, y = load_split(cfg, "test").tensors()
    x_train, _ = load_split(cfg, "train").tensors()
    lines = speed_section(float_model, qmodels, args, x, y)
    lines += packed_section(float_model, x_train, args.seed)
    publish(args.section, lines, write=not args.no_write)


if __name__ == "__main__":
    main()
