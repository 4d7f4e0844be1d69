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
from bitsmith.engine.checkpoint import check_shared
from bitsmith.errors import CheckpointError, ConfigError


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
    _check_steps(cfg.get("model_transforms", []), path)
    return cfg


def _check_steps(steps: Any, path: Path) -> None:
    """Refuse a ``model_transforms`` entry that is not a list of ``{"name": known, "config": {...}}`` steps."""
    if not isinstance(steps, list):
        raise CheckpointError(f"{path}: model_transforms must be a list of steps, got {type(steps).__name__}")
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or not isinstance(step.get("config", {}), dict):
            raise CheckpointError(f"{path}: model_transforms[{i}] must be an object {{\"name\": ..., \"config\": "
                                  f"{{...}}}}, got {step!r}")
        if step.get("name") not in TRANSFORMS:
            named = f"names unknown transform {step['name']!r}" if "name" in step else "has no \"name\""
            raise CheckpointError(f"{path}: model_transforms[{i}] {named}; known: {', '.join(sorted(TRANSFORMS))}")


def train_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run was trained with."""
    return _config.from_dict(TrainConfig, read_config(run_dir)["train"], where=f"{Path(run_dir) / CONFIG_FILE}: train")


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


def apply_transforms(model: nn.Module, steps: list[dict[str, Any]], input_shape: tuple[int, ...],
                     where: str = "model_transforms") -> nn.Module:
    """``model`` after the recorded ``model_transforms`` steps (each ``{"name": ..., "config": {...}}``), in order; a
    bad step config raises ConfigError prefixed by ``where`` and the step's index."""
    for i, step in enumerate(steps):
        try:
            model = _transform(step["name"])(model, step.get("config", {}), input_shape)
        except ConfigError as exc:
            raise ConfigError(f"{where}[{i}] ({step['name']}): {exc}") from None
    return model


def build_run_model(run_dir: str | Path) -> tuple[nn.Module, TrainConfig, Any]:
    """The untrained model of a run (zoo model plus its recorded transforms), its TrainConfig and training data."""
    cfg_dict = read_config(run_dir)
    path = Path(run_dir) / CONFIG_FILE
    cfg = _config.from_dict(TrainConfig, cfg_dict["train"], where=f"{path}: train")
    train_ds = load_split(cfg, "train")
    model = build_model(cfg, train_ds)
    input_shape = (train_ds.in_channels, *train_ds.image_size)
    steps = cfg_dict.get("model_transforms", [])
    return apply_transforms(model, steps, input_shape, where=f"{path}: model_transforms"), cfg, train_ds


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
    return _trained(run_dir)[0]


def _trained(run_dir: str | Path) -> tuple[nn.Module, tuple[int, ...]]:
    """The trained model of a run (in eval mode) and the shape of one input sample."""
    model, _, train_ds = build_run_model(run_dir)
    path = Path(run_dir) / CHECKPOINT_FILE
    weights = load_checkpoint(path).get("model")
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: checkpoint holds no model state")
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: checkpoint does not match the run's model ({_load_problem(exc)})") from None
    check_shared(model, weights, path)
    return model.eval(), (train_ds.in_channels, *train_ds.image_size)


def _load_problem(exc: BaseException) -> str:
    """The first two problems torch's ``load_state_dict`` reports (missing/unexpected names, a shape), shortened."""
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    lines = lines or [str(exc).strip() or type(exc).__name__]
    return "; ".join(line if len(line) <= 200 else line[:197] + "..." for line in lines[:2])


def evaluate_run(run_dir: str | Path, split: str = "test") -> dict[str, float]:
    """Loss and accuracy of a run's trained model on one split of its dataset."""
    model = load_model(run_dir)
    cfg = train_config(run_dir)
    return evaluate_model(model, load_split(cfg, split), cfg.eval_batch_size, "cpu")


