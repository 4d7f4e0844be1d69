"""From a TrainConfig to a trained model: build the datasets and the zoo model, then run the Trainer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from bitsmith import _config, _io, data, zoo
from bitsmith.engine.callbacks import Callback
from bitsmith.engine.checkpoint import save_checkpoint
from bitsmith.engine.config import TrainConfig
from bitsmith.engine.seeding import seed_everything
from bitsmith.engine.trainer import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, Trainer, jsonl_line


@dataclass
class TrainResult:
    """What a training run produced: its final metrics, the trained model, and where the run directory is."""

    metrics: dict[str, Any]
    model: nn.Module
    run_dir: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)


def load_split(cfg: TrainConfig, split: str) -> Any:
    """One split of ``cfg.dataset`` prepared as ``cfg`` says (size, normalisation, validation carve-out)."""
    return data.get(cfg.dataset, cfg.data_root, split, image_size=cfg.image_size, normalize=cfg.normalize,
                    val=cfg.val or split == "val")


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, dict[str, Dataset]]:
    """The training split and the evaluation splits (``val`` when ``cfg.val``, always ``test``) of ``cfg.dataset``."""
    evals: dict[str, Dataset] = {}
    if cfg.val:
        evals["val"] = load_split(cfg, "val")
    evals["test"] = load_split(cfg, "test")
    return load_split(cfg, "train"), evals


def build_model(cfg: TrainConfig, train_ds: Any) -> nn.Module:
    """The zoo model named by ``cfg``, shaped for ``train_ds`` (classes, channels, image size), seeded by cfg.seed."""
    seed_everything(cfg.seed)
    return zoo.create_model(cfg.model, num_classes=train_ds.num_classes, in_channels=train_ds.in_channels,
                            image_size=tuple(train_ds.image_size), **cfg.model_kwargs)


def train(cfg: TrainConfig, out_dir: str | Path | None = None, *, model: nn.Module | None = None,
          model_transform: Callable[[nn.Module], nn.Module] | None = None, callbacks: Sequence[Callback] = (),
          run_config: Mapping[str, Any] | None = None, quiet: bool = False, resume: bool = False,
          init_state: Mapping[str, torch.Tensor] | None = None) -> TrainResult:
    """Train a model described by ``cfg`` (or the given ``model``) and return its final metrics.

    ``init_state`` loads float weights before ``model_transform`` (e.g. quantization) is applied; ``run_config``
    is what ``config.json`` records (default: this TrainConfig alone).
    """
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    train_ds, evals = build_datasets(cfg)
    if model is None:
        model = build_model(cfg, train_ds)
    if init_state is not None:
        model.load_state_dict(init_state)
    if model_transform is not None:
        model = model_transform(model)
    run_config = dict(run_config) if run_config is not None else {"command": "train", "train": _config.to_dict(cfg)}
    trainer = Trainer(model, cfg, train_ds, evals, out_dir=out_dir, callbacks=callbacks, run_config=run_config,
                      quiet=quiet)
    metrics = trainer.fit(resume=resume)
    return TrainResult(metrics=metrics, model=trainer.model, run_dir=Path(out_dir) if out_dir is not None else None,
                       history=trainer.history)


def save_run(out_dir: str | Path, model: nn.Module, run_config: Mapping[str, Any],
             history: Sequence[Mapping[str, Any]]) -> Path:
    """Write a run directory for a model that was not trained here (e.g. post-training quantization).

    The checkpoint holds the model state only; such a run can be evaluated, reported and exported, not resumed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _io.write_json(out / CONFIG_FILE, dict(run_config))
    _io.write_text(out / METRICS_FILE, "".join(jsonl_line(r) for r in history))
    save_checkpoint(out / CHECKPOINT_FILE, {"model": model.state_dict(), "epoch": -1, "history": list(history)})
    return out
