"""Evaluation of a hypernetwork on held-out architectures, against random init and SGD-trained twins.

Protocol (every figure): after parameters are set (predicted, random or trained), BatchNorm running statistics are
recalibrated on ``bn_batches`` TRAINING batches of 64 and the model is evaluated in eval mode on the test split.
Accuracy with test-batch statistics is an extra column only (``pred_batchstat``). SGD rows use the reference recipe
(Adam, lr 1e-3, the dataset's batch size) through the shared Trainer; ``converged`` trains ``converge_epochs``.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bitsmith import _config, _io
from bitsmith.engine import TrainConfig, Trainer, dataset_tensors, evaluate_model, recalibrate_bn
from bitsmith.errors import ConfigError
from bitsmith.methods.ghn.config import GHNConfig
from bitsmith.methods.ghn.io import digest
from bitsmith.methods.ghn.model import GraphHyperNetwork
from bitsmith.methods.ghn.predict import predict
from bitsmith.methods.ghn.quantized import calibrate_target, parse_widths, predict_quantized, quantize_target
from bitsmith.zoo import space

EVAL_SPLITS = (*space.SPLITS, "predefined")


@dataclass
class EvalConfig(_config.JsonConfig):
    """What ``bitsmith ghn eval`` measures: ``splits`` with ``n`` architectures each (``n_ood`` for the costlier
    wide/deep splits; default n; predefined always holds four), SGD/fine-tuning after
    ``steps`` steps, training to convergence for ``converge_epochs`` (0 skips it), BN recalibration batches."""

    splits: list[str] = field(default_factory=lambda: ["test"])
    n: int = 100
    n_ood: int | None = None
    steps: list[int] = field(default_factory=lambda: [1, 10, 100])
    converge_epochs: int = 30
    bn_batches: int = 10
    seed: int = 0

    def size(self, split: str) -> int:
        """How many architectures of ``split`` to evaluate."""
        return self.n_ood if split in ("wide", "deep") and self.n_ood is not None else self.n

    def __post_init__(self) -> None:
        unknown = [s for s in self.splits if s not in EVAL_SPLITS]
        if unknown or not self.splits:
            raise ConfigError(f"unknown GHN evaluation split(s) {', '.join(unknown) or '(none)'}; "
                              f"accepted: {', '.join(EVAL_SPLITS)}")
        if self.n < 1 or (self.n_ood is not None and self.n_ood < 1):
            raise ConfigError(f"GHN evaluation needs n >= 1 architectures per split, got {self.n}, {self.n_ood}")
        if any(k < 1 for k in self.steps):
            raise ConfigError(f"SGD step counts must be positive, got {self.steps}")
        if self.converge_epochs < 0:
            raise ConfigError(f"converge_epochs must be >= 0, got {self.converge_epochs}")


def architectures(split: str, n: int, cfg: GHNConfig) -> list[tuple[str, Callable[[], nn.Module]]]:
    """(name, builder) of the first ``n`` architectures of ``split``, shaped for the data of GHN config ``cfg``."""
    if split == "predefined":
        names = list(space.predefined(cfg.num_classes, cfg.in_channels, cfg.image_size))[:n]
        return [(name, lambda name=name: space.predefined(cfg.num_classes, cfg.in_channels, cfg.image_size)[name])
                for name in names]
    return [(f"{split}-{i}", lambda spec=spec: space.build_network(spec, cfg.num_classes, cfg.in_channels,
                                                                    cfg.image_size))
            for i, spec in enumerate(space.split(split, n))]


@torch.no_grad()
def batchstat_accuracy(model: nn.Module, data: Any, batch_size: int = 512) -> float:
    """Accuracy with BatchNorm normalising by each test batch's own statistics (extra column: it leaks test-set
    statistics, so it is never the headline figure)."""
    probe = copy.deepcopy(model).eval()
    for m in probe.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
            m.track_running_stats = False
            m.running_mean = m.running_var = None
    x_all, y_all = dataset_tensors(data)
    correct = sum((probe(x_all[i:i + batch_size]).argmax(1) == y_all[i:i + batch_size]).sum().item()
                  for i in range(0, len(y_all), batch_size))
    return correct / max(len(y_all), 1)


def _score(model: nn.Module, train_ds: Any, test_ds: Any, bn_batches: int) -> float:
    recalibrate_bn(model, train_ds, bn_batches)
    return evaluate_model(model, test_ds)["acc"]


def train_copy(start: nn.Module, base: TrainConfig, train_ds: Any, *, steps: int | None = None,
               epochs: int | None = None) -> nn.Module:
    """A copy of ``start`` trained by the shared Trainer (recipe ``base``) for ``steps`` steps, or ``epochs``
    epochs; a quantized model trains as QAT (weights and learned scales)."""
    if steps is not None:
        epochs = math.ceil(steps / math.ceil(len(train_ds) / base.batch_size))
    cfg = _config.from_dict(TrainConfig, {**_config.to_dict(base), "epochs": epochs, "max_steps": steps})
    model = copy.deepcopy(start)
    Trainer(model, cfg, train_ds, {}, quiet=True).fit()
    return model


def _trained_score(start: nn.Module, base: TrainConfig, train_ds: Any, test_ds: Any, bn_batches: int, *,
                   steps: int | None = None, epochs: int | None = None) -> float:
    """Score of a copy of ``start`` trained for ``steps`` steps, or ``epochs`` epochs."""
    return _score(train_copy(start, base, train_ds, steps=steps, epochs=epochs), train_ds, test_ds, bn_batches)


def _init(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build()


def baseline_row(build: Callable[[], nn.Module], base: TrainConfig, train_ds: Any, test_ds: Any,
                 cfg: EvalConfig) -> dict[str, Any]:
    """The hypernetwork-free columns of one architecture: random init, k SGD steps from it, and converged."""
    random_init = _init(build, cfg.seed)
    row: dict[str, Any] = {"params": sum(p.numel() for p in random_init.parameters())}
    row["random"] = _score(copy.deepcopy(random_init), train_ds, test_ds, cfg.bn_batches)
    for k in cfg.steps:
        row[f"sgd_{k}"] = _trained_score(random_init, base, train_ds, test_ds, cfg.bn_batches, steps=k)
    if cfg.converge_epochs:
        row["converged"] = _trained_score(random_init, base, train_ds, test_ds, cfg.bn_batches,
                                          epochs=cfg.converge_epochs)
    return row


def ghn_row(build: Callable[[], nn.Module], ghn: GraphHyperNetwork, base: TrainConfig, train_ds: Any, test_ds: Any,
            cfg: EvalConfig) -> dict[str, Any]:
    """The hypernetwork columns of one architecture: predicted (and with batch statistics), fine-tuned k steps."""
    predicted = predict(_init(build, cfg.seed), ghn)
    row: dict[str, Any] = {"pred_batchstat": batchstat_accuracy(predicted, test_ds)}
    row["predicted"] = _score(predicted, train_ds, test_ds, cfg.bn_batches)
    for k in cfg.steps:
        row[f"finetune_{k}"] = _trained_score(predicted, base, train_ds, test_ds, cfg.bn_batches, steps=k)
    return row


def cached_row(path: Path | None, settings: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A row read from ``path`` if it was computed with the same ``settings``, else computed (and written
    atomically), so an interrupted evaluation continues where it stopped."""
    if path is not None and path.is_file():
        row = _io.read_json(path, "cached evaluation row", ConfigError)
        if isinstance(row, dict) and row.pop("settings", None) == settings:
            return row
    row = compute()
    if path is not None:
        _io.write_json(path, {**row, "settings": settings})
    return row


