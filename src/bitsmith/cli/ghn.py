"""``bitsmith ghn train`` / ``bitsmith ghn eval`` (the graph hypernetwork) and ``bitsmith predict`` (a zoo or
search-space model with predicted parameters, as a run directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bitsmith import _io
from bitsmith.cli._common import (
    OUT_OPTION,
    QUIET_OPTION,
    THREADS_OPTION,
    check_names,
    check_writable_out,
    console,
    given_options,
    parse_ints,
    percent,
    precision_option,
)
from bitsmith.errors import BitsmithError

ghn_app = typer.Typer(help="Graph hypernetworks: train one, evaluate it on held-out architectures.",
                      no_args_is_help=True, add_completion=False, rich_markup_mode=None)

_GHN = typer.Option("digits", "--ghn", help="GHN file, `ghn train` run folder, or shipped name (digits, "
                    "fashion-mnist; digits-q: bit-conditioned)")


def _data_for(ghn: Any, dataset: str | None, data_root: Path | None) -> tuple[Any, Any, Any]:
    """The TrainConfig (reference recipe), training and test splits of the GHN's dataset (or ``dataset``)."""
    from bitsmith.engine import TrainConfig, load_split
    from bitsmith.methods.ghn import check_data, recipe

    name = dataset or ghn.info.get("dataset") or "digits"
    check_names("lenet5", name)
    base = TrainConfig(dataset=name, data_root=str(data_root) if data_root else None,
                       batch_size=recipe(name).batch_size)
    train_ds, test_ds = load_split(base, "train"), load_split(base, "test")
    check_data(ghn, name, (train_ds.in_channels, *train_ds.image_size), train_ds.num_classes)
    return base, train_ds, test_ds


