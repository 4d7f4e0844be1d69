"""``bitsmith export``: a quantized run as an ONNX file (QDQ, parity-checked with onnxruntime) or a packed file."""

from __future__ import annotations

from pathlib import Path

import typer

from bitsmith.cli._common import console
from bitsmith.errors import BitsmithError

FORMATS = ("onnx", "packed")


def export_cmd(
    run: Path = typer.Argument(..., help="run directory of a quantized model (bitsmith quantize, directq, ...)"),
    fmt: str = typer.Option("onnx", "--format", help="onnx (QuantizeLinear/DequantizeLinear) | packed (safetensors "
                                                     "with bit-packed weights)"),
    out: Path = typer.Option(..., help="file to write"),
    opset: int | None = typer.Option(None, help="ONNX opset (default 13, the first with per-channel QDQ)"),
    check: bool = typer.Option(True, "--check/--no-check", help="ONNX: onnxruntime parity check on the run's test "
                                                                "split before writing"),
    keep_bn: bool = typer.Option(False, "--keep-bn", help="ONNX: keep BatchNorms that follow a quantized conv as "
                                                          "float ops instead of folding them into int32 biases"),
    threads: int | None = typer.Option(None, help="torch / onnxruntime CPU threads"),
) -> None:
    """Export a quantized run: ONNX in QDQ form (BatchNorm folded, parity-checked) or a packed safetensors file."""
    import torch

    from bitsmith import export, runs
    from bitsmith.engine import load_split

    if fmt not in FORMATS:
        raise BitsmithError(f"--format {fmt!r} is not known; accepted: {', '.join(FORMATS)}")
    if fmt == "packed" and (opset is not None or keep_bn):
        raise BitsmithError("--opset and --keep-bn apply to --format onnx only")
    if out.is_dir():
        raise BitsmithError(f"--out {out} is a folder; give a file name")
    config = runs.read_config(run)
    float_hint = (f"{run} holds a float model; quantize it first: bitsmith quantize --from {run} --out QUANTIZED_RUN "
                  "(--ptq to calibrate only)")
    if not config.get("model_transforms"):
        raise BitsmithError(float_hint)
    if threads:
        torch.set_num_threads(threads)
    model = runs.load_model(run)
    if not export.is_quantized(model):
        raise BitsmithError(float_hint)
    if fmt == "packed":
        summary = export.save_packed(model, out, config=config)
        console.print(f"packed: {out}  {summary.summary()}")
        return
    test = load_split(runs.train_config(run), "test")
    x, y = test.tensors()
    result = export.to_onnx(model, out, (test.in_channels, *test.image_size),
                            opset=opset or export.DEFAULT_OPSET, fold_bn=not keep_bn, check=check, data=(x, y),
                            threads=threads)
    kept = f", {len(result.unfolded_bn)} kept as float BatchNormalization" if result.unfolded_bn else ""
    console.print(f"ONNX (QDQ, opset {result.opset}): {out}  {result.size_bytes / 1000:.1f} kB; "
                  f"BatchNorm folded: {len(result.folded_bn)}{kept}")
    if result.parity is not None:
        console.print(f"parity with PyTorch (onnxruntime, test split): {result.parity.summary()}")


def register(app: typer.Typer) -> None:
    """Add ``bitsmith export``."""
    app.command("export")(export_cmd)
