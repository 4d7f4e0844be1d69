"""GHN training through the shared Trainer: the hypernetwork is the trained model, each step a meta-batch of
sampled architectures, each fed the step's image batch with its predicted parameters.

:class:`GHNTask` is the module the Trainer trains (its only parameters are the hypernetwork's); it returns
(meta_batch, batch, classes) logits, whose mean cross-entropy the Trainer minimises. Under torchrun every rank draws
its own architectures. :class:`GHNCallback` scores fixed validation architectures every few epochs (BN statistics
recalibrated on training batches) and writes the hypernetwork file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from bitsmith import _config
from bitsmith.engine import Callback, TrainConfig, Trainer, build_datasets, evaluate_model, recalibrate_bn
from bitsmith.engine import distributed as dist
from bitsmith.errors import ConfigError
from bitsmith.methods.ghn.config import GHNConfig, GHNTrainConfig, parse_quant
from bitsmith.methods.ghn.encoding import Encoding, encode
from bitsmith.methods.ghn.io import GHN_FILE, load_ghn, save_ghn
from bitsmith.methods.ghn.model import GraphHyperNetwork
from bitsmith.methods.ghn.predict import predict_many
from bitsmith.methods.ghn.quantized import conditioned, predict_quantized, sample_widths, training_target
from bitsmith.zoo import space

DRAW_RANGE = 2**31 - 1


@dataclass
class Architecture:
    """A built network of the search space and its encoding."""

    model: nn.Module
    encoding: Encoding


def build_architecture(spec: space.ArchSpec, config: GHNConfig) -> Architecture:
    """The network of ``spec`` shaped for the GHN's data, with its encoding. Its (never used) initial weights are
    drawn from a private generator, so building one leaves the global RNG, and thus training and resume, untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(spec.key()[:8], 16))
        model = space.build_network(spec, config.num_classes, config.in_channels, config.image_size)
    return Architecture(model, encode(model, config.input_shape, cutoff=config.cutoff))


class ArchitectureSource:
    """Training architectures of a named space: with ``pool`` 0 a fresh architecture for every draw, else the
    first ``pool`` training architectures (each built once, on first use)."""

    def __init__(self, config: GHNConfig, pool: int, space_name: str = space.DEFAULT_SPACE) -> None:
        self.config, self.pool, self.space = config, pool, space_name
        self._cache: dict[int, Architecture] = {}

    @property
    def draw_range(self) -> int:
        """Draws are integers in ``[0, draw_range)``."""
        return self.pool or DRAW_RANGE

    def get(self, draw: int) -> Architecture:
        """The architecture of draw ``draw`` (cached when pooled)."""
        if not self.pool:
            return build_architecture(space.train_architecture(draw, self.space), self.config)
        if draw not in self._cache:
            self._cache[draw] = build_architecture(space.train_architecture(draw, self.space), self.config)
        return self._cache[draw]


