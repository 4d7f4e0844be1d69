"""TrainConfig: every knob of a training run, a dataclass that round-trips through JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bitsmith.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "step")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """What to train on what, and how. Defaults follow the reference recipe of BENCHMARK_PROTOCOL.md."""

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
    nonfinite_restores: int = 0

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
        if self.nonfinite_restores < 0:
            raise ConfigError(f"nonfinite restores must be >= 0, got {self.nonfinite_restores}")
        if self.image_size is not None and self.image_size <= 0:
            raise ConfigError(f"image size must be a positive integer, got {self.image_size}")
