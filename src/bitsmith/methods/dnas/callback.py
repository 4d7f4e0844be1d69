"""The search phase as a Trainer callback: sampled configurations for the weight steps, architecture steps on
validation batches (Gumbel-softmax or score function, plus the cost term), the search trajectory and its plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from bitsmith import _io
from bitsmith.engine import Callback
from bitsmith.engine import distributed as dist
from bitsmith.engine.trainer import dataset_tensors
from bitsmith.errors import ConfigError
from bitsmith.methods.dnas.config import DNASConfig
from bitsmith.methods.dnas.space import SearchSpace, arch_parameters

if TYPE_CHECKING:
    from bitsmith.engine.trainer import Trainer

TRAJECTORY_FILE = "search_trajectory.json"
TRAJECTORY_PLOT = "search_trajectory.png"
#: Weight of the running mean that serves as the score function's baseline.
BASELINE_MOMENTUM = 0.9


class DNASCallback(Callback):
    """DARTS-style alternation (first order): every training step trains the weights on a configuration sampled
    from the current logits; after the warm-up epochs, every step is followed by one architecture step on a
    validation batch that minimises the validation loss plus the cost term.

    The architecture logits are left out of the Trainer's optimizer (their training-loss gradient is dropped) and
    move with their own Adam. After each epoch the model is set to the derived configuration, so the logged
    val/test accuracy is that of the architecture the search would return now (before retraining).
    """

    def __init__(self, model: nn.Module, config: DNASConfig, input_shape: Sequence[int]) -> None:
        self.config = config
        self.space = SearchSpace(model, input_shape, config)
        self.arch = arch_parameters(model)
        self.arch_optimizer = torch.optim.Adam(self.arch, lr=config.arch_lr, betas=(0.5, 0.999))
        self.baseline: float | None = None
        self.bops_trajectory: list[float] = []
        self.epochs: list[dict[str, Any]] = []
        self._val: tuple[torch.Tensor, torch.Tensor] | None = None
        self._expected: float | None = None

    @property
    def budget(self) -> float:
        """The BOPs budget per sample."""
        return self.space.budget

    def _warmup_epochs(self, trainer: Trainer) -> int:
        return int(round(self.config.warmup_fraction * trainer.config.epochs))

    def tau(self, trainer: Trainer) -> float:
        """Gumbel temperature: geometric from tau_start to tau_end over the architecture epochs."""
        start, total = self._warmup_epochs(trainer), trainer.config.epochs
        steps_per_epoch = max(1, math.ceil(len(trainer.train_data) / trainer.config.batch_size))  # type: ignore[arg-type]
        span = max(1, (total - start) * steps_per_epoch - 1)
        progress = min(1.0, max(0.0, (trainer.global_step - start * steps_per_epoch) / span))
        return self.config.tau_start * (self.config.tau_end / self.config.tau_start) ** progress

    def on_fit_start(self, trainer: Trainer) -> None:
        if dist.world_size() > 1:
            raise ConfigError("the DNAS search runs in one process (each rank would draw its own architecture); "
                              "run `bitsmith search` without torchrun")
        if "val" not in trainer.eval_data:
            raise ConfigError("the DNAS search updates the architecture on a validation split; train with "
                              "TrainConfig(val=True)")
        self._val = dataset_tensors(trainer.eval_data["val"])

    def before_step(self, trainer: Trainer, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Sample the configuration this weight step trains."""
        self.space.sample()

    def after_backward(self, trainer: Trainer) -> None:
        """The logits do not learn from the training loss (first-order DARTS: only from validation batches)."""
        for p in self.arch:
            p.grad = None

    def _val_batch(self, trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
        """The validation batch of this step: a fixed permutation per pass over the split (from ``seed`` and the
        pass number), so a resumed search sees the same batches."""
        assert self._val is not None
        x, y = self._val
        batch = min(trainer.config.batch_size, len(y))
        per_pass = max(1, len(y) // batch)
        n, i = divmod(trainer.global_step, per_pass)
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + n)
        idx = torch.randperm(len(y), generator=gen)[i * batch:(i + 1) * batch]
        return x[idx].to(trainer.device), y[idx].to(trainer.device)

    def after_step(self, trainer: Trainer, step: int, loss: float) -> None:
        """One architecture step on a validation batch (after the warm-up)."""
        if trainer.epoch >= self._warmup_epochs(trainer):
            x, y = self._val_batch(trainer)
            self.arch_optimizer.zero_grad(set_to_none=True)
            if self.config.estimator == "gumbel":
                self.space.relax(self.tau(trainer))
                try:
                    objective = F.cross_entropy(self.space.model(x), y) + self.space.penalty()
                    objective.backward(inputs=self.arch)
                finally:
                    self.space.unrelax()
            else:
                choices = self.space.sample()
                with torch.no_grad():
                    val_loss = float(F.cross_entropy(self.space.model(x), y))
                advantage = val_loss - (self.baseline if self.baseline is not None else val_loss)
                self.baseline = val_loss if self.baseline is None else (
                    BASELINE_MOMENTUM * self.baseline + (1 - BASELINE_MOMENTUM) * val_loss)
                objective = advantage * self.space.log_prob(choices) + self.space.penalty()
                objective.backward(inputs=self.arch)
            self.arch_optimizer.step()
            self._expected = None
        if self._expected is None:  # the logits only move in architecture steps
            with torch.no_grad():
                self._expected = float(self.space.expected_bops())
        self.bops_trajectory.append(self._expected)

    def after_train_epoch(self, trainer: Trainer, epoch: int) -> None:
        """Evaluate (and, after the last epoch, keep) the derived configuration."""
        self.space.apply(self.space.derived())

    def after_epoch(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """Log expected and derived BOPs, the budget and the logits' probabilities."""
        with torch.no_grad():
            expected = float(self.space.expected_bops())
        derived = self.space.bops(self.space.current())
        metrics.update(expected_bops=expected, derived_bops=derived, budget_bops=self.budget)
        self.epochs.append({"epoch": epoch + 1, "step": trainer.global_step, "expected_bops": expected,
                            "derived_bops": derived, "probabilities": self.space.probabilities()})

    def on_fit_end(self, trainer: Trainer, result: dict[str, Any]) -> None:
        """Final BOPs in the result; the trajectory (JSON and plot) in the run directory."""
        with torch.no_grad():
            expected = float(self.space.expected_bops())
        result.update(expected_bops=expected, derived_bops=self.space.bops(self.space.current()),
                      budget_bops=self.budget)
        if trainer.out_dir is not None and dist.is_main():
            write_trajectory(Path(trainer.out_dir), self.trajectory())

    def trajectory(self) -> dict[str, Any]:
        """The search trajectory: budget, expected BOPs per step, per epoch the BOPs and the probabilities."""
        return {"budget_bops": self.budget, "min_bops": self.space.min_bops,
                "weight_bits": self.config.weight_bits, "act_bits": self.config.act_bits,
                "prune": self.config.prune, "expected_bops_per_step": self.bops_trajectory, "epochs": self.epochs}

    def state_dict(self) -> dict[str, Any]:
        return {"arch_optimizer": self.arch_optimizer.state_dict(), "baseline": self.baseline,
                "bops_trajectory": list(self.bops_trajectory), "epochs": list(self.epochs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "arch_optimizer" in state:
            self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.baseline = state.get("baseline")
        self.bops_trajectory = [float(v) for v in state.get("bops_trajectory", [])]
        self.epochs = list(state.get("epochs", []))


def write_trajectory(out: Path, trajectory: dict[str, Any]) -> None:
    """``search_trajectory.json`` and ``search_trajectory.png``: expected BOPs per step against the budget, and
    each layer's expected weight width over the epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _io.write_json(out / TRAJECTORY_FILE, trajectory)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6))
    steps = trajectory["expected_bops_per_step"]
    top.plot(range(1, len(steps) + 1), steps, lw=1, label="expected BOPs")
    epochs = trajectory["epochs"]
    if epochs:
        top.plot([e["step"] for e in epochs], [e["derived_bops"] for e in epochs], "o", ms=3,
                 label="derived configuration")
    top.axhline(trajectory["budget_bops"], color="tab:red", ls="--", label="budget")
    top.set_xlabel("training step")
    top.set_ylabel("BOPs per sample")
    top.set_yscale("log")
    top.legend(fontsize=7)
    bits = trajectory["weight_bits"]
    for name in (epochs[0]["probabilities"] if epochs else {}):
        means = []
        for e in epochs:
            p = e["probabilities"][name]["weight"]
            kept = sum(p[:len(bits)])
            means.append(sum(pi * b for pi, b in zip(p, bits, strict=False)) / max(kept, 1e-12))
        bottom.plot([e["epoch"] for e in epochs], means, lw=1, label=name)
    bottom.set_xlabel("epoch")
    bottom.set_ylabel("expected weight bits (kept filters)")
    if epochs and len(epochs[0]["probabilities"]) <= 12:
        bottom.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    _io.savefig(out / TRAJECTORY_PLOT, fig, dpi=120)
    plt.close(fig)