class GHNTask(nn.Module):
    """Training: (meta_batch, B, classes) logits of freshly drawn architectures with predicted parameters, each
    quantized at drawn widths under GHN-Q training (``train_cfg.quant``). Evaluation: the same for the fixed
    evaluation architectures, as last filled by :class:`GHNCallback`."""

    def __init__(self, ghn: GraphHyperNetwork, source: ArchitectureSource, meta_batch: int,
                 eval_archs: list[Architecture], train_cfg: GHNTrainConfig | None = None) -> None:
        super().__init__()
        self.ghn = ghn
        self.meta_batch = meta_batch
        self._source = source
        self.eval_archs = eval_archs  # a plain list: their parameters are predicted, never trained
        self.train_cfg = train_cfg or GHNTrainConfig()
        self._quant = parse_quant(self.train_cfg.quant)

    def draw(self) -> list[Architecture]:
        """This rank's architectures for the step (global torch RNG: reproducible and resumable)."""
        world, rank = dist.world_size(), dist.rank()
        draws = torch.randint(0, self._source.draw_range, (self.meta_batch * world,))
        mine = draws[rank * self.meta_batch:(rank + 1) * self.meta_batch]
        return [self._source.get(int(d)) for d in mine]

    def targets(self, archs: Sequence[Architecture]) -> tuple[list[nn.Module], list[Encoding]]:
        """The networks a step runs (quantized at drawn widths under GHN-Q training) and their encodings."""
        if self._quant is None:
            return [a.model for a in archs], [a.encoding for a in archs]
        cfg, shape = self.train_cfg, self.ghn.config.input_shape
        models, encodings = [], []
        for arch in archs:
            widths = sample_widths(self._quant, cfg.bits, cfg.per_layer, list(arch.encoding.layers))
            target = training_target(arch.model, widths, shape, cfg.first_last_bits)
            models.append(target)
            encodings.append(conditioned(arch.encoding, self.ghn, target))
        return models, encodings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stacked logits of every architecture of the meta-batch (training) or of the evaluation set."""
        if not self.training:
            return torch.stack([arch.model(x) for arch in self.eval_archs])
        models, encodings = self.targets(self.draw())
        with torch.autocast(x.device.type, enabled=False):  # the hypernetwork in float32; bf16 is for the targets
            params = self.ghn(encodings)
        outs = []
        for model, predicted in zip(models, params, strict=True):
            model.to(x.device).train()
            outs.append(functional_call(model, predicted, (x,)))
        return torch.stack(outs)


class GHNCallback(Callback):
    """Every ``eval_every`` epochs (and after the last): fills the evaluation architectures with predicted
    parameters, recalibrates their BN statistics on training batches, logs the mean and worst accuracy on each
    evaluation split (``val_acc``, ``val_acc_worst``; GHN-Q training adds each trained width, e.g.
    ``val_acc_w4a4``, quantized and calibrated as :func:`predict_quantized` does) and writes ``ghn.safetensors``
    (with ``info``, the epochs and steps so far and the number of ranks) into the run. Under torchrun each rank
    scores its share of the architectures."""

    def __init__(self, task: GHNTask, train_cfg: GHNTrainConfig, info: dict[str, Any],
                 eval_data: dict[str, Any]) -> None:
        self.task, self.train_cfg, self.info, self.eval_data = task, train_cfg, info, eval_data

    def _due(self, trainer: Any, epoch: int) -> bool:
        last = epoch + 1 == trainer.config.epochs or (
            trainer.config.max_steps is not None and trainer.global_step >= trainer.config.max_steps)
        return last or (epoch + 1) % self.train_cfg.eval_every == 0

    def after_epoch(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        if not self._due(trainer, epoch):
            return
        cfg, world = self.train_cfg, dist.world_size()
        mine = [i for i in range(len(self.task.eval_archs)) if i % world == dist.rank()]  # ranks share the work
        archs = [self.task.eval_archs[i] for i in mine]
        quantized = [w for w in cfg.eval_widths() if w != "FP"]
        predict_many([a.model for a in archs], self.task.ghn,
                     [conditioned(a.encoding, self.task.ghn, a.model) for a in archs])
        for arch in archs:
            arch.model.to(trainer.device)
            recalibrate_bn(arch.model, trainer.train_data, cfg.bn_batches)
        scored = {"": [a.model for a in archs]}
        for label in quantized:
            scored[f"_{label.lower()}"] = [
                predict_quantized(a.model, self.task.ghn, label, trainer.train_data, encoding=a.encoding,
                                  first_last_bits=cfg.first_last_bits, bn_batches=cfg.bn_batches)
                for a in archs]
        for split, data in self.eval_data.items():
            for suffix, models in scored.items():
                scores = [0.0] * len(self.task.eval_archs)
                for i, m in zip(mine, models, strict=True):
                    scores[i] = evaluate_model(m, data, trainer.config.eval_batch_size, trainer.device)["acc"]
                scores = dist.all_reduce_sum(scores, trainer.device)
                metrics[f"{split}_acc{suffix}"] = sum(scores) / len(scores)
                metrics[f"{split}_acc{suffix}_worst"] = min(scores)
        if trainer.out_dir is not None and dist.is_main():
            info = {**self.info, "epochs_trained": epoch + 1, "steps": trainer.global_step, "ranks": dist.world_size()}
            save_ghn(Path(trainer.out_dir) / GHN_FILE, self.task.ghn, info)


def evaluation_architectures(config: GHNConfig, count: int, space_name: str = space.DEFAULT_SPACE
                             ) -> list[Architecture]:
    """The first ``count`` architectures of the held-out ``val`` split of a space, built for the GHN's data."""
    return [build_architecture(spec, config) for spec in space.split("val", count, space_name)]


