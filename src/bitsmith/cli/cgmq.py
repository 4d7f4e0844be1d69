"""``bitsmith cgmq``: learned mixed precision under a BOP bound, from a float run (--from) or from scratch."""

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
    parse_ints,
    percent,
    precision_option,
    train_method,
)
from bitsmith.engine import distributed


def cgmq_cmd(
    source: Path | None = FROM_OPTION,
    model: str = MODEL_OPTION,
    dataset: str = DATASET_OPTION,
    data_root: Path | None = DATA_ROOT_OPTION,
    bop_budget: float = typer.Option(..., help="BOP bound: a fraction of the --relative-to model's BOPs, or BOPs "
                                               "per sample with --relative-to absolute"),
    relative_to: str = typer.Option("w8a8", help="w8a8 | fp32 | absolute"),
    granularity: str = typer.Option("channel", help="weight gates per layer | channel | weight"),
    bits: str = typer.Option("2,4,8,16,32", help="nested bit widths the gates choose from, increasing"),
    gate_lr: float = typer.Option(1e-2, help="learning rate of the gates"),
    factor: float = typer.Option(2.0, help="CGGD factor (> 1): constraint direction norm / loss gradient norm"),
    gate_step: str = typer.Option("rms", help="gate move scaled to gate_lr by its rms | max (the rule before "
                                              "2026-12-02)"),
    active_only: bool = typer.Option(True, "--active-only/--all-gates", help="constraint pushes only the gates "
                                     "that are on (--all-gates: also those off, the rule before 2026-12-02)"),
    fill: bool = typer.Option(True, "--fill/--no-fill", help="when the gates freeze below the bound, switch on "
                              "the off gates nearest to on while it holds"),
    epochs: int | None = EPOCHS_OPTION,
    lr: float | None = LR_OPTION,
    batch_size: int | None = BATCH_SIZE_OPTION,
    scheduler: str | None = SCHEDULER_OPTION,
    seed: int = typer.Option(0, help="random seed"),
    threads: int | None = THREADS_OPTION,
    precision: str | None = precision_option(),
    channels_last: bool | None = channels_last_option(),
    out: Path = OUT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Learn per-layer / per-channel / per-weight bit widths under a BOP bound (CGMQ) in one training run; the
    final model is guaranteed to meet the bound."""
    from bitsmith import runs
    from bitsmith.methods.cgmq import CGMQConfig

    widths = parse_ints(bits, "--bits", "2,4,8,16,32")
    cfg = CGMQConfig(bop_budget=bop_budget, relative_to=relative_to, granularity=granularity, bits=widths,
                     gate_lr=gate_lr, factor=factor, gate_step=gate_step, active_only=active_only,
                     fill=fill)
    metrics = train_method("cgmq", cfg, out, source=source, model=model, dataset=dataset, data_root=data_root,
                           seed=seed, threads=threads, batch_size=batch_size, epochs=epochs, lr=lr,
                           scheduler=scheduler, quiet=quiet, precision=precision,
                           channels_last=channels_last)
    if distributed.is_main():
        runs.write_run_report(out)
        note = (f"; projection switched off {metrics['projected_gates']} gate(s)" if metrics["projected_gates"]
                else "")
        console.print(f"CGMQ: test accuracy {percent(metrics['test_acc'])}, {metrics['bops']:.4g} BOPs (bound "
                      f"{metrics['bops_bound']:.4g}{note})  run directory: {out}")
    distributed.shutdown()


def register(app: typer.Typer) -> None:
    """Add ``bitsmith cgmq``."""
    app.command("cgmq")(cgmq_cmd)
