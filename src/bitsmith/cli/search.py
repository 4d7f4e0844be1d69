"""``bitsmith search`` (DNAS bit-width / filter-pruning search under a BOPs budget, then retraining) and
``bitsmith grid`` (random configurations at the same BOPs: the variance study)."""

from __future__ import annotations

from pathlib import Path

import typer

from bitsmith.cli._common import (
    BATCH_SIZE_OPTION,
    DATA_ROOT_OPTION,
    DATASET_OPTION,
    FROM_OPTION,
    LR_OPTION,
    MODEL_OPTION,
    QUIET_OPTION,
    SCHEDULER_OPTION,
    THREADS_OPTION,
    channels_last_option,
    check_writable_out,
    console,
    method_base,
    parse_ints,
    percent,
    precision_option,
)
from bitsmith.errors import BitsmithError

_BUDGET = typer.Option(..., help="BOPs budget: a fraction of the --relative-to model's BOPs, or BOPs per sample "
                                 "with --relative-to absolute")
_RELATIVE = typer.Option("w8a8", help="w8a8 | fp32 | absolute")
_BITS = typer.Option("2,4,8", help="weight bit widths each filter chooses from")
_ABITS = typer.Option("2,4,8", help="activation bit widths each layer's input chooses from")
_PRUNE = typer.Option(False, "--prune/--no-prune", help="let the search prune filters (BatchNorms are folded)")


def _config(budget_bops: float, relative_to: str, bits: str, abits: str, prune: bool, **extra: object) -> object:
    from bitsmith.methods.dnas import DNASConfig

    return DNASConfig(budget_bops=budget_bops, relative_to=relative_to, weight_bits=parse_ints(bits, "--bits"),
                      act_bits=parse_ints(abits, "--abits"), prune=prune, **extra)


