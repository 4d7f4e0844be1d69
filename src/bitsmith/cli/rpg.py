"""``bitsmith rpg`` (train a model whose weights come from one ring of free parameters), ``bitsmith rpg-sweep``
(accuracy against the DoF ratio, with the log-linear fit) and ``bitsmith rpg-compress`` (prune or quantize a
trained ring)."""

from __future__ import annotations

from pathlib import Path

import typer

from bitsmith import _io
from bitsmith.cli._common import (
    OUT_OPTION,
    QUIET_OPTION,
    THREADS_OPTION,
    channels_last_option,
    check_names,
    check_writable_out,
    console,
    parse_floats,
    parse_ints,
    percent,
    precision_option,
    train_method,
)
from bitsmith.errors import BitsmithError

_INCLUDE = typer.Option("inner", help="layers the ring generates: inner (all but the first and last) | all")


def rpg_cmd(
    model: str = typer.Option("resnet20", help="zoo model"),
    dataset: str = typer.Option("digits", help="dataset"),
    data_root: Path | None = typer.Option(None, help="folder holding the dataset's files"),
    dof_ratio: float | None = typer.Option(None, help="ring size as a fraction of the generated weights, e.g. "
                                                      "0.003 (0.3 %)"),
    dof: int | None = typer.Option(None, help="ring size (instead of --dof-ratio)"),
    include: str = _INCLUDE,
    ring_lr_gain: float = typer.Option(1.0, help="the ring's lr = gain x lr / RMS of the layer scales (0: lr)"),
    epochs: int | None = typer.Option(None, help="epochs (default 30)"),
    lr: float | None = typer.Option(None, help="learning rate (default 1e-3; the ring's is scaled, see METHODS.md)"),
    batch_size: int | None = typer.Option(None, help="batch size (default 64)"),
    scheduler: str | None = typer.Option(None, help="none | cosine | step (default none)"),
    seed: int = typer.Option(0, help="random seed (training, and the ring's permutation and signs)"),
    threads: int | None = THREADS_OPTION,
    precision: str | None = precision_option(),
    channels_last: bool | None = channels_last_option(),
    out: Path = OUT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Train a zoo model whose conv/linear weights are all read from one small ring of free parameters (RPG)."""
    from bitsmith import runs
    from bitsmith.methods.rpg import RPGConfig

    if dof is None and dof_ratio is None:
        dof_ratio = 0.01
    cfg = RPGConfig(dof=dof, dof_ratio=dof_ratio, include=include, seed=seed, ring_lr_gain=ring_lr_gain)
    metrics = train_method("rpg", cfg, out, source=None, model=model, dataset=dataset, data_root=data_root,
                           seed=seed, threads=threads, batch_size=batch_size, epochs=epochs, lr=lr,
                           scheduler=scheduler, quiet=quiet, precision=precision,
                           channels_last=channels_last)
    runs.write_run_report(out)
    cost = runs.run_cost(out)
    console.print(f"RPG: test accuracy {percent(metrics['test_acc'])}, DoF {cost.dof:,} for {cost.total_params:,} "
                  f"parameters  run directory: {out}")


def sweep_cmd(
    model: str = typer.Option("resnet20", help="zoo model"),
    dataset: str = typer.Option("digits", help="dataset"),
    data_root: Path | None = typer.Option(None, help="folder holding the dataset's files"),
    ratios: str = typer.Option("0.0001,0.0003,0.001,0.003,0.01,0.03,0.1,1",
                               help="DoF ratios (fractions of the generated weights)"),
    seeds: str = typer.Option("0", help="training seeds"),
    include: str = _INCLUDE,
    reference: bool = typer.Option(True, "--reference/--no-reference", help="also train the plain full model"),
    fit_range: str | None = typer.Option(None, help="LO,HI: the ratios the log-linear fit uses (default: up to "
                                                    "0.01)"),
    epochs: int = typer.Option(30, help="epochs per run"),
    lr: float = typer.Option(1e-3, help="learning rate"),
    batch_size: int = typer.Option(64, help="batch size"),
    threads: int | None = THREADS_OPTION,
    precision: str = precision_option("fp32"),
    channels_last: bool = channels_last_option(False),
    out: Path = typer.Option(..., help="folder to write (an interrupted sweep continues in it)"),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Accuracy against the DoF ratio: one RPG run per ratio and seed, the log-linear fit (slope, intercept, R²)
    and its plot."""
    from bitsmith import searches
    from bitsmith.engine import TrainConfig

    check_names(model, dataset)
    bounds = None
    if fit_range is not None:
        values = parse_floats(fit_range, "--fit-range")
        if len(values) != 2 or values[0] >= values[1]:
            raise BitsmithError(f"--fit-range {fit_range!r}: expected LO,HI with LO < HI")
        bounds = (values[0], values[1])
    base = TrainConfig(model=model, dataset=dataset, data_root=str(data_root) if data_root else None, epochs=epochs,
                       lr=lr, batch_size=batch_size, num_threads=threads, precision=precision,
                       channels_last=channels_last)
    check_writable_out(out)
    result = searches.rpg_sweep(base, out, ratios=parse_floats(ratios, "--ratios"), seeds=parse_ints(seeds, "--seeds",
                                "0,1,2"), include=include, reference=reference, fit_range=bounds, quiet=quiet)
    for p in result["points"]:
        console.print(f"DoF ratio {100 * p['ratio']:g} % (DoF {p['dof']:,}): {percent(p['mean'])}")
    if result["reference_acc"]:
        console.print(f"full model: {percent(sum(result['reference_acc']) / len(result['reference_acc']))}")
    fit = result["fit"]
    if fit is not None:
        console.print(f"log-linear fit over {result['fit_range'][0]:g}..{result['fit_range'][1]:g}: accuracy = "
                      f"{fit['slope']:.4f} * log10(ratio) + {fit['intercept']:.4f}, R² = {fit['r2']:.3f}  "
                      f"results: {out / searches.SWEEP_RESULT}")


def compress_cmd(
    run: Path = typer.Argument(..., help="a trained rpg run directory"),
    prune: str = typer.Option("0.25,0.5,0.75,0.9", help="pruning fractions (ring entries, and generated weights)"),
    ring_bits: str = typer.Option("8,4,3,2", help="bit widths to quantize the ring to"),
    act_bits: int = typer.Option(8, help="activation bits of the core model the quantized ring converts to"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only the summary line"),
) -> None:
    """Prune a trained ring (or the weights it generates) and quantize the ring itself, without retraining: test
    accuracy of each, storage, and the integer-exact check of the quantized ring's core model; writes
    ``compress.json`` into the run."""
    from bitsmith import runs
    from bitsmith.engine import load_split
    from bitsmith.methods import rpg

    if runs.read_config(run).get("model_transforms", [{}])[0].get("name") != "rpg":
        raise BitsmithError(f"{run} is not an rpg run (train one with `bitsmith rpg`)")
    cfg = runs.train_config(run)
    train_ds, test_ds = load_split(cfg, "train"), load_split(cfg, "test")
    result = rpg.compression_study(runs.load_model(run), train_ds, test_ds, (train_ds.in_channels,
                                   *train_ds.image_size), parse_floats(prune, "--prune"),
                                   parse_ints(ring_bits, "--ring-bits", "8,4,2"), act_bits)
    _io.write_json(run / "compress.json", result)
    if not quiet:
        console.print(f"trained: {percent(result['test_acc'])}, {result['storage_bits'] / 8192:.1f} KiB")
        for row in result["prune"]:
            console.print(f"prune {100 * row['fraction']:g} %: ring entries {percent(row['ring_acc'])}, generated "
                          f"weights {percent(row['weights_acc'])}")
        for row in result["quantize"]:
            console.print(f"ring at {row['bits']} bits: {percent(row['test_acc'])} (core layers "
                          f"{percent(row['core_acc'])}, integer forward max rel. error {row['integer_rel_error']:.1e}"
                          f"), {row['storage_bits'] / 8192:.1f} KiB")
    console.print(f"results: {run / 'compress.json'}")


def register(app: typer.Typer) -> None:
    """Add ``bitsmith rpg``, ``bitsmith rpg-sweep`` and ``bitsmith rpg-compress``."""
    app.command("rpg")(rpg_cmd)
    app.command("rpg-sweep")(sweep_cmd)
    app.command("rpg-compress")(compress_cmd)