def run_cost(run_dir: str | Path) -> Any:
    """The per-layer cost (``bitsmith.cost.CostReport``) of a run's trained model at the bit widths it computes
    with (learned widths, such as CGMQ's gates, are read from the checkpoint)."""
    return _costed(run_dir)[2]


def _costed(run_dir: str | Path) -> tuple[nn.Module, Any, Any]:
    """A run's trained model, its bit widths (None for float) and its per-layer cost at those widths."""
    from bitsmith.cost import model_cost

    model, input_shape = _trained(run_dir)
    bits = run_bits(model)
    return model, bits, model_cost(model, input_shape, bits=bits)


def run_bits(model: nn.Module) -> Any:
    """The bit widths (``BitsAssignment``) a run's model computes with, or None for a float model."""
    from bitsmith.quant import bits_assignment
    from bitsmith.quant.layers import QuantConv2d, QuantLinear

    quantized = any(isinstance(m, (QuantConv2d, QuantLinear)) for m in model.modules())
    return bits_assignment(model) if quantized else None


def write_run_report(run_dir: str | Path) -> Path:
    """Write the run's ``report.md`` and ``report.html``: metrics, learning curves, the per-layer cost table, the
    bit widths per layer and filter, and each method's own section and figure."""
    from bitsmith.report import cost_markdown, plot_bit_widths, write_report
    from bitsmith.report.run_report import BITS_FILE

    run_dir = Path(run_dir)
    model, bits, cost = _costed(run_dir)
    sections = [("Cost per sample (per layer)", cost_markdown(cost))]
    if bits is not None:
        plot_bit_widths(cost, bits, run_dir / BITS_FILE)
        mixed = [name for name, layer in bits.layers.items()
                 if (isinstance(layer.weight_bits, list) and len(set(layer.weight_bits)) > 1)
                 or (layer.keep is not None and 0 in layer.keep)]
        note = (f"Filters of {len(mixed)} layer(s) differ in width or are pruned: {', '.join(mixed)}." if mixed
                else "Every filter of a layer has the same width.")
        sections.append(("Bit widths per layer", f"{note}\n\n![bit widths]({BITS_FILE})"))
    sections += _bound_sections(run_dir)
    sections += _search_sections(run_dir)
    sections += _ring_sections(run_dir, model, cost)
    sections += _predicted_sections(run_dir)
    return write_report(run_dir, sections=sections)


def _ring_sections(run_dir: Path, model: nn.Module, cost: Any) -> list[tuple[str, str]]:
    """Report section of an RPG run: the ring, what it generates, DoF against parameters (and the DoF curve of the
    RPG sweep the run belongs to, if any)."""
    from bitsmith.methods import rpg
    from bitsmith.report import plot_layer_params
    from bitsmith.report.run_report import PARAMS_FILE

    generated = {name for name, _ in rpg.generated_layers(model)}
    if not generated:
        return []
    ring = rpg.get_ring(model).dof
    made = sum(c.params for c in cost.layers if c.name in generated)
    plot_layer_params(cost, generated, ring, run_dir / PARAMS_FILE)
    lines = [f"A ring of {ring:,} free scalars generates the {made:,} weights of {len(generated)} layer(s) "
             f"(DoF ratio {ring / made:.4g}); with what it does not generate the model has {cost.dof:,} degrees "
             f"of freedom for {cost.total_params:,} parameters.", "", f"![parameters per layer]({PARAMS_FILE})"]
    sweep_plot = run_dir.parent.parent / "sweep.png"
    if sweep_plot.is_file() and (run_dir.parent.parent / "sweep.json").is_file():
        lines += ["", "Accuracy against the DoF ratio in the sweep this run belongs to:", "",
                  "![DoF curve](../../sweep.png)"]
    return [("RPG ring", "\n".join(lines))]