def search_cmd(
    source: Path | None = FROM_OPTION,
    model: str = MODEL_OPTION,
    dataset: str = DATASET_OPTION,
    data_root: Path | None = DATA_ROOT_OPTION,
    budget_bops: float = _BUDGET,
    relative_to: str = _RELATIVE,
    bits: str = _BITS,
    abits: str = _ABITS,
    prune: bool = _PRUNE,
    estimator: str = typer.Option("score", help="architecture gradient: score | gumbel"),
    penalty: str = typer.Option("target", help="cost term: target ((E/budget - 1)^2) | square ((E/budget)^2)"),
    cost_weight: float = typer.Option(1.0, help="weight of the cost term"),
    arch_lr: float = typer.Option(0.1, help="learning rate of the architecture logits"),
    search_epochs: int | None = typer.Option(None, help="search epochs (default: as --epochs)"),
    epochs: int | None = typer.Option(None, help="retraining epochs (default: 10 from a run, 30 from scratch)"),
    retrain_from: str | None = typer.Option(None, help="float | scratch (default: float with --from)"),
    lr: float | None = typer.Option(None, help="weight learning rate (default: 1e-4 from a run, 1e-3 from scratch)"),
    batch_size: int | None = BATCH_SIZE_OPTION,
    scheduler: str | None = SCHEDULER_OPTION,
    seed: int = typer.Option(0, help="random seed"),
    threads: int | None = THREADS_OPTION,
    precision: str | None = precision_option(),
    channels_last: bool | None = channels_last_option(),
    out: Path = typer.Option(..., help="folder to write: the retrained run, with search/ and bits.json in it"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted search in --out"),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Search per-filter weight widths, per-layer activation widths (and with --prune, filter counts) under a BOPs
    budget (DNAS), derive the configuration, check it with the exact cost (repaired if over), and retrain it."""
    from bitsmith import searches

    cfg = _config(budget_bops, relative_to, bits, abits, prune, estimator=estimator, penalty=penalty,
                  cost_weight=cost_weight, arch_lr=arch_lr, seed=seed)
    base, defaults = method_base(source, model=model, dataset=dataset, data_root=data_root, seed=seed)
    if resume and not (out / searches.SEARCH_DIR).is_dir():
        raise BitsmithError(f"--resume: {out} holds no search to continue")
    if not resume and (out / searches.SEARCH_DIR).exists():
        raise BitsmithError(f"{out} already holds a search; use --resume or choose another --out")
    check_writable_out(out)
    epochs = epochs or defaults["epochs"]
    summary = searches.dnas_search(
        cfg, out, source=source, base=base, search_epochs=search_epochs or epochs, retrain_epochs=epochs,
        retrain_from=retrain_from or ("float" if source is not None else "scratch"), quiet=quiet, resume=resume,
        seed=seed, num_threads=threads, batch_size=batch_size, lr=lr or defaults["lr"],
        scheduler=scheduler or defaults["scheduler"], precision=precision,
        channels_last=channels_last)
    note = " (derived configuration repaired to meet it)" if summary["repaired"] else ""
    console.print(f"DNAS: test accuracy {percent(summary['test_acc'])}, {summary['bops']:.4g} BOPs (budget "
                  f"{summary['budget_bops']:.4g}{note}); search {summary['search_time_s']:.0f} s  run directory: {out}")


def grid_cmd(
    source: Path | None = FROM_OPTION,
    model: str = MODEL_OPTION,
    dataset: str = DATASET_OPTION,
    data_root: Path | None = DATA_ROOT_OPTION,
    budget_bops: float = _BUDGET,
    relative_to: str = _RELATIVE,
    bits: str = _BITS,
    abits: str = _ABITS,
    prune: bool = _PRUNE,
    configs: int = typer.Option(8, help="number of random configurations"),
    seeds: str = typer.Option("0,1,2", help="training seeds of every configuration"),
    tolerance: float = typer.Option(0.03, help="configurations lie within this fraction below the budget"),
    sample_seed: int = typer.Option(0, help="seed of the configuration sampler"),
    epochs: int | None = typer.Option(None, help="training epochs per run (default: 10 from a run, 30 from "
                                                  "scratch)"),
    lr: float | None = LR_OPTION,
    batch_size: int | None = BATCH_SIZE_OPTION,
    scheduler: str | None = typer.Option(None, help="none | cosine | step"),
    threads: int | None = THREADS_OPTION,
    precision: str | None = precision_option(),
    channels_last: bool | None = channels_last_option(),
    out: Path = typer.Option(..., help="folder to write (an interrupted study continues in it)"),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Train random heterogeneous configurations at (nearly) the same BOPs with several seeds each, and report
    whether accuracy varies more across configurations than across seeds (one-way ANOVA)."""
    from bitsmith import searches

    cfg = _config(budget_bops, relative_to, bits, abits, prune)
    seed_list = parse_ints(seeds, "--seeds", "0,1,2")
    base, defaults = method_base(source, model=model, dataset=dataset, data_root=data_root, seed=seed_list[0])
    check_writable_out(out)
    result = searches.grid_study(
        cfg, out, source=source, base=base, configs=configs, seeds=seed_list, tolerance=tolerance,
        sample_seed=sample_seed, quiet=quiet, num_threads=threads, batch_size=batch_size,
        epochs=epochs or defaults["epochs"], lr=lr or defaults["lr"], scheduler=scheduler or defaults["scheduler"],
        precision=precision, channels_last=channels_last)
    best, median = result["means"][result["best"]], result["means"][result["median"]]
    console.print(f"grid: {result['configs']} configurations x {len(seed_list)} seeds at ~{result['budget_bops']:.4g} "
                  f"BOPs; best {percent(best)}, median {percent(median)}; std across configurations "
                  f"{percent(result['config_std'])}, across seeds {percent(result['seed_std'])} (ANOVA p = "
                  f"{result['p_value']:.3g})  results: {out / searches.GRID_RESULT}")


def register(app: typer.Typer) -> None:
    """Add ``bitsmith search`` and ``bitsmith grid``."""
    app.command("search")(search_cmd)
    app.command("grid")(grid_cmd)
