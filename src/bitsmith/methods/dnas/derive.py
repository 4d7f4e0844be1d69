"""From searched logits to a configuration that meets the budget: derive it, check it with the exact cost, and
repair it deterministically when it is over."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from bitsmith.cost.bits import BitsAssignment
from bitsmith.methods.dnas.space import Choice, SearchSpace, copy_choices


@dataclass
class Derivation:
    """The derived configuration (``bits``), its exact BOPs before and after the repair, the budget, and what
    the repair changed per layer."""

    bits: BitsAssignment
    choices: dict[str, Choice]
    searched_bops: float
    bops: float
    budget: float
    repairs: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def repaired(self) -> bool:
        """True when the derived configuration was over the budget and had to be lowered."""
        return bool(self.repairs)

    def summary(self, space: SearchSpace) -> dict[str, Any]:
        """JSON-ready summary: budget, BOPs, repair, and per layer the chosen widths and kept filters."""
        layers = {}
        for name, c in self.choices.items():
            wq = space.layers[name].weight_quant
            counts = {str(b): int((c.weight == k).sum()) for k, b in enumerate(wq.options)}
            if wq.prune:
                counts["pruned"] = int((c.weight == wq.pruned_index).sum())
            kept = [b for b, k in zip(wq.widths(c.weight), wq.kept(c.weight), strict=True) if k]
            layers[name] = {"filters": counts, "mean_weight_bits": sum(kept) / len(kept),
                            "act_bits": space.layers[name].act_quant.options[c.act],
                            "kept": len(kept), "out_channels": int(c.weight.numel())}
        return {"budget_bops": self.budget, "searched_bops": self.searched_bops, "bops": self.bops,
                "budget_met": self.bops <= self.budget, "repaired": self.repaired, "repairs": self.repairs,
                "min_bops": space.min_bops, "layers": layers}


def _lower(space: SearchSpace, name: str, c: Choice, importance: torch.Tensor) -> str | None:
    """One deterministic step down in layer ``name``: the least important filter among those at the widest
    weight option drops one option; when all sit at the lowest, the activation drops one option; then the least
    important kept filter is pruned (if the layer may prune and keeps more than one). Returns what changed."""
    wq = space.layers[name].weight_quant
    pruned = wq.pruned_index
    kept = wq.kept(c.weight)
    widest = int(c.weight[kept].max())
    if widest > 0:
        candidates = torch.nonzero(kept & (c.weight == widest)).flatten()
        target = candidates[torch.argmin(importance[candidates])]
        c.weight[target] = widest - 1
        return "weight_lowered"
    if c.act > 0:
        c.act -= 1
        return "act_lowered"
    if pruned is not None and int(kept.sum()) > 1:
        candidates = torch.nonzero(kept).flatten()
        c.weight[candidates[torch.argmin(importance[candidates])]] = pruned
        return "filters_pruned"
    return None


def repair(space: SearchSpace, choices: dict[str, Choice]) -> tuple[dict[str, Choice], dict[str, dict[str, int]]]:
    """Lower ``choices`` until the exact BOPs meet the budget: always in the layer that costs most now (ties: graph
    order), one step of :func:`_lower` at a time. Deterministic; reaches the budget whenever it is feasible
    (the space's cheapest configuration is the end of every layer's lowering)."""
    choices = copy_choices(choices)
    importance = {name: space.importance(name) for name in choices}
    repairs: dict[str, dict[str, int]] = {}
    exhausted: set[str] = set()
    per_layer = space.layer_bops(choices)
    while sum(per_layer.values()) > space.budget:
        open_layers = [n for n in space.cost.layer_names if n not in exhausted]
        if not open_layers:
            break
        name = max(open_layers, key=lambda n: per_layer[n])
        change = _lower(space, name, choices[name], importance[name])
        if change is None:
            exhausted.add(name)
            continue
        counts = repairs.setdefault(name, {})
        counts[change] = counts.get(change, 0) + 1
        per_layer = space.layer_bops(choices)
    return choices, repairs


def derive(space: SearchSpace) -> Derivation:
    """The configuration the search chose (:meth:`SearchSpace.derived`), checked against the budget with the
    exact cost and repaired if it is over."""
    choices = space.derived()
    searched = space.bops(choices)
    repairs: dict[str, dict[str, int]] = {}
    if searched > space.budget:
        choices, repairs = repair(space, choices)
    return Derivation(bits=space.assignment(choices), choices=choices, searched_bops=searched,
                      bops=space.bops(choices), budget=space.budget, repairs=repairs)