def train_cmd(
    dataset: str = typer.Option("digits", help="dataset (digits, fashion-mnist, ...)"),
    data_root: Path | None = typer.Option(None, help="folder holding the dataset's files"),
    encoder: str = typer.Option("gatedgnn", help="gatedgnn (GHN-2) | graphormer (GHN-3 style)"),
    hidden: int = typer.Option(64, help="node embedding size"),
    layers: int = typer.Option(1, help="message-passing rounds (gatedgnn) or transformer blocks (graphormer)"),
    rank: int = typer.Option(32, help="CP rank of the decoder's weight blocks"),
    meta_batch: int = typer.Option(8, help="architectures per step"),
    pool: int = typer.Option(0, help="train on the first N architectures of the space (0: a new one every draw)"),
    eval_archs: int = typer.Option(8, help="validation architectures scored during training"),
    eval_every: int = typer.Option(10, help="score them every N epochs (and after the last)"),
    quant: str = typer.Option("none", help="GHN-Q: none | wNaM (every target at those widths, e.g. w8a8) | mixed "
                              "(widths drawn from --bits; makes the GHN bit-conditioned)"),
    bits: str = typer.Option("32,8,4,2", help="widths --quant mixed draws from (32 = float)"),
    per_layer: bool = typer.Option(False, "--per-layer", help="with --quant mixed: one draw per layer"),
    first_last_bits: int = typer.Option(8, help="bit width of the first and last layers (0 = like the rest)"),
    init_from: str | None = typer.Option(None, help="start from this GHN: its weights and shape (file, run folder, "
                                         "shipped name)"),
    space: str = typer.Option("darts", help="search space of the training architectures: darts | ghnq"),
    epochs: int = typer.Option(120, help="epochs over the training images"),
    lr: float = typer.Option(1e-3, help="AdamW learning rate (cosine schedule)"),
    batch_size: int | None = typer.Option(None, help="image batch size (default: 64 digits, 128 fashion-mnist)"),
    grad_clip: float = typer.Option(5.0, help="gradient norm clip (0: none)"),
    precision: str = precision_option("fp32"),
    seed: int = typer.Option(0, help="random seed"),
    threads: int | None = THREADS_OPTION,
    out: Path = typer.Option(..., help="run folder to write (ghn.safetensors, metrics, config)"),
    resume: bool = typer.Option(False, "--resume", help="continue the interrupted training in --out"),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Train a graph hypernetwork that predicts all parameters of CNNs of the search space for one dataset."""
    from bitsmith import _config
    from bitsmith.engine import TrainConfig, distributed, is_run_dir
    from bitsmith.methods.ghn import GHNTrainConfig, recipe, train_ghn

    if resume:
        if not is_run_dir(out):
            raise BitsmithError(f"--resume: {out} holds no interrupted GHN training")
        saved = _io.read_json(out / "config.json", "run config", BitsmithError)
        if not isinstance(saved, dict) or saved.get("command") != "ghn train":
            raise BitsmithError(f"--resume: {out} is not a `ghn train` run")
        if not all(isinstance(saved.get(key), dict) for key in ("train", "ghn", "ghn_train")):
            raise BitsmithError(f"--resume: {out / 'config.json'} lacks the train, ghn and ghn_train sections of a "
                                "`ghn train` run")
        train = _config.from_dict(TrainConfig, saved["train"], where=f"{out / 'config.json'}: train")
        ghn_fields = {k: v for k, v in saved["ghn"].items() if k not in ("num_classes", "in_channels", "image_size")}
        train_cfg = _config.from_dict(GHNTrainConfig, saved["ghn_train"], where=f"{out / 'config.json'}: ghn_train")
    else:
        check_names("lenet5", dataset)
        if out.exists() and is_run_dir(out):
            raise BitsmithError(f"{out} already holds a run; add --resume or choose another --out")
        train = recipe(dataset, data_root=str(data_root) if data_root else None, epochs=epochs, lr=lr,
                       grad_clip=grad_clip, precision=precision, seed=seed, num_threads=threads,
                       batch_size=batch_size)
        # with --init-from the hypernetwork's shape is that GHN's: only options given on the command line are passed
        # on, and train_ghn refuses them if they differ from it
        shape = {"encoder": encoder, "hidden": hidden, "layers": layers, "rank": rank}
        explicit = given_options(*shape)
        ghn_fields = {k: v for k, v in shape.items() if init_from is None or k in explicit}
        train_cfg = GHNTrainConfig(meta_batch=meta_batch, pool=pool, eval_archs=eval_archs, eval_every=eval_every,
                                   quant=quant, bits=parse_ints(bits, "--bits", "32,8,4,2"), per_layer=per_layer,
                                   first_last_bits=first_last_bits or None, init_from=init_from, space=space)
    check_writable_out(out)
    ghn, metrics = train_ghn(train, ghn_fields, train_cfg, out, resume=resume, quiet=quiet)
    if not distributed.is_main():
        distributed.shutdown()
        return
    distributed.shutdown()
    scores = ", ".join(f"{label} {percent(metrics.get(f'val_acc{suffix}', 0.0))} (worst "
                       f"{percent(metrics.get(f'val_acc{suffix}_worst', 0.0))})"
                       for label in train_cfg.eval_widths()
                       for suffix in ["" if label == "FP" else f"_{label.lower()}"])
    console.print(f"GHN ({ghn.num_parameters():,} parameters): mean validation accuracy of its predictions on "
                  f"{train_cfg.eval_archs} held-out architectures: {scores}  file: {out / 'ghn.safetensors'}")


def eval_cmd(
    ghn_source: str = _GHN,
    splits: str = typer.Option("test", help="comma-separated: val, test, wide, deep, predefined"),
    n: int = typer.Option(100, help="architectures per split"),
    n_ood: int | None = typer.Option(None, help="architectures of the wide/deep splits (default: --n)"),
    steps: str = typer.Option("1,10,100", help="SGD step counts for the random-init and fine-tuning rows"),
    converge_epochs: int = typer.Option(30, help="epochs of the trained-to-convergence reference (0: skip)"),
    bn_batches: int = typer.Option(10, help="training batches that recalibrate BN statistics"),
    dataset: str | None = typer.Option(None, help="dataset (default: the GHN's)"),
    data_root: Path | None = typer.Option(None, help="folder holding the dataset's files"),
    threads: int | None = THREADS_OPTION,
    out: Path = typer.Option(..., help="folder to write ghn_eval.json (an interrupted evaluation continues)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only the summary"),
) -> None:
    """Accuracy of predicted parameters on held-out architectures vs random init, k SGD steps, fine-tuning from the
    prediction and training to convergence (BN recalibrated on training batches; batch-statistics column extra)."""
    import torch

    from bitsmith.methods.ghn import EvalConfig, evaluate_ghn, load_ghn

    cfg = EvalConfig(splits=[s.strip() for s in splits.split(",")], n=n, n_ood=n_ood,
                     steps=parse_ints(steps, "--steps", "1,10,100"),
                     converge_epochs=converge_epochs, bn_batches=bn_batches)
    if threads:
        torch.set_num_threads(threads)
    ghn = load_ghn(ghn_source)
    base, train_ds, test_ds = _data_for(ghn, dataset, data_root)
    check_writable_out(out)

    def progress(split: str, row: dict[str, Any]) -> None:
        if not quiet:
            console.print(f"{row['arch']}: predicted {percent(row['predicted'])}, random {percent(row['random'])}"
                          + (f", converged {percent(row['converged'])}" if "converged" in row else ""))

    result = evaluate_ghn(ghn, base, train_ds, test_ds, cfg, out, progress)
    for split, part in result["splits"].items():
        s = part["summary"]
        line = (f"{split} ({s['n']} architectures): predicted {percent(s['predicted']['mean'])} ± "
                f"{100 * s['predicted']['std']:.2f} (min {percent(s['predicted']['min'])})")
        if "ratio" in s:
            line += f", {s['ratio']['mean']:.3f}x converged (worst {s['ratio']['min']:.3f}x)"
        console.print(line)
    console.print(f"results: {out / 'ghn_eval.json'}")


def predict_cmd(
    ghn_source: str = _GHN,
    model: str = typer.Option("resnet20", help="zoo model, or `cellnet` with --arch"),
    arch: str | None = typer.Option(None, help="for cellnet: a search-space split and index, e.g. test:3"),
    wbits: int = typer.Option(32, help="weight bit width of the predicted model (2..8, 16; 32 = float)"),
    abits: int = typer.Option(32, help="activation bit width (2..8, 16; 32 = float)"),
    first_last_bits: int = typer.Option(8, help="bit width of the first and last layers when quantized (0 = like "
                                        "the rest)"),
    calib_batches: int = typer.Option(8, help="training batches that calibrate the quantizer ranges (MSE)"),
    bn_batches: int = typer.Option(10, help="training batches that recalibrate BN statistics"),
    finetune_epochs: int = typer.Option(0, help="then fine-tune (QAT when quantized) for N epochs"),
    lr: float = typer.Option(1e-4, help="fine-tuning learning rate (Adam, cosine)"),
    dataset: str | None = typer.Option(None, help="dataset (default: the GHN's)"),
    data_root: Path | None = typer.Option(None, help="folder holding the dataset's files"),
    threads: int | None = THREADS_OPTION,
    out: Path = OUT_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar while fine-tuning"),
) -> None:
    """Predict every parameter of a model with a GHN (quantized at --wbits/--abits with calibrated ranges; a
    bit-conditioned GHN is told the widths), recalibrate BN on training batches, evaluate, and write a run
    directory (usable by `bitsmith cost --run`, `export`, `quantize --from`, ...); optionally fine-tune it."""
    import dataclasses
    import time

    import torch

    from bitsmith import _config, runs, zoo
    from bitsmith.engine import evaluate_model, save_run, train
    from bitsmith.methods.ghn import Widths, load_ghn, predict_quantized
    from bitsmith.methods.ghn.quantized import target_qconfig
    from bitsmith.quant import check_bits
    from bitsmith.zoo import space

    check_bits(wbits, "weight")
    check_bits(abits, "activation")
    if first_last_bits:
        check_bits(first_last_bits, "first/last layer")
    for name, value in (("--calib-batches", calib_batches), ("--bn-batches", bn_batches)):
        if value < 1:
            raise BitsmithError(f"{name} must be a positive integer, got {value}")
    if finetune_epochs < 0:
        raise BitsmithError(f"--finetune-epochs must be >= 0, got {finetune_epochs}")
    if threads:
        torch.set_num_threads(threads)
    ghn = load_ghn(ghn_source)
    base, train_ds, test_ds = _data_for(ghn, dataset, data_root)
    kwargs: dict[str, Any] = {}
    if arch is not None:
        if model != "cellnet":
            raise BitsmithError("--arch picks a search-space architecture; use it with --model cellnet")
        split, _, index = arch.partition(":")
        if not index.isdigit():
            raise BitsmithError(f"--arch {arch!r}: expected SPLIT:INDEX such as test:3 (splits: "
                                f"{', '.join(space.SPLITS)})")
        kwargs["arch"] = space.split(split, int(index) + 1)[int(index)].to_dict()
    check_names(model, base.dataset)
    check_writable_out(out)
    net = zoo.create_model(model, num_classes=train_ds.num_classes, in_channels=train_ds.in_channels,
                           image_size=tuple(train_ds.image_size), **kwargs)
    widths = Widths(wbits, abits)
    t0 = time.perf_counter()
    net = predict_quantized(net, ghn, widths, train_ds, first_last_bits=first_last_bits or None,
                            calib_batches=calib_batches, bn_batches=bn_batches, batch_size=base.batch_size)
    prepare_s = time.perf_counter() - t0
    qcfg = target_qconfig(widths, first_last_bits or None)
    scores = evaluate_model(net, test_ds)
    cfg = _config.from_dict(type(base), {**_config.to_dict(base), "model": model, "model_kwargs": kwargs,
                                         "epochs": max(finetune_epochs, 1), "lr": lr, "scheduler": "cosine",
                                         "num_threads": threads})
    run_config: dict[str, Any] = {
        "command": "predict", "train": _config.to_dict(cfg), "ghn": str(ghn_source), "widths": widths.label,
        "bn_batches": bn_batches, "calib_batches": calib_batches, "predicted_test_acc": scores["acc"],
        "prepare_s": prepare_s,
        "model_transforms": [] if qcfg is None else [{"name": "quantize", "config": qcfg.to_dict()}],
    }
    label = "float" if qcfg is None else widths.label
    if finetune_epochs:
        tuned = train(dataclasses.replace(cfg, epochs=finetune_epochs), out, model=net, run_config=run_config,
                      quiet=quiet).metrics
        runs.write_run_report(out)
        console.print(f"{model} {label} with predicted parameters: test accuracy {percent(scores['acc'])}; after "
                      f"{finetune_epochs} epoch(s) of {'QAT ' if qcfg else ''}fine-tuning "
                      f"{percent(tuned['test_acc'])}  run directory: {out}")
        return
    history = [{"type": "eval", "epoch": 0, "split": "test", **scores}]
    save_run(out, net, run_config, history)
    runs.write_run_report(out)
    calibrated = "" if qcfg is None else f"ranges calibrated on {calib_batches} training batches, "
    console.print(f"{model} {label} with predicted parameters: test accuracy {percent(scores['acc'])} ({calibrated}BN "
                  f"recalibrated on {bn_batches} training batches; {prepare_s:.1f} s)  run directory: {out}")


def register(app: typer.Typer) -> None:
    """Add ``bitsmith ghn train|eval`` and ``bitsmith predict``."""
    ghn_app.command("train")(train_cmd)
    ghn_app.command("eval")(eval_cmd)
    app.add_typer(ghn_app, name="ghn")
    app.command("predict")(predict_cmd)
