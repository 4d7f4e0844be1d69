"""The BOP constraint of a CGMQ model: its bound, its exact (hard-gate) and differentiable BOPs, and the final
projection that guarantees the bound."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from bitsmith.cost import DifferentiableCost
from bitsmith.errors import ConfigError
from bitsmith.graph import trace
from bitsmith.methods.cgmq.config import CGMQConfig
from bitsmith.methods.cgmq.gates import GatedQuantizer
from bitsmith.quant import QuantConv2d, QuantLinear

#: Values a gate is set to when the projection switches it off / the fill switches it on.
OFF = -1e-3
ON = 1e-3


def gated_layers(model: nn.Module) -> Iterator[tuple[str, QuantConv2d | QuantLinear]]:
    """(name, layer) of every conv/linear whose weight quantizer is gated."""
    for name, module in model.named_modules():
        if isinstance(module, (QuantConv2d, QuantLinear)) and isinstance(module.weight_quant, GatedQuantizer):
            yield name, module


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every gate tensor of a CGMQ model."""
    return [m.gates for m in model.modules() if isinstance(m, GatedQuantizer)]


class BopConstraint:
    """BOPs of ``model`` (a CGMQ model) as a function of its gates, and the bound ``config`` sets on them."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int], config: CGMQConfig) -> None:
        self.model = model
        self.cost = DifferentiableCost(trace(model, input_shape))
        self.layers = dict(gated_layers(model))
        missing = [n for n in self.cost.layer_names if n not in self.layers]
        if missing:
            raise ConfigError(f"CGMQ: layer(s) {', '.join(missing)} are not gated; build the model with "
                              "cgmq.prepare")
        self.min_bops = self.cost.uniform(config.bits[0])
        self.bound = self.cost.budget(config.bop_budget, config.relative_to)
        if self.bound < self.min_bops:
            raise ConfigError(f"BOP bound {self.bound:.6g} is below the cheapest configuration the gates can "
                              f"reach ({self.min_bops:.6g} BOPs, every layer at {config.bits[0]}/{config.bits[0]} "
                              "bits); raise the budget")

    def bops(self, ste: bool = False, threshold: float = 0.0) -> torch.Tensor:
        """BOPs per sample at the current gates (exact with ``ste=False``; with gate gradients otherwise)."""
        w = {n: layer.weight_quant.bit_width(ste, threshold) for n, layer in self.layers.items()}
        a = {n: layer.act_quant.bit_width(ste, threshold) for n, layer in self.layers.items()}
        return self.cost.bops(w, a)

    def _fits(self, threshold: float) -> bool:
        """Whether the exact BOPs with every gate at or below ``threshold`` off are within the bound."""
        return float(self.bops(threshold=threshold)) <= self.bound

    def _set_gates(self, low: float, high: float, value: float) -> int:
        """Set every gate with ``low < g <= high`` to ``value``; returns how many."""
        switched = 0
        for g in gate_parameters(self.model):
            mask = (g > low) & (g <= high)
            switched += int(mask.sum())
            g.masked_fill_(mask, value)
        return switched

    def _gate_values(self) -> torch.Tensor:
        return torch.cat([g.detach().reshape(-1) for g in gate_parameters(self.model)])

    @torch.no_grad()
    def project(self) -> int:
        """If the exact BOPs exceed the bound, switch off the gates with the smallest values (the least useful
        refinements) until they do not; deterministic. Returns the number of gates switched off."""
        if float(self.bops()) <= self.bound:
            return 0
        values = self._gate_values()
        candidates = torch.unique(values[values > 0])  # ascending; switching all of them off reaches min_bops
        first = bisect.bisect_left(range(len(candidates)), True, key=lambda i: self._fits(float(candidates[i])))
        return self._set_gates(0.0, float(candidates[first]), OFF)

    @torch.no_grad()
    def fill(self) -> int:
        """If the exact BOPs are below the bound, switch on the gates that are off with the largest values (the
        refinements the loss pushed up most recently) while the bound holds; deterministic. Returns the number
        of gates switched on."""
        if float(self.bops()) >= self.bound:
            return 0
        values = self._gate_values()
        off = torch.unique(values[values <= 0]).flip(0)  # closest to on first
        # thresholds[i] lies just below off[i]: with it, every gate down to off[i] is on
        thresholds = torch.cat([(off[:-1] + off[1:]) / 2, off[-1:] - 1.0])
        over = bisect.bisect_left(range(len(thresholds)), True, key=lambda i: not self._fits(float(thresholds[i])))
        return self._set_gates(float(thresholds[over - 1]), 0.0, ON) if over > 0 else 0
