"""Run directories as a user sees them: read a run's config and metrics, rebuild its trained model, evaluate it.

A run's ``config.json`` holds ``train`` (a TrainConfig) and, for transformed models, ``model_transforms``: an
ordered list of ``{"name": ..., "config": {...}}`` steps (e.g. quantization) that turn the zoo model into the
trained one. The table below maps each step name to the function that replays it; it is the only place that
knows every layer, which is why it sits at the top of the package beside the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from bitsmith import _config, _io
from bitsmith.engine import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    Callback,
    TrainConfig,
    build_model,
    evaluate_model,
    load_checkpoint,
    load_split,
    require_run_dir,
    save_run,
    train,
)
from bitsmith.errors import CheckpointError


def _quantize_transform(model: nn.Module, config: dict[str, Any], input_shape: tuple[int, ...]) -> nn.Module:
    from bitsmith.quant import QConfig, quantize

    return quantize(model, _config.from_dict(QConfig, config), example_input_shape=input_shape)


def _directq_transform(model: nn.Module, config: dict[str, Any], input_shape: tuple[int, ...]) -> nn.Module:
    from bitsmith.methods import directq

    return directq.prepare(model, directq.DirectQConfig.from_dict(config), example_input_shape=input_shape)


def _cgmq_transform(model: nn.Module, config: dict[str, Any], input_shape: tuple[int, ...]) -> nn.Module:
    from bitsmith.methods import cgmq

    return cgmq.prepare(model, cgmq.CGMQConfig.from_dict(config), input_shape)


def _dnas_transform(model: nn.Module, config: dict[str, Any], input_shape: tuple[int, ...]) -> nn.Module:
    from bitsmith.methods import dnas

    return dnas.prepare(model, dnas.DNASConfig.from_dict(config), input_shape)


def _dnas_callbacks(model: nn.Module, config: dict[str, Any], input_shape: tuple[int, ...]) -> list[Callback]:
    from bitsmith.methods import dnas

    return [dnas.DNASCallback(model, dnas.DNASConfig.from_dict(config), input_shape)]


def _rpg_transform(model: nn.Module, config: dict[str, Any], input_shape: tuple[int, ...]) -> nn.Module:
    from bitsmith.methods import rpg

    return rpg.wrap(model, rpg.RPGConfig.from_dict(config), input_shape)


def _rpg_callbacks(model: nn.Module, config: dict[str, Any], input_shape: tuple[int, ...]) -> list[Callback]:
    from bitsmith.methods import rpg

    return [rpg.RPGCallback(model, rpg.RPGConfig.from_dict(config))]


def _cgmq_callbacks(model: nn.Module, config: dict[str, Any], input_shape: tuple[int, ...]) -> list[Callback]:
    from bitsmith.methods import cgmq

    return [cgmq.CGMQCallback(model, cgmq.CGMQConfig.from_dict(config), input_shape)]


# transform name -> function (model, config dict, input shape) -> transformed model
TRANSFORMS: dict[str, Callable[[nn.Module, dict[str, Any], tuple[int, ...]], nn.Module]] = {
    "quantize": _quantize_transform,
    "directq": _directq_transform,
    "cgmq": _cgmq_transform,
    "dnas": _dnas_transform,
    "rpg": _rpg_transform,
}
# transform name -> function (transformed model, config dict, input shape) -> the callbacks its training needs
CALLBACKS: dict[str, Callable[[nn.Module, dict[str, Any], tuple[int, ...]], list[Callback]]] = {
    "cgmq": _cgmq_callbacks,
    "dnas": _dnas_callbacks,
    "rpg": _rpg_callbacks,
}


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``config.json`` as a dict (a clear error if the folder is not a run or the file is corrupt)."""
    path = require_run_dir(run_dir) / CONFIG_FILE
    cfg = _io.read_json(path, "run config", CheckpointError)
    if not isinstance(cfg, dict) or "train" not in cfg:
        raise CheckpointError(f"{path}: not a bitsmith run config (no 'train' section)")
    return cfg