def _predicted_sections(run_dir: Path) -> list[tuple[str, str]]:
    """Report section of a run whose parameters a GHN predicted: predicted accuracy, then fine-tuned."""
    from bitsmith.report import plot_predicted
    from bitsmith.report.run_report import PREDICTED_FILE

    config = read_config(run_dir)
    if "predicted_test_acc" not in config:
        return []
    predicted = float(config["predicted_test_acc"])
    history = read_metrics(run_dir)
    final = final_run_metrics(run_dir)
    lines = [f"Parameters predicted by the GHN `{config.get('ghn')}` at {config.get('widths', '?')}: test accuracy "
             f"{100 * predicted:.2f} %."]
    if any(r.get("type") == "epoch" for r in history) and "test_acc" in final:
        plot_predicted(predicted, history, run_dir / PREDICTED_FILE)
        lines += [f"After {final['epoch']} epoch(s) of fine-tuning: {100 * final['test_acc']:.2f} %.", "",
                  f"![predicted, then trained]({PREDICTED_FILE})"]
    return [("GHN prediction", "\n".join(lines))]


def _bound_sections(run_dir: Path) -> list[tuple[str, str]]:
    """Report sections of a run trained under a BOP bound: bound vs achieved, projection, learned widths."""
    last = next((r for r in reversed(read_metrics(run_dir)) if r.get("type") == "epoch" and "bops_bound" in r), None)
    if last is None:
        return []
    met = "met" if last["bops"] <= last["bops_bound"] else "NOT met"
    lines = [f"BOP bound {last['bops_bound']:.6g} per sample; final model {last['bops']:.6g} BOPs: bound {met}."]
    projected = last.get("projected_gates", 0)
    lines.append(f"The gates ended above the bound; the projection switched off {projected} gate(s) (when the gates "
                 "froze, or after the last step)." if projected else
                 "Training ended within the bound; no projection was needed.")
    if last.get("filled_gates"):
        lines.append(f"The gates froze below the bound; the fill switched on {last['filled_gates']} gate(s) to spend "
                     "the budget.")
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
                 observer: str = "mse", calib_batches: int = 8, quiet: bool = False,
                 precision: str | None = None, channels_last: bool | None = None) -> dict[str, Any]:
    """Quantize the float model of run ``source`` per ``qconfig`` into a new run at ``out``; returns its metrics.

    The quantizers are calibrated on ``calib_batches`` training batches; then either the model is fine-tuned
    (QAT, with the source run's recipe but ``epochs``/``lr``/``scheduler``/``seed``, and ``precision`` and
    ``channels_last`` when given) or, with ``ptq``, only
    evaluated. The new run records the quantization as a model transform, so it re-builds, resumes and reports.
    """
    import dataclasses

    from bitsmith.quant import calibrate, quantize

    if read_config(source).get("model_transforms"):
        raise CheckpointError(f"{source} is already a transformed (quantized) run; give a float run")
    base = train_config(source)
    cfg = dataclasses.replace(base, epochs=epochs, lr=lr, scheduler=scheduler, seed=seed,
                              num_threads=num_threads or base.num_threads, precision=precision or base.precision,
                              channels_last=base.channels_last if channels_last is None else channels_last)
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
               base: TrainConfig | None = None, quiet: bool = False, record: dict[str, Any] | None = None,
               **overrides: Any) -> dict[str, Any]:
    """Train a model transformed by ``TRANSFORMS[transform]`` with ``config`` (a dataclass with ``to_dict``)
    into a new run at ``out``; returns its final metrics.

    The model is the trained float model of run ``source`` (its recipe is the base), or, without ``source``, a
    fresh zoo model of ``base`` (training from scratch). ``overrides`` replace TrainConfig fields (epochs, lr,
    ...). The run records the transform, so it re-builds, resumes (``bitsmith train --resume``) and reports;
    ``record`` adds (or replaces) top-level entries of its config.json, such as the command that made it.
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
                  "train": _config.to_dict(cfg), "model_transforms": [{"name": transform, "config": config.to_dict()}],
                  **(record or {})}
    return train(cfg, out, model=model, run_config=run_config, callbacks=callbacks, quiet=quiet).metrics
