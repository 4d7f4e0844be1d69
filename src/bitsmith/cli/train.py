"""``bitsmith train | eval | models | datasets | demo``: the foundation commands."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from bitsmith import _config, _io, data, zoo
from bitsmith.cli._common import (
    QUIET_OPTION,
    THREADS_OPTION,
    channels_last_option,
    check_names,
    check_writable_out,
    console,
    percent,
    precision_option,
)
from bitsmith.engine import TrainConfig, TrainResult, distributed, train
from bitsmith.errors import BitsmithError


def run_training(cfg: TrainConfig, out: Path, quiet: bool, resume: bool = False) -> TrainResult:
    """Train (or resume) a run, write its report, print the result."""
    from bitsmith import runs

    if resume:
        result = runs.resume_run(out, quiet=quiet)
    else:
        check_writable_out(out)
        result = train(cfg, out, quiet=quiet)
    if distributed.is_main():
        runs.write_run_report(out)
        m = result.metrics
        console.print(f"test accuracy {percent(m['test_acc'])}  (train loss {m['train_loss']:.4f}, "
                      f"{m['epoch']} epochs)  run directory: {out}")
    distributed.shutdown()
    return result


def train_cmd(
    model: str = typer.Option("lenet5", help="zoo model (see `bitsmith models`)"),
    dataset: str = typer.Option("digits", help="dataset (see `bitsmith datasets`)"),
    data_root: Path | None = typer.Option(None, help="folder holding the dataset's files (not needed for digits)"),
    epochs: int = typer.Option(30, help="training epochs"),
    batch_size: int = typer.Option(64, help="global batch size (split across processes under torchrun)"),
    lr: float = typer.Option(1e-3, help="learning rate"),
    optimizer: str = typer.Option("adam", help="adam | adamw | sgd"),
    scheduler: str = typer.Option("none", help="none | cosine | step"),
    weight_decay: float = typer.Option(0.0, help="weight decay"),
    label_smoothing: float = typer.Option(0.0, help="label smoothing in [0, 1)"),
    grad_clip: float | None = typer.Option(None, help="clip the gradient norm to this value"),
    on_nonfinite: str = typer.Option("stop", help="a NaN/Inf loss or gradient: stop (keep the last good checkpoint) "
                                                  "| skip (drop the step) | restore (roll back to the last epoch)"),
    image_size: int | None = typer.Option(None, help="resize images to this square size (digits default: 16)"),
    val: bool = typer.Option(False, "--val/--no-val", help="carve a validation split from the training set"),
    seed: int = typer.Option(0, help="random seed"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    threads: int | None = THREADS_OPTION,
    precision: str = precision_option("fp32"),
    channels_last: bool = channels_last_option(False),
    out: Path | None = typer.Option(None, help="run directory to write (default runs/<model>-<dataset>-s<seed>)"),
    resume: Path | None = typer.Option(None, help="continue the interrupted run in this directory"),
    config: Path | None = typer.Option(None, help="re-run from a run's config.json (other options ignored)"),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Train a zoo model from scratch (FP32) and write a run directory."""
    if resume is not None:
        from bitsmith.runs import train_config

        cfg = train_config(resume)
        run_training(cfg, resume, quiet, resume=True)
        return
    if config is not None:
        cfg = _config.from_dict(TrainConfig, _load_run_config(config)["train"], where=f"{config}: train")
    else:
        cfg = TrainConfig(model=model, dataset=dataset, data_root=str(data_root) if data_root else None, epochs=epochs,
                          batch_size=batch_size, lr=lr, optimizer=optimizer, scheduler=scheduler,
                          weight_decay=weight_decay, label_smoothing=label_smoothing, grad_clip=grad_clip,
                          image_size=image_size, val=val, seed=seed, device=device, num_threads=threads,
                          on_nonfinite=on_nonfinite, precision=precision,
                          channels_last=channels_last)
    check_names(cfg.model, cfg.dataset)
    out = out or Path("runs") / f"{cfg.model}-{cfg.dataset}-s{cfg.seed}"
    run_training(cfg, out, quiet)


def _load_run_config(path: Path) -> dict:
    cfg = _io.read_json(path, "--config file", BitsmithError)
    if not isinstance(cfg, dict) or "train" not in cfg:
        raise BitsmithError(f"--config {path}: not a bitsmith run config (needs a 'train' section)")
    return cfg


def eval_cmd(
    run_dir: Path = typer.Argument(..., help="a run directory"),
    split: str = typer.Option("test", help="train | val | test"),
    as_json: bool = typer.Option(False, "--json", help="print JSON only"),
) -> None:
    """Evaluate a run's trained model on a split of its dataset."""
    from bitsmith.runs import evaluate_run

    scores = evaluate_run(run_dir, split)
    if as_json:
        print(json.dumps({"run_dir": str(run_dir), "split": split, **scores}))
    else:
        console.print(f"{split} accuracy {percent(scores['acc'])}  loss {scores['loss']:.4f}  ({run_dir})")


def models_cmd() -> None:
    """List the models of the zoo."""
    for name in zoo.list_models():
        console.print(zoo.describe(name))


def datasets_cmd() -> None:
    """List the datasets bitsmith can read."""
    for name in data.list_datasets():
        console.print(f"{name}: {data.describe(name)}")


def register(app: typer.Typer) -> None:
    """Add the foundation commands to the CLI."""
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
    app.command("models")(models_cmd)
    app.command("datasets")(datasets_cmd)