def train_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run was trained with."""
    return _config.from_dict(TrainConfig, read_config(run_dir)["train"], where=f"{run_dir}/{CONFIG_FILE}")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of the run's ``metrics.jsonl``."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise CheckpointError(f"{path}:{i}: not a JSON line") from None
    return records


def _transform(name: str) -> Callable[..., nn.Module]:
    if name not in TRANSFORMS:
        raise CheckpointError(f"unknown model transform {name!r} in run config; known: {', '.join(sorted(TRANSFORMS))}")
    return TRANSFORMS[name]


def apply_transforms(model: nn.Module, steps: list[dict[str, Any]], input_shape: tuple[int, ...]) -> nn.Module:
    """``model`` after the recorded ``model_transforms`` steps (each ``{"name": ..., "config": {...}}``), in order."""
    for step in steps:
        model = _transform(step["name"])(model, step.get("config", {}), input_shape)
    return model


def build_run_model(run_dir: str | Path) -> tuple[nn.Module, TrainConfig, Any]:
    """The untrained model of a run (zoo model plus its recorded transforms), its TrainConfig and training data."""
    cfg_dict = read_config(run_dir)
    cfg = _config.from_dict(TrainConfig, cfg_dict["train"], where=f"{run_dir}/{CONFIG_FILE}")
    train_ds = load_split(cfg, "train")
    model = build_model(cfg, train_ds)
    input_shape = (train_ds.in_channels, *train_ds.image_size)
    return apply_transforms(model, cfg_dict.get("model_transforms", []), input_shape), cfg, train_ds


def run_callbacks(run_dir: str | Path, model: nn.Module, train_ds: Any) -> list[Callback]:
    """The callbacks the run's transforms need to train ``model``, e.g. to resume it; ``model`` and ``train_ds``
    are what :func:`build_run_model` returned for the run."""
    input_shape = (train_ds.in_channels, *train_ds.image_size)
    callbacks: list[Callback] = []
    for step in read_config(run_dir).get("model_transforms", []):
        if step["name"] in CALLBACKS:
            callbacks += CALLBACKS[step["name"]](model, step.get("config", {}), input_shape)
    return callbacks


def resume_run(run_dir: str | Path, quiet: bool = False) -> Any:
    """Continue an interrupted run from its checkpoint (model, transforms and callbacks rebuilt from its
    config.json); returns the ``TrainResult``."""
    model, cfg, train_ds = build_run_model(run_dir)
    return train(cfg, run_dir, model=model, run_config=read_config(run_dir), quiet=quiet, resume=True,
                 callbacks=run_callbacks(run_dir, model, train_ds))


def final_run_metrics(run_dir: str | Path) -> dict[str, Any]:
    """The final metrics of a finished run (its last epoch record with that epoch's evaluations)."""
    from bitsmith.engine import final_metrics

    return final_metrics(read_metrics(run_dir))


def run_finished(run_dir: str | Path) -> bool:
    """True if ``run_dir`` holds a run that trained all of its epochs."""
    from bitsmith.engine import is_run_dir

    if not is_run_dir(run_dir):
        return False
    epochs = [r for r in read_metrics(run_dir) if r.get("type") == "epoch"]
    return bool(epochs) and epochs[-1].get("epoch") == train_config(run_dir).epochs


def load_model(run_dir: str | Path) -> nn.Module:
    """The trained model of a run, rebuilt from its config and loaded from its checkpoint (data only, no code)."""
    model, _, _ = build_run_model(run_dir)
    state = load_checkpoint(Path(run_dir) / CHECKPOINT_FILE)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{run_dir}: checkpoint does not match the run's model ({first})") from None
    return model.eval()


def evaluate_run(run_dir: str | Path, split: str = "test") -> dict[str, float]:
    """Loss and accuracy of a run's trained model on one split of its dataset."""
    model = load_model(run_dir)
    cfg = train_config(run_dir)
    return evaluate_model(model, load_split(cfg, split), cfg.eval_batch_size, "cpu")


def run_cost(run_dir: str | Path) -> Any:
    """The per-layer cost (``bitsmith.cost.CostReport``) of a run's model at the bit widths it computes with."""
    from bitsmith.cost import model_cost
    from bitsmith.quant import bits_assignment
    from bitsmith.quant.layers import QuantConv2d, QuantLinear

    model, _, train_ds = build_run_model(run_dir)
    input_shape = (train_ds.in_channels, *train_ds.image_size)
    quantized = any(isinstance(m, (QuantConv2d, QuantLinear)) for m in model.modules())
    return model_cost(model, input_shape, bits=bits_assignment(model) if quantized else None)


def write_run_report(run_dir: str | Path) -> Path:
    """Write the run's ``report.md``: metrics, learning curves and the per-layer cost table."""
    from bitsmith.report import cost_markdown, write_report

    sections = [("Cost per sample (per layer)", cost_markdown(run_cost(run_dir)))]
    sections += _bound_sections(Path(run_dir))
    sections += _search_sections(Path(run_dir))
    return write_report(run_dir, sections=sections)


def _bound_sections(run_dir: Path) -> list[tuple[str, str]]:
    """Report sections of a run trained under a BOP bound: bound vs achieved, projection, learned widths."""
    last = next((r for r in reversed(read_metrics(run_dir)) if r.get("type") == "epoch" and "bops_bound" in r), None)
    if last is None:
        return []
    met = "met" if last["bops"] <= last["bops_bound"] else "NOT met"
    lines = [f"BOP bound {last['bops_bound']:.6g} per sample; final model {last['bops']:.6g} BOPs: bound {met}."]
    projected = last.get("projected_gates", 0)
    lines.append(f"Training ended above the bound; the final projection switched off {projected} gate(s)."
                 if projected else "Training ended within the bound; no projection was needed.")
    for name, title in (("bops_trajectory.png", "BOPs over training"), ("bits_chart.png", "Learned bit widths")):
        if (run_dir / name).exists():
            lines.append(f"\n![{title}]({name})")
    if (run_dir / "bits.json").exists():
        lines.append("\nThe learned widths are in `bits.json` (per output channel, the widest of its weights).")
    return [("BOP bound", "\n".join(lines))]


def _search_sections(run_dir: Path) -> list[tuple[str, str]]:
    """Report section of a DNAS pipeline's retrained run: budget, derived and repaired BOPs, chosen widths."""
    path = run_dir / "search_result.json"
    if not path.is_file():
        return []
    result = _io.read_json(path, "search result", CheckpointError)
    met = "met" if result["bops"] <= result["budget_bops"] else "NOT met"
    lines = [f"Budget {result['budget_bops']:.6g} BOPs per sample; the searched configuration costs "
             f"{result['searched_bops']:.6g}, the retrained one {result['bops']:.6g}: budget {met}.",
             ("The derived configuration was over the budget and was repaired (lowered in the most expensive "
              f"layers): {json.dumps(result['repairs'])}." if result["repaired"] else
              "The derived configuration met the budget; no repair was needed."),
             f"Search {result['search_time_s']:.1f} s ({result['estimator']} estimator), retraining "
             f"{result['retrain_time_s']:.1f} s from {result['retrain_from']}.",
             "", "| layer | filters per weight width | mean weight bits | kept | activation bits |",
             "| --- | --- | ---: | ---: | ---: |"]
    for name, layer in result["layers"].items():
        split = ", ".join(f"{k}: {v}" for k, v in layer["filters"].items())
        lines.append(f"| {name} | {split} | {layer['mean_weight_bits']:.2f} | {layer['kept']}/{layer['out_channels']}"
                     f" | {layer['act_bits']} |")
    if (run_dir / "search" / "search_trajectory.png").exists():
        lines.append("\n![search trajectory](search/search_trajectory.png)")
    return [("DNAS search", "\n".join(lines))]


def quantize_run(source: str | Path, qconfig: Any, out: str | Path, *, epochs: int = 10, lr: float = 1e-4,
                 scheduler: str = "cosine", seed: int = 0, num_threads: int | None = None, ptq: bool = False,
                 observer: str = "mse", calib_batches: int = 8, quiet: bool = False) -> dict[str, Any]:
    """Quantize the float model of run ``source`` per ``qconfig`` into a new run at ``out``; returns its metrics.

    The quantizers are calibrated on ``calib_batches`` training batches; then either the model is fine-tuned
    (QAT, with the source run's recipe but ``epochs``/``lr``/``scheduler``/``seed``) or, with ``ptq``, only
    evaluated. The new run records the quantization as a model transform, so it re-builds, resumes and reports.
    """
    import dataclasses

    from bitsmith.quant import calibrate, quantize

    if read_config(source).get("model_transforms"):
        raise CheckpointError(f"{source} is already a transformed (quantized) run; give a float run")
    base = train_config(source)
    cfg = dataclasses.replace(base, epochs=epochs, lr=lr, scheduler=scheduler, seed=seed,
                              num_threads=num_threads or base.num_threads)
    float_model = load_model(source)
    train_ds = load_split(cfg, "train")
    qmodel = quantize(float_model, qconfig, example_input_shape=(train_ds.in_channels, *train_ds.image_size))
    x, _ = train_ds.tensors()
    calibrate(qmodel, [x[i:i + cfg.batch_size] for i in range(0, len(x), cfg.batch_size)],
              num_batches=calib_batches, observer=observer, seed=seed)
    run_config = {"command": "quantize", "from": str(source), "ptq": ptq, "observer": observer,
                  "calib_batches": calib_batches, "train": _config.to_dict(cfg),
                  "model_transforms": [{"name": "quantize", "config": qconfig.to_dict()}]}
    if not ptq:
        return train(cfg, out, model=qmodel, run_config=run_config, quiet=quiet).metrics
    scores = evaluate_model(qmodel, load_split(cfg, "test"), cfg.eval_batch_size, "cpu")
    save_run(out, qmodel, run_config, [{"type": "eval", "epoch": 0, "split": "test", **scores}])
    return {"test_acc": scores["acc"], "test_loss": scores["loss"]}


def method_run(transform: str, config: Any, out: str | Path, *, source: str | Path | None = None,
               base: TrainConfig | None = None, quiet: bool = False, **overrides: Any) -> dict[str, Any]:
    """Train a model transformed by ``TRANSFORMS[transform]`` with ``config`` (a dataclass with ``to_dict``)
    into a new run at ``out``; returns its final metrics.

    The model is the trained float model of run ``source`` (its recipe is the base), or, without ``source``, a
    fresh zoo model of ``base`` (training from scratch). ``overrides`` replace TrainConfig fields (epochs, lr,
    ...). The run records the transform, so it re-builds, resumes (``bitsmith train --resume``) and reports.
    """
    import dataclasses

    _transform(transform)
    if source is not None:
        if read_config(source).get("model_transforms"):
            raise CheckpointError(f"{source} is already a transformed run; give a float run")
        base = train_config(source)
    elif base is None:
        raise CheckpointError("method_run needs a source run or a base TrainConfig")
    cfg = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    train_ds = load_split(cfg, "train")
    model = load_model(source) if source is not None else build_model(cfg, train_ds)
    input_shape = (train_ds.in_channels, *train_ds.image_size)
    model = TRANSFORMS[transform](model, config.to_dict(), input_shape)
    callbacks = CALLBACKS[transform](model, config.to_dict(), input_shape) if transform in CALLBACKS else []
    run_config = {"command": transform, "from": None if source is None else str(source),
                  "train": _config.to_dict(cfg), "model_transforms": [{"name": transform, "config": config.to_dict()}]}
    return train(cfg, out, model=model, run_config=run_config, callbacks=callbacks, quiet=quiet).metrics
