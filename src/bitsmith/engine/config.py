"""TrainConfig: every knob of a training run, a dataclass that round-trips through JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bitsmith.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "step")
DEVICES = ("auto", "cpu", "cuda")
NONFINITE_ACTIONS = ("stop", "skip", "restore")
#: Precision of the training forward pass: "fp32", or "bf16" (autocast of matrix products and convolutions to
#: bfloat16; parameters, optimizer state, quantizers and evaluation stay float32).
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """What to train on what, and how. Defaults follow the reference recipe of BENCHMARK_PROTOCOL.md.

    ``on_nonfinite`` says what a NaN/Inf loss or gradient does: "stop" ends the run (its checkpoint stays the last
    good epoch), "skip" drops that step (no update) and goes on, "restore" rolls the model and optimizer back to the
    last good epoch's state and goes on; after ``max_nonfinite`` skipped or restored steps the next one stops the run.
    ``precision="bf16"`` runs the training forward pass under bfloat16 autocast (about 2x faster convolutions on
    CPUs with AVX512-BF16/AMX, and on GPUs); evaluation is always float32. ``channels_last`` keeps conv weights and
    image batches in NHWC memory order while training (faster convolutions on CPU, most of all with bf16).
    """

    model: str = "lenet5"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = "digits"
    data_root: str | None = None
    image_size: int | None = None
    normalize: bool = False
    val: bool = False
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "none"
    step_size: int = 10
    gamma: float = 0.1
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    eval_batch_size: int = 512
    max_steps: int | None = None
    on_nonfinite: str = "stop"
    max_nonfinite: int = 10
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse values no training run can use, naming the field and what is accepted."""
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be a positive integer, got {self.epochs}")
        if self.batch_size <= 0:
            raise ConfigError(f"batch size must be a positive integer, got {self.batch_size}")
        if self.eval_batch_size <= 0:
            raise ConfigError(f"eval batch size must be a positive integer, got {self.eval_batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; accepted: {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown scheduler {self.scheduler!r}; accepted: {', '.join(SCHEDULERS)}")
        if self.device not in DEVICES:
            raise ConfigError(f"unknown device {self.device!r}; accepted: {', '.join(DEVICES)}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"grad clip must be > 0 (or unset), got {self.grad_clip}")
        if self.step_size <= 0:
            raise ConfigError(f"step size must be a positive number of epochs, got {self.step_size}")
        if self.num_threads is not None and self.num_threads <= 0:
            raise ConfigError(f"num threads must be a positive integer, got {self.num_threads}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"max steps must be a positive integer (or unset), got {self.max_steps}")
        if self.on_nonfinite not in NONFINITE_ACTIONS:
            raise ConfigError(f"unknown on_nonfinite action {self.on_nonfinite!r}; accepted: "
                              f"{', '.join(NONFINITE_ACTIONS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; accepted: {', '.join(PRECISIONS)}")
        if self.max_nonfinite < 0:
            raise ConfigError(f"max nonfinite must be >= 0, got {self.max_nonfinite}")
        if self.image_size is not None and self.image_size <= 0:
            raise ConfigError(f"image size must be a positive integer, got {self.image_size}")

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` (a config.json ``train`` section) with the keys of older versions mapped onto today's fields, so
        old runs still resume: ``nonfinite_restores: N`` became ``on_nonfinite: "restore"`` with ``max_nonfinite: N``
        (N = 0: "stop")."""
        if "nonfinite_restores" not in data:
            return data
        data = dict(data)
        restores = data.pop("nonfinite_restores")
        if isinstance(restores, int) and not isinstance(restores, bool) and restores > 0:
            data.setdefault("on_nonfinite", "restore")
            data.setdefault("max_nonfinite", restores)
        return data
