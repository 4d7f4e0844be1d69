"""``bitsmith quantize``: quantization-aware fine-tuning (or post-training calibration) of a float run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from bitsmith.cli._common import (
    OUT_OPTION,
    QUIET_OPTION,
    THREADS_OPTION,
    channels_last_option,
    check_writable_out,
    console,
    flags,
    given_options,
    percent,
    precision_option,
)
from bitsmith.engine import distributed
from bitsmith.errors import BitsmithError


def quantize_cmd(
    source: Path = typer.Option(..., "--from", help="float run directory to start from"),
    wbits: int = typer.Option(4, help="weight bit width (2..8, 16; 32 = float)"),
    abits: int = typer.Option(4, help="activation bit width (2..8, 16; 32 = float)"),
    bits_file: Path | None = typer.Option(None, help="bits.json of per-layer widths (replaces --wbits/--abits)"),
    method: str = typer.Option("lsq", help="lsq | pact | minmax"),
    per_channel: bool = typer.Option(True, "--per-channel/--per-tensor", help="one weight scale per output channel"),
    first_last_bits: int = typer.Option(8, help="bit width of the first and last layers (0 = same as the rest)"),
    fold_bn: bool = typer.Option(False, "--fold-bn", help="fold BatchNorm into the preceding conv before QAT"),
    residual_bits: int = typer.Option(0, help="also quantize every input of each residual add at this width, each "
                                      "tensor once, so integer runtimes keep the convs and the sums integer (0 = "
                                      "residual sums float)"),
    ptq: bool = typer.Option(False, "--ptq", help="calibrate only (post-training quantization), no training"),
    observer: str = typer.Option("mse", help="calibration observer: minmax | percentile | mse"),
    calib_batches: int = typer.Option(8, help="batches used for calibration"),
    epochs: int = typer.Option(10, help="QAT epochs"),
    lr: float = typer.Option(1e-4, help="QAT learning rate"),
    scheduler: str = typer.Option("cosine", help="none | cosine | step"),
    seed: int = typer.Option(0, help="random seed"),
    threads: int | None = THREADS_OPTION,
    precision: str | None = precision_option(),
    channels_last: bool | None = channels_last_option(),
    out: Path = OUT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Quantize a trained float run: QAT fine-tuning with the Trainer, or PTQ calibration with --ptq."""
    from bitsmith import runs
    from bitsmith.quant import QConfig

    if bits_file is not None and not bits_file.is_file():
        raise BitsmithError(f"--bits-file {bits_file}: file not found")
    if bits_file is not None and given_options("wbits", "abits"):
        raise BitsmithError(f"use either {flags(given_options('wbits', 'abits'))} or --bits-file, not both")
    common = {"method": method, "per_channel": per_channel, "fold_bn": fold_bn,
              "first_last_bits": first_last_bits or None, "residual_bits": residual_bits or None}
    if bits_file is not None:
        qcfg = QConfig.from_bits(str(bits_file), **common)
        qcfg = dataclasses.replace(qcfg, bits_file=str(bits_file.resolve()))
    else:
        qcfg = QConfig(weight_bits=wbits, act_bits=abits, **common)
    check_writable_out(out)
    metrics = runs.quantize_run(source, qcfg, out, epochs=epochs, lr=lr, scheduler=scheduler, seed=seed,
                                num_threads=threads, ptq=ptq, observer=observer, calib_batches=calib_batches,
                                quiet=quiet, precision=precision, channels_last=channels_last)
    if distributed.is_main():
        runs.write_run_report(out)
        kind = "PTQ" if ptq else "QAT"
        console.print(f"{kind} {qcfg.weight_bits if bits_file is None else 'mixed'}/"
                      f"{qcfg.act_bits if bits_file is None else 'mixed'} bits: test accuracy "
                      f"{percent(metrics['test_acc'])}  run directory: {out}")
    distributed.shutdown()


def register(app: typer.Typer) -> None:
    """Add ``bitsmith quantize``."""
    app.command("quantize")(quantize_cmd)