def _settings(base: TrainConfig, cfg: EvalConfig) -> dict[str, Any]:
    """What a cached row depends on besides the architecture: data, recipe and evaluation settings."""
    keep = ("dataset", "data_root", "batch_size", "lr", "optimizer", "image_size", "normalize")
    recipe = {k: v for k, v in _config.to_dict(base).items() if k in keep}
    return {**recipe, "steps": list(cfg.steps), "converge_epochs": cfg.converge_epochs, "seed": cfg.seed,
            "bn_batches": cfg.bn_batches}


def compute_baselines(data_config: GHNConfig, base: TrainConfig, train_ds: Any, test_ds: Any, cfg: EvalConfig,
                      baselines: str | Path, progress: Callable[[str, dict[str, Any]], None] | None = None) -> None:
    """Fill the ``baselines`` cache (random init, SGD-k, converged) for ``cfg``'s splits without any hypernetwork,
    e.g. while one trains; ``data_config`` gives the data's shape and classes."""
    settings = _settings(base, cfg)
    for split in cfg.splits:
        for name, build in architectures(split, cfg.size(split), data_config):
            row = cached_row(Path(baselines) / f"{name}.json", settings,
                          lambda build=build: baseline_row(build, base, train_ds, test_ds, cfg))
            if progress is not None:
                progress(split, {"arch": name, **row})


