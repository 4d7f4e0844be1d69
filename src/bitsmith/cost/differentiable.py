"""Expected BOPs as a differentiable torch scalar: the cost that bit-width and pruning searches optimise.

It evaluates the same per-layer formula as :func:`bitsmith.cost.model_cost` (``_formula.layer_bops``), so with
hard (integer bit widths, 0/1 keep) inputs it returns exactly the BOPs of the cost report.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from bitsmith.cost._formula import (
    LayerGeometry,
    channel_vector,
    geometry,
    input_keep,
    keep_plan,
    layer_bops,
    propagate_keep,
    weight_bits_view,
)
from bitsmith.errors import BitsmithError
from bitsmith.graph import Graph
from bitsmith.graph._graph import _short_list

TensorLike = torch.Tensor | float | int
#: What a relative BOPs budget is a fraction of: the model at 8/8 bits, at 32/32 bits, or nothing (BOPs per sample).
RELATIVE_TO = ("w8a8", "fp32", "absolute")


class DifferentiableCost:
    """Precomputes each weight layer's geometry and the keep-propagation plan of ``graph`` once; ``bops``
    then costs soft bit widths and keep probabilities in float64 with gradients to all of them."""

    def __init__(self, graph: Graph) -> None:
        if not isinstance(graph, Graph):
            raise BitsmithError(f"DifferentiableCost expects a bitsmith.graph.Graph, got {type(graph).__name__}")
        self.graph = graph
        self.layers: list[LayerGeometry] = [geometry(graph, n) for n in graph.layers()]
        self.layer_names: list[str] = graph.layer_names()
        self.keep_plan = keep_plan(graph)
        self._by_name = {g.name: g for g in self.layers}

    def _check_names(self, mapping: Mapping[str, TensorLike], what: str, complete: bool) -> None:
        if not isinstance(mapping, Mapping):
            raise BitsmithError(f"{what} must be a mapping from layer name to tensor, got {type(mapping).__name__}")
        unknown = [k for k in mapping if k not in self._by_name]
        if unknown:
            raise BitsmithError(f"{what}: {unknown[0]!r} is not a conv/linear layer; weight layers: "
                                f"{_short_list(self.layer_names)}")
        missing = [n for n in self.layer_names if n not in mapping]
        if complete and missing:
            raise BitsmithError(f"{what}: layer(s) {_short_list(missing, 6)} missing; every weight layer needs one")

    def _reference(self, *mappings: Mapping[str, TensorLike] | None) -> torch.Tensor:
        for mapping in mappings:
            for value in (mapping or {}).values():
                if isinstance(value, torch.Tensor):
                    return torch.zeros((), dtype=torch.float64, device=value.device)
        return torch.zeros((), dtype=torch.float64)

    def per_layer(self, weight_bits: Mapping[str, TensorLike], act_bits: Mapping[str, TensorLike],
                  keep: Mapping[str, TensorLike] | None = None) -> list[torch.Tensor]:
        """Expected BOPs of each weight-layer node (in ``self.layers`` order), as float64 0-d tensors."""
        self._check_names(weight_bits, "weight_bits", complete=True)
        self._check_names(act_bits, "act_bits", complete=True)
        if keep is not None:
            self._check_names(keep, "keep", complete=False)
        ref = self._reference(weight_bits, act_bits, keep)

        def cast(value: TensorLike) -> torch.Tensor:
            return torch.as_tensor(value).to(device=ref.device, dtype=torch.float64)

        layer_keep = {}
        for name, value in (keep or {}).items():
            geom = self._by_name[name]
            layer_keep[name] = channel_vector(geom, cast(value), geom.out_channels, "keep").expand(geom.out_channels)
        node_keeps = propagate_keep(self.keep_plan, layer_keep, ref) if layer_keep else {}
        costs = []
        for geom in self.layers:
            w = weight_bits_view(geom, cast(weight_bits[geom.name]))
            a = channel_vector(geom, cast(act_bits[geom.name]), geom.in_channels, "act_bits")
            costs.append(layer_bops(geom, w, a, layer_keep.get(geom.name), input_keep(geom, node_keeps)))
        return costs

    def bops(self, weight_bits: Mapping[str, TensorLike], act_bits: Mapping[str, TensorLike],
             keep: Mapping[str, TensorLike] | None = None) -> torch.Tensor:
        """Expected total BOPs (float64 scalar with gradients).

        ``weight_bits[name]``: scalar, (out,) per output channel, or broadcastable to the weight shape (per
        weight); ``act_bits[name]``: scalar or one per input channel; ``keep[name]`` (optional, any subset of
        layers): per-output-channel keep probabilities.
        """
        return torch.stack(self.per_layer(weight_bits, act_bits, keep)).sum() if self.layers else \
            self._reference(weight_bits, act_bits, keep)

    def uniform(self, bits: int) -> float:
        """BOPs per sample with every layer at ``bits``/``bits`` and no filter pruned."""
        names = self.layer_names
        return float(self.bops({n: bits for n in names}, {n: bits for n in names}))

    def budget(self, value: float, relative_to: str) -> float:
        """A BOPs budget per sample: ``value`` times the model's BOPs at W8A8 ("w8a8") or FP32 ("fp32"), or
        ``value`` itself ("absolute")."""
        if relative_to not in RELATIVE_TO:
            raise BitsmithError(f"relative_to {relative_to!r} is not known; accepted: {', '.join(RELATIVE_TO)}")
        reference = {"w8a8": 8, "fp32": 32}.get(relative_to)
        return value * (self.uniform(reference) if reference else 1.0)

    def macs(self, keep: Mapping[str, TensorLike] | None = None) -> torch.Tensor:
        """Expected MACs for keep probabilities (BOPs with every bit width 1)."""
        ones = {name: 1.0 for name in self.layer_names}
        return self.bops(ones, ones, keep)
