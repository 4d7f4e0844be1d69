"""Helpers shared by CLI sub-commands: output-folder checks, printing results."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import click
import typer
from rich.console import Console

from bitsmith.errors import BitsmithError

console = Console(soft_wrap=True, highlight=False)


# Options that several commands share word for word: one home for their flags, defaults and help.
FROM_OPTION: Any = typer.Option(None, "--from", help="float run to start from (absent: train from scratch)")
MODEL_OPTION: Any = typer.Option("lenet5", help="zoo model, from scratch only")
DATASET_OPTION: Any = typer.Option("digits", help="dataset, from scratch only")
DATA_ROOT_OPTION: Any = typer.Option(None, help="folder holding the dataset's files, from scratch only")
EPOCHS_OPTION: Any = typer.Option(None, help="epochs (default: 10 from a run, 30 from scratch)")
LR_OPTION: Any = typer.Option(None, help="learning rate (default: 1e-4 from a run, 1e-3 from scratch)")
BATCH_SIZE_OPTION: Any = typer.Option(None, help="batch size (default: the source run's, or 64)")
SCHEDULER_OPTION: Any = typer.Option(None, help="none | cosine | step (default: cosine from a run, none from "
                                                "scratch)")
THREADS_OPTION: Any = typer.Option(None, help="torch CPU threads")
OUT_OPTION: Any = typer.Option(..., help="run directory to write")
QUIET_OPTION: Any = typer.Option(False, "--quiet", "-q", help="no progress bar")


def check_writable_out(out: Path) -> Path:
    """Make sure ``out`` can be created and written before any long work starts."""
    if out.exists() and not out.is_dir():
        raise BitsmithError(f"--out {out} exists and is not a folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BitsmithError(f"--out {out} is not writable (no write permission on {existing})")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe."):
            pass
    except OSError as exc:
        raise BitsmithError(f"--out {out} is not writable ({exc.strerror})") from None
    return out


def given_options(*names: str) -> list[str]:
    """Those of the parameters ``names`` that the user set on the command line (not left at their defaults), so a
    command can refuse an option that does not apply instead of silently ignoring it; empty outside a command."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return []
    return [n for n in names if ctx.get_parameter_source(n) not in (None, click.core.ParameterSource.DEFAULT)]


def flags(names: list[str]) -> str:
    """Parameter names as the command line spells them: ``data_root`` -> ``--data-root``."""
    return ", ".join(f"--{n.replace('_', '-')}" for n in names)


def percent(x: float) -> str:
    return f"{100 * x:.2f} %"


def check_names(model: str, dataset: str) -> None:
    """Refuse an unknown zoo model or dataset name, listing the known ones."""
    from bitsmith import data, zoo

    if model not in zoo.list_models():
        raise BitsmithError(f"unknown model {model!r}; available: {', '.join(zoo.list_models())}")
    if dataset not in data.list_datasets():
        raise BitsmithError(f"unknown dataset {dataset!r}; available: {', '.join(data.list_datasets())}")


def parse_ints(text: str, option: str, example: str = "2,4,8") -> list[int]:
    """A comma-separated list of integers from the command line (one-line error naming ``option`` otherwise)."""
    return _parse_list(text, option, int, f"integers such as {example}")


def parse_floats(text: str, option: str, example: str = "0.001,0.01") -> list[float]:
    """A comma-separated list of numbers from the command line (one-line error naming ``option`` otherwise)."""
    return _parse_list(text, option, float, f"numbers such as {example}")


def _parse_list(text: str, option: str, kind: Any, accepted: str) -> list[Any]:
    try:
        return [kind(v) for v in text.split(",")]
    except ValueError:
        raise BitsmithError(f"{option} {text!r}: expected comma-separated {accepted}") from None


def precision_option(default: str | None = None) -> Any:
    """The ``--precision`` option of every training command (``None``: the source run's, or fp32)."""
    inherit = "" if default is not None else " (default: the source run's, or fp32)"
    return typer.Option(default, help="fp32 | bf16: the training forward pass under bfloat16 autocast, ~2x faster on "
                                      f"CPUs with AMX or AVX512-BF16; evaluation stays float32{inherit}")


def channels_last_option(default: bool | None = None) -> Any:
    """The ``--channels-last`` option of every training command (``None``: the source run's, or off)."""
    inherit = "" if default is not None else " (default: the source run's, or off)"
    return typer.Option(default, "--channels-last/--no-channels-last",
                        help=f"NHWC memory order for conv weights and batches while training (faster on CPU){inherit}")


def method_base(source: Path | None, *, model: str, dataset: str, data_root: Path | None,
                seed: int) -> tuple[Any, dict[str, Any]]:
    """What a method command starts from: (None, fine-tuning defaults) for a float run ``source`` (10 epochs, lr
    1e-4, cosine), or (a TrainConfig of ``model`` on ``dataset``, from-scratch defaults: 30 epochs, lr 1e-3,
    constant)."""
    from bitsmith.engine import TrainConfig

    if source is None:
        check_names(model, dataset)
        base = TrainConfig(model=model, dataset=dataset, data_root=str(data_root) if data_root else None, seed=seed)
        return base, {"epochs": 30, "lr": 1e-3, "scheduler": "none"}
    if not source.is_dir():
        raise BitsmithError(f"--from {source}: no such run directory")
    ignored = given_options("model", "dataset", "data_root")
    if ignored:
        raise BitsmithError(f"{flags(ignored)} conflict{'s' if len(ignored) == 1 else ''} with --from {source}, which "
                            "starts from that run's model and dataset; give one or the other")
    return None, {"epochs": 10, "lr": 1e-4, "scheduler": "cosine"}


def train_method(transform: str, config: Any, out: Path, *, source: Path | None, model: str, dataset: str,
                 data_root: Path | None, seed: int, threads: int | None, batch_size: int | None, epochs: int | None,
                 lr: float | None, scheduler: str | None, quiet: bool, precision: str | None = None,
                 channels_last: bool | None = None) -> dict[str, Any]:
    """What every method command does: fine-tune the float run ``source`` or train ``model`` on ``dataset`` from
    scratch (defaults: :func:`method_base`), through ``runs.method_run``; returns the final metrics."""
    from bitsmith import runs

    base, defaults = method_base(source, model=model, dataset=dataset, data_root=data_root, seed=seed)
    check_writable_out(out)
    return runs.method_run(transform, config, out, source=source, base=base, quiet=quiet, seed=seed,
                           num_threads=threads, batch_size=batch_size, epochs=epochs or defaults["epochs"],
                           lr=lr or defaults["lr"], scheduler=scheduler or defaults["scheduler"], precision=precision,
                           channels_last=channels_last)
