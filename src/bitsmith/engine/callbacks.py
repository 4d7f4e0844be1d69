"""Callbacks: the hook points through which methods (quantization, CGMQ, DNAS, RPG, GHN) extend the training loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from bitsmith.engine.trainer import Trainer


class Callback:
    """Base class; override only the hooks you need. Order of a step:

    ``before_step`` → forward → loss + ``extra_loss`` terms → backward → ``after_backward`` → grad clip →
    optimizer step → ``after_step``. Per epoch: ``on_epoch_start`` … ``after_train_epoch`` (last step done,
    before evaluation) … ``after_epoch`` (after evaluation, before the checkpoint).
    State returned by ``state_dict`` is saved in every checkpoint and restored on resume.
    """

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]] | None:
        """Extra optimizer parameter groups (e.g. gates with their own lr, or ``lr_scale``: a multiple of the
        run's lr); their params leave the default group."""
        return None

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once before the first epoch (also after a resume)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Called at the start of every epoch (0-based)."""

    def before_step(self, trainer: Trainer, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Called before the forward pass of each training step."""

    def extra_loss(self, trainer: Trainer, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        """A term added to the task loss (e.g. a cost penalty); None adds nothing."""
        return None

    def after_backward(self, trainer: Trainer) -> None:
        """Called after backward, before clipping and the optimizer step: gradients may be edited here."""

    def after_step(self, trainer: Trainer, step: int, loss: float) -> None:
        """Called after each optimizer step with the global step index and the batch loss."""

    def after_train_epoch(self, trainer: Trainer, epoch: int) -> None:
        """Called after an epoch's last training step, before it is evaluated (e.g. to finalise the model)."""

    def after_epoch(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """Called after each epoch's evaluation; entries added to ``metrics`` are logged with the epoch record."""

    def on_fit_end(self, trainer: Trainer, result: dict[str, Any]) -> None:
        """Called once after training finished and the final checkpoint is written."""

    def state_dict(self) -> dict[str, Any]:
        """Tensors and JSON-able values to checkpoint; keys must be strings."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