def evaluate_architecture(name: str, build: Callable[[], nn.Module], ghn: GraphHyperNetwork, base: TrainConfig,
                          train_ds: Any, test_ds: Any, cfg: EvalConfig, out: Path | None = None,
                          baselines: Path | None = None) -> dict[str, Any]:
    """One row (predicted, random init, SGD-k, fine-tuned-k, converged, predicted/converged ratio); the GHN columns
    are cached under ``out/rows`` and the GHN-free ones under ``baselines`` (shareable between hypernetworks)."""
    base_path = baselines / f"{name}.json" if baselines is not None else None
    ghn_path = out / "rows" / f"{name}.json" if out is not None else None
    settings = _settings(base, cfg)
    ghn_settings = {**settings, "ghn": digest(ghn)}
    row = {"arch": name, **cached_row(base_path, settings, lambda: baseline_row(build, base, train_ds, test_ds, cfg)),
           **cached_row(ghn_path, ghn_settings, lambda: ghn_row(build, ghn, base, train_ds, test_ds, cfg))}
    if "converged" in row:
        row["ratio"] = row["predicted"] / max(row["converged"], 1e-12)
    return row


def quantized_row(build: Callable[[], nn.Module], ghns: dict[str, GraphHyperNetwork], widths: Sequence[str],
                  base: TrainConfig, train_ds: Any, test_ds: Any, *, sgd_steps: int = 100,
                  qat_steps: int = 0, qat_widths: Sequence[str] = (), calib_batches: int = 8, bn_batches: int = 10,
                  first_last_bits: int | None = 8, seed: int = 0) -> dict[str, Any]:
    """GHN-Q columns of one architecture: ``"{source}:{width}"`` accuracies for each hypernetwork of ``ghns``
    (:func:`predict_quantized`), the random init and the ``sgd_steps``-step SGD twin (both quantized and
    calibrated the same way), and ``"{source}:{width}:qat"`` after ``qat_steps`` QAT steps at ``qat_widths``."""
    random_init = _init(build, seed)
    shape = (train_ds.in_channels, *train_ds.image_size)
    prepared: dict[str, nn.Module] = {}
    trained = train_copy(random_init, base, train_ds, steps=sgd_steps) if sgd_steps else None
    for label in widths:
        width = parse_widths(label)
        for name, ghn in ghns.items():
            prepared[f"{name}:{label}"] = predict_quantized(
                _init(build, seed), ghn, width, train_ds, calib_batches=calib_batches, bn_batches=bn_batches,
                first_last_bits=first_last_bits, batch_size=base.batch_size, seed=seed)
        for name, start in (("random", random_init), (f"sgd_{sgd_steps}", trained)):
            if start is None:
                continue
            target = quantize_target(copy.deepcopy(start), width, shape, first_last_bits)
            prepared[f"{name}:{label}"] = calibrate_target(target, train_ds, calib_batches=calib_batches,
                                                           bn_batches=bn_batches, batch_size=base.batch_size,
                                                           seed=seed)
    row: dict[str, Any] = {key: evaluate_model(model, test_ds)["acc"] for key, model in prepared.items()}
    if qat_steps:
        for key, model in list(prepared.items()):
            if key.split(":")[1] in qat_widths:
                tuned = train_copy(model, base, train_ds, steps=qat_steps)  # keeps its learned ranges
                row[f"{key}:qat"] = _score(tuned, train_ds, test_ds, bn_batches)
    return row


