"""``bitsmith directq``: DirectQ training, fine-tuning a float run (--from) or from scratch (--model/--dataset)."""

from __future__ import annotations

from pathlib import Path

import typer

from bitsmith.cli._common import (
    BATCH_SIZE_OPTION,
    DATA_ROOT_OPTION,
    DATASET_OPTION,
    EPOCHS_OPTION,
    FROM_OPTION,
    LR_OPTION,
    MODEL_OPTION,
    OUT_OPTION,
    QUIET_OPTION,
    SCHEDULER_OPTION,
    THREADS_OPTION,
    channels_last_option,
    console,
    percent,
    precision_option,
    train_method,
)
from bitsmith.engine import distributed


def directq_cmd(
    source: Path | None = FROM_OPTION,
    model: str = MODEL_OPTION,
    dataset: str = DATASET_OPTION,
    data_root: Path | None = DATA_ROOT_OPTION,
    wbits: int = typer.Option(2, help="weight bit width (2..8, 16)"),
    abits: int = typer.Option(2, help="activation bit width (2..8, 16)"),
    first_last_bits: int = typer.Option(8, help="bit width of the first and last layers (0 = same as the rest)"),
    per_channel: bool = typer.Option(True, "--per-channel/--per-layer", help="weight levels per output channel"),
    ideas: str = typer.Option("both", help="ablation: both | weights (direct weights only) | acts (channel-aware "
                                           "activations only) | none (core LSQ)"),
    step_gain: float = typer.Option(1.0, help="gain on each proposed weight step before it is rounded to a level"),
    rounding: str = typer.Option("residual", help="how a proposed step lands on the grid: residual (nearest "
                                                  "level, the remainder carried to the next step) | stochastic "
                                                  "(unbiased) | greedy (per layer, the largest steps move one level)"),
    act_loss_weight: float = typer.Option(0.1, help="weight of the channel-aware activation objective"),
    act_trim: float = typer.Option(0.25, help="fraction of worst channels the activation objective ignores"),
    act_grad_scale: str = typer.Option("lsq", help="scale of the activation objective's step-size gradient: "
                                                   "lsq (LSQ's, as the task loss's) | none (its own, the rule "
                                                   "before 2026-12-07)"),
    act_layers: str = typer.Option("all", help="layers whose inputs get the channel-aware quantizer: all | conv "
                                               "(linear inputs keep LSQ's)"),
    epochs: int | None = EPOCHS_OPTION,
    lr: float | None = LR_OPTION,
    batch_size: int | None = BATCH_SIZE_OPTION,
    scheduler: str | None = SCHEDULER_OPTION,
    seed: int = typer.Option(0, help="random seed (training and stochastic rounding)"),
    threads: int | None = THREADS_OPTION,
    precision: str | None = precision_option(),
    channels_last: bool | None = channels_last_option(),
    out: Path = OUT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Train a low-bit model with DirectQ: quantized weights updated directly on learnable levels, and
    activation step sizes fitted to the majority of channels."""
    from bitsmith import runs
    from bitsmith.methods.directq import DirectQConfig

    cfg = DirectQConfig.ablation(ideas, weight_bits=wbits, act_bits=abits, first_last_bits=first_last_bits or None,
                                 per_channel=per_channel, step_gain=step_gain, rounding=rounding,
                                 act_loss_weight=act_loss_weight, act_trim=act_trim,
                                 act_grad_scale=act_grad_scale, act_layers=act_layers,
                                 seed=seed)
    metrics = train_method("directq", cfg, out, source=source, model=model, dataset=dataset, data_root=data_root,
                           seed=seed, threads=threads, batch_size=batch_size, epochs=epochs, lr=lr,
                           scheduler=scheduler, quiet=quiet, precision=precision,
                           channels_last=channels_last)
    if distributed.is_main():
        runs.write_run_report(out)
        console.print(f"DirectQ W{wbits}A{abits} ({ideas}): test accuracy {percent(metrics['test_acc'])}  "
                      f"run directory: {out}")
    distributed.shutdown()


def register(app: typer.Typer) -> None:
    """Add ``bitsmith directq``."""
    app.command("directq")(directq_cmd)
