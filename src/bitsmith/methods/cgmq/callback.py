"""CGMQ's training hook: the CGGD constraint direction on the gates, the BOPs trajectory, the final projection
and the run's artifacts (bits.json, bit-width chart, BOPs trajectory plot)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bitsmith.engine import Callback
from bitsmith.engine import distributed as dist
from bitsmith.methods.cgmq.config import CGMQConfig
from bitsmith.methods.cgmq.constraint import BopConstraint, gate_parameters, gated_layers
from bitsmith.methods.cgmq.gates import GatedQuantizer

if TYPE_CHECKING:
    from bitsmith.engine.trainer import Trainer

BITS_FILE = "bits.json"
BITS_CHART = "bits_chart.png"
TRAJECTORY_PLOT = "bops_trajectory.png"
#: With ``gate_step="rms"``, the largest move of one gate in one step, in units of ``gate_lr``.
MAX_RMS_STEPS = 5.0


class CGMQCallback(Callback):
    """Constraint Guided Gradient Descent on the gates of a CGMQ model.

    After each backward pass, if the exact BOPs (hard gates) exceed the bound, the gates' loss gradient gets the
    direction that lowers the (straight-through) BOPs through the gates that are on, scaled to ``factor`` times
    the loss gradient's norm; within the bound it adds nothing. The gates then move by that direction averaged
    with momentum, scaled so the root-mean-square move is ``gate_lr`` (their own update, outside the Trainer's
    optimizer, which would rescale each gate alone and lose which gates matter most). In the last
    ``freeze_fraction`` of the epochs the gates are frozen (after a projection) so the weights adapt to the final
    widths; a deterministic projection after the last step guarantees the bound.
    """

    def __init__(self, model: nn.Module, config: CGMQConfig, input_shape: Sequence[int]) -> None:
        self.config = config
        self.constraint = BopConstraint(model, input_shape, config)
        self.gates = gate_parameters(model)
        self.trajectory: list[float] = []
        self.current = float(self.constraint.bops())
        self.projected = 0
        self.filled = 0
        self.momentum: list[torch.Tensor] | None = None

    @property
    def bound(self) -> float:
        """The BOP bound per sample."""
        return self.constraint.bound

    def _freeze_epoch(self, trainer: Trainer) -> int:
        """First epoch of the final phase in which the gates are frozen (the weights adapt to the widths)."""
        epochs = trainer.config.epochs
        return epochs - int(round(self.config.freeze_fraction * epochs)) if epochs > 1 else epochs

    def on_fit_start(self, trainer: Trainer) -> None:
        """The BOPs of the gates the model holds now: after a resume those of the checkpoint, not of the fresh model
        the callback was built with (the trajectory of a resumed frozen phase records them)."""
        with torch.no_grad():
            self.current = float(self.constraint.bops())

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Entering the frozen phase: project onto the bound first, so the widths trained on are final."""
        frozen = epoch >= self._freeze_epoch(trainer)
        for module in self.constraint.model.modules():
            if isinstance(module, GatedQuantizer):
                module.frozen = frozen
        if epoch == self._freeze_epoch(trainer):
            self.projected += self.constraint.project()
            if self.config.fill:
                self.filled += self.constraint.fill()
            with torch.no_grad():
                self.current = float(self.constraint.bops())

    def after_backward(self, trainer: Trainer) -> None:
        """Update the gates (and take them out of the optimizer's step): the loss gradient plus, while the bound
        is violated, the CGGD direction; averaged with momentum and scaled by ``gate_step`` to ``gate_lr``."""
        grads = [g.grad if g.grad is not None else torch.zeros_like(g) for g in self.gates]
        for gate in self.gates:
            gate.grad = None
        if trainer.epoch >= self._freeze_epoch(trainer):
            return
        with torch.no_grad():
            self.current = float(self.constraint.bops())
        if self.current > self.bound:
            grads = self._with_constraint_direction(grads)
        beta = self.config.gate_momentum
        if self.momentum is None:
            self.momentum = [torch.zeros_like(g) for g in self.gates]
        with torch.no_grad():
            for buf, grad in zip(self.momentum, grads, strict=True):
                buf.mul_(beta).add_(grad, alpha=1.0 - beta)
            if self.config.gate_step == "max":
                scale = max(float(buf.abs().max()) for buf in self.momentum)
            else:
                count = sum(buf.numel() for buf in self.momentum)
                scale = float(torch.sqrt(sum((buf.double() ** 2).sum() for buf in self.momentum) / count))
            if scale > 0:
                for gate, buf in zip(self.gates, self.momentum, strict=True):
                    gate.sub_((buf / scale).clamp_(-MAX_RMS_STEPS, MAX_RMS_STEPS), alpha=self.config.gate_lr)

    def _with_constraint_direction(self, loss_grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """``loss_grads`` plus the direction lowering the straight-through BOPs, with ``factor`` times their norm;
        with ``active_only`` through the gates that are on (pushing a gate that is off lowers nothing)."""
        soft = self.constraint.bops(ste=True)
        directions = torch.autograd.grad(soft, self.gates, allow_unused=True)
        if self.config.active_only:
            directions = [d if d is None else d * (gate.detach() > 0) for d, gate in zip(directions, self.gates,
                                                                                       strict=True)]
        loss_norm = torch.sqrt(sum((g.double() ** 2).sum() for g in loss_grads))
        dir_norm = torch.sqrt(sum((d.double() ** 2).sum() for d in directions if d is not None))
        if float(dir_norm) == 0.0:
            return loss_grads
        magnitude = self.config.factor * max(float(loss_norm), 1e-12) / float(dir_norm)
        return [grad if d is None else grad + magnitude * d.to(grad.dtype)
                for grad, d in zip(loss_grads, directions, strict=True)]

    def after_step(self, trainer: Trainer, step: int, loss: float) -> None:
        """Record the exact BOPs the step was taken at."""
        self.trajectory.append(self.current)

    def after_train_epoch(self, trainer: Trainer, epoch: int) -> None:
        """After the last step: project onto the bound if training ended above it."""
        if epoch == trainer.config.epochs - 1:
            self.projected += self.constraint.project()
            self.current = float(self.constraint.bops())

    def after_epoch(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """Log the exact BOPs, the bound and (last epoch) whether the projection was needed."""
        metrics["bops"] = float(self.constraint.bops())
        metrics["bops_bound"] = self.bound
        metrics["bound_met"] = metrics["bops"] <= self.bound
        if epoch == trainer.config.epochs - 1:
            metrics["projected_gates"] = self.projected
            metrics["filled_gates"] = self.filled

    def on_fit_end(self, trainer: Trainer, result: dict[str, Any]) -> None:
        """Final BOPs in the result; bits.json, the bit-width chart and the trajectory plot in the run."""
        result.update(bops=float(self.constraint.bops()), bops_bound=self.bound, projected_gates=self.projected,
                      filled_gates=self.filled, min_bops=self.constraint.min_bops)
        result["bound_met"] = result["bops"] <= self.bound
        if trainer.out_dir is not None and dist.is_main():
            write_artifacts(self.constraint.model, Path(trainer.out_dir), self.trajectory, self.bound)

    def state_dict(self) -> dict[str, Any]:
        return {"trajectory": list(self.trajectory), "projected": self.projected, "filled": self.filled,
                "momentum": list(self.momentum) if self.momentum is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trajectory = [float(v) for v in state.get("trajectory", [])]
        self.projected = int(state.get("projected", 0))
        self.filled = int(state.get("filled", 0))
        if state.get("momentum") is not None:
            self.momentum = [t.to(g.device).clone() for t, g in zip(state["momentum"], self.gates, strict=True)]


def write_artifacts(model: nn.Module, out: Path, trajectory: Sequence[float], bound: float) -> None:
    """bits.json (the learned widths, per channel the widest), the bit-width chart and the BOPs trajectory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bitsmith.quant import bits_assignment

    bits_assignment(model).save(out / BITS_FILE)
    layers = list(gated_layers(model))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(layers) + 2), 3.6))
    for i, (_, layer) in enumerate(layers):
        width = layer.weight_quant.bit_width(ste=False).detach().reshape(-1).float()
        jitter = torch.linspace(-0.25, 0.25, width.numel()) if width.numel() > 1 else torch.zeros(1)
        ax.scatter((i + jitter).tolist(), width.tolist(), s=6, alpha=0.5, color="tab:blue",
                   label="weights" if i == 0 else None)
        ax.scatter([i], [float(layer.act_quant.bit_width(ste=False))], marker="_", s=300, color="tab:red",
                   label="input activation" if i == 0 else None)
    ax.set_xticks(range(len(layers)), [n for n, _ in layers], rotation=45, ha="right", fontsize=7)
    ax.set_yscale("log", base=2)
    ax.set_ylabel("bits")
    ax.set_title("Learned bit widths per layer (each dot: one weight group)")
    _finish(fig, ax, out / BITS_CHART)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(range(1, len(trajectory) + 1), trajectory, lw=1, label="BOPs (hard gates)")
    ax.axhline(bound, color="tab:red", ls="--", label="bound")
    ax.set_xlabel("training step")
    ax.set_ylabel("BOPs per sample")
    ax.set_yscale("log")
    _finish(fig, ax, out / TRAJECTORY_PLOT)


def _finish(fig: Any, ax: Any, path: Path) -> None:
    """Legend, layout, atomic save, close."""
    import matplotlib.pyplot as plt

    from bitsmith import _io

    ax.legend(fontsize=7)
    fig.tight_layout()
    _io.savefig(path, fig, dpi=120)
    plt.close(fig)