def steps_worth(row: dict[str, Any], steps: Sequence[int]) -> float | None:
    """SGD steps from random init that the prediction is worth: log-interpolated between the measured step counts
    (0 if even the random init is as good; None if more than the largest count)."""
    points = [(0, row["random"])] + [(k, row[f"sgd_{k}"]) for k in sorted(steps)]
    target = row["predicted"]
    if points[0][1] >= target:
        return 0.0
    for (k0, a0), (k1, a1) in zip(points, points[1:], strict=False):
        if a1 >= target:
            frac = (target - a0) / max(a1 - a0, 1e-12)
            lo = math.log(max(k0, 1))
            return float(math.exp(lo + frac * (math.log(k1) - lo)))
    return None


def summarize(rows: list[dict[str, Any]], steps: Sequence[int]) -> dict[str, Any]:
    """Mean, std, min and max of every accuracy column over the rows, and the median steps-worth."""
    columns = [c for c in rows[0] if c not in ("arch", "params")] if rows else []
    out: dict[str, Any] = {"n": len(rows)}
    for c in columns:
        values = [r[c] for r in rows if r.get(c) is not None]
        if values:
            out[c] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
                      "min": min(values), "max": max(values)}
    worth = sorted(math.inf if w is None else w for w in (steps_worth(r, steps) for r in rows))
    median = statistics.median(worth) if worth else None
    out["steps_worth_median"] = median if median is not None and math.isfinite(median) else None
    out["steps_worth_beyond"] = sum(math.isinf(w) for w in worth)
    if rows and "converged" in rows[0]:
        out["below_0.9_of_converged"] = sum(r["ratio"] < 0.9 for r in rows)
    return out


def evaluate_ghn(ghn: GraphHyperNetwork, base: TrainConfig, train_ds: Any, test_ds: Any, cfg: EvalConfig,
                 out: str | Path | None = None, progress: Callable[[str, dict[str, Any]], None] | None = None,
                 baselines: str | Path | None = None) -> dict[str, Any]:
    """Rows and summary per split. With ``out``, each row is cached in ``out/rows`` so an interrupted evaluation
    resumes where it stopped, and ``ghn_eval.json`` holds the result; ``baselines`` caches the GHN-free columns
    (random init, SGD, converged) for reuse by other hypernetworks on the same data and settings."""
    ghn.eval()
    result: dict[str, Any] = {"config": cfg.to_dict(), "train": _config.to_dict(base), "splits": {}}
    for split in cfg.splits:
        rows = []
        for name, build in architectures(split, cfg.size(split), ghn.config):
            row = evaluate_architecture(name, build, ghn, base, train_ds, test_ds, cfg,
                                        Path(out) if out is not None else None,
                                        Path(baselines) if baselines is not None else None)
            rows.append(row)
            if progress is not None:
                progress(split, row)
        result["splits"][split] = {"rows": rows, "summary": summarize(rows, cfg.steps)}
    if out is not None:
        _io.write_json(Path(out) / "ghn_eval.json", result)
    return result


__all__ = ["EVAL_SPLITS", "EvalConfig", "architectures", "batchstat_accuracy", "cached_row", "compute_baselines",
           "evaluate_architecture", "evaluate_ghn", "quantized_row", "steps_worth", "summarize", "train_copy"]