def make_task(config: GHNConfig, train_cfg: GHNTrainConfig, start: GraphHyperNetwork | None = None) -> GHNTask:
    """A fresh hypernetwork (or one starting from ``start``'s weights, ``train_cfg.init_from``) wrapped for
    training, with its architecture source and evaluation architectures."""
    ghn = GraphHyperNetwork(config)
    if start is not None:
        have, want = start.config.to_dict(), config.to_dict()
        differ = [f"{k} {have.get(k)!r} vs {value!r}" for k, value in want.items()
                  if k != "bit_conditioned" and have.get(k) != value]
        if differ:
            raise ConfigError(f"--init-from {train_cfg.init_from}: its shape differs from the GHN to train "
                              f"({', '.join(differ)}; only bit_conditioned may differ)")
        ghn.load_state_dict(start.state_dict())
    return GHNTask(ghn, ArchitectureSource(config, train_cfg.pool, train_cfg.space), train_cfg.meta_batch,
                   evaluation_architectures(config, train_cfg.eval_archs, train_cfg.space), train_cfg)


def data_config(train_ds: Any) -> dict[str, Any]:
    """num_classes, in_channels and image_size of a dataset, as GHNConfig fields (square images only)."""
    h, w = tuple(train_ds.image_size)
    if h != w:
        raise ValueError(f"GHN training needs square images, got {h}x{w}")
    return {"num_classes": int(train_ds.num_classes), "in_channels": int(train_ds.in_channels), "image_size": int(h)}


def recipe(dataset: str, **changes: Any) -> TrainConfig:
    """The GHN training recipe (AdamW lr 1e-3, weight decay 1e-5, cosine, gradient clip 5, 120 epochs, up to 5
    non-finite roll-backs; the protocol's batch: 64 on digits, 128 on Fashion-MNIST), with ``changes`` on top (None
    keeps the recipe's value; ``grad_clip=0`` turns the clip off)."""
    fields: dict[str, Any] = {
        "model": "cellnet", "dataset": dataset, "val": True, "epochs": 120, "lr": 1e-3, "optimizer": "adamw",
        "weight_decay": 1e-5, "scheduler": "cosine", "grad_clip": 5.0, "on_nonfinite": "restore",
        "max_nonfinite": 5, "batch_size": 128 if dataset == "fashion-mnist" else 64,
    }
    fields.update({k: v for k, v in changes.items() if v is not None})
    if fields["grad_clip"] == 0:
        fields["grad_clip"] = None
    return TrainConfig(**fields)


def train_ghn(train: TrainConfig, ghn: dict[str, Any] | None = None, train_cfg: GHNTrainConfig | None = None,
              out_dir: str | Path | None = None, *, resume: bool = False, quiet: bool = False,
              callbacks: Sequence[Callback] = ()) -> tuple[GraphHyperNetwork, dict[str, Any]]:
    """Train a hypernetwork on ``train.dataset`` (its validation split scores the evaluation architectures; the
    test split is never used). ``ghn`` holds GHNConfig fields other than the data's shape; with
    ``train_cfg.init_from`` the fields not given are that GHN's. Returns the trained hypernetwork and the Trainer's
    final metrics; with ``out_dir`` the run folder also gets ``ghn.safetensors``."""
    train_cfg = train_cfg or GHNTrainConfig()
    if train.num_threads:
        torch.set_num_threads(train.num_threads)
    train_ds, evals = build_datasets(train)
    evals = {"val": evals["val"]} if "val" in evals else {}
    start = load_ghn(train_cfg.init_from) if train_cfg.init_from is not None else None
    inherited = {k: v for k, v in start.config.to_dict().items()
                 if k not in ("num_classes", "in_channels", "image_size", "bit_conditioned")} if start else {}
    config = GHNConfig.from_dict({**inherited, **(ghn or {}), **data_config(train_ds),
                                  "bit_conditioned": train_cfg.bit_conditioned})
    torch.manual_seed(train.seed)
    task = make_task(config, train_cfg, start)
    info = {"dataset": train.dataset, "space_version": space.SPACE_VERSION, "train": _config.to_dict(train),
            "ghn_train": train_cfg.to_dict()}
    run_config = {"command": "ghn train", "train": _config.to_dict(train), "ghn": config.to_dict(),
                  "ghn_train": train_cfg.to_dict()}
    callback = GHNCallback(task, train_cfg, info, evals)
    trainer = Trainer(task, train, train_ds, {}, out_dir=out_dir, callbacks=[callback, *callbacks],
                      run_config=run_config, quiet=quiet)
    metrics = trainer.fit(resume=resume)
    return task.ghn.eval(), metrics
