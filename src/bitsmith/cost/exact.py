"""``model_cost``: exact per-layer and total MACs, BOPs, parameters, weight memory, activation peak and DoF."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from bitsmith.cost._formula import input_keep, layer_bops, propagate_keep, weight_bits_view, weighted_sum
from bitsmith.cost.bits import FULL_PRECISION, BitsAssignment, check_bits
from bitsmith.cost.differentiable import DifferentiableCost
from bitsmith.cost.report import CostReport, LayerCost
from bitsmith.errors import BitsmithError, ConfigError
from bitsmith.graph import Graph, trace

BIAS_BITS = 32


def _graph(model_or_graph: nn.Module | Graph, input_shape: Sequence[int] | None) -> Graph:
    if isinstance(model_or_graph, Graph):
        return model_or_graph
    if not isinstance(model_or_graph, nn.Module):
        raise BitsmithError(f"model_cost expects an nn.Module or a Graph, got {type(model_or_graph).__name__}")
    if input_shape is None:
        raise BitsmithError("model_cost needs input_shape, e.g. (3, 32, 32), when given a model")
    return trace(model_or_graph, input_shape)


def _dof(graph: Graph, dof: int | None) -> int:
    if dof is not None:
        if isinstance(dof, bool) or not isinstance(dof, int) or dof < 0:
            raise ConfigError(f"dof must be a non-negative integer, got {dof!r}")
        return dof
    if graph.model is None:
        raise BitsmithError("this graph has no model attached; pass dof explicitly")
    return sum(p.numel() for p in graph.model.parameters() if p.requires_grad)


def _reader_bits(graph: Graph, bits: BitsAssignment) -> list[int]:
    """Per node: the bit width its output is stored at = max act_bits of the weight layers that read it
    (through non-weight ops); 32 where it reaches the model output or nothing reads it."""
    reader = [FULL_PRECISION] * len(graph.nodes)
    for node in reversed(graph.nodes):
        widths = []
        for s in graph.successors(node.index):
            succ = graph.nodes[s]
            if succ.is_weight_layer:
                widths.append(bits.layers[str(succ.module_name)].act_bits)
            else:
                widths.append(reader[s] if succ.kind != "output" else FULL_PRECISION)
        reader[node.index] = max(widths, default=FULL_PRECISION)
    return reader


def _kept_numel(shape: tuple[int, ...], keep: torch.Tensor | None) -> int:
    """Elements of one sample of a tensor of ``shape`` after removing pruned channels (dim 1)."""
    per_sample = math.prod(shape[1:])
    if keep is None or len(shape) < 2:
        return per_sample
    return per_sample // shape[1] * round(float(keep.sum()))


def model_cost(model_or_graph: nn.Module | Graph, input_shape: Sequence[int] | None = None,
               bits: BitsAssignment | None = None, *, weight_bits: int = 32, act_bits: int = 32,
               scale_bits: int = 32, per_channel: bool = True, dof: int | None = None) -> CostReport:
    """Exact cost of a model (or traced graph) per input sample, for ``bits`` or uniform ``weight_bits``/``act_bits``.

    ``weight_bits``/``act_bits`` apply only when ``bits`` is None. Weight memory counts kept weights at their bit
    width, biases at 32 bits, and one ``scale_bits`` scale per kept output channel (``per_channel``) or per
    tensor for every layer below 32 bits; ``dof`` overrides the count of trainable scalars. See docs/COST_MODEL.md.
    """
    graph = _graph(model_or_graph, input_shape)
    if bits is None:
        bits = BitsAssignment.uniform(graph, check_bits(weight_bits, "weight_bits"), check_bits(act_bits, "act_bits"))
    elif not isinstance(bits, BitsAssignment):
        raise BitsmithError(f"bits must be a BitsAssignment, got {type(bits).__name__}")
    bits.validate(graph)
    if isinstance(scale_bits, bool) or not isinstance(scale_bits, int) or not 0 <= scale_bits <= 64:
        raise ConfigError(f"scale_bits must be an integer from 0 to 64 (0 = not counted), got {scale_bits!r}")
    n_dof = _dof(graph, dof)
    cost = DifferentiableCost(graph)
    f64 = torch.float64
    one = torch.ones((), dtype=f64)
    keeps = {name: torch.tensor(lb.keep, dtype=f64) for name, lb in bits.layers.items() if lb.keep is not None}
    with torch.no_grad():
        node_keeps = propagate_keep(cost.keep_plan, keeps, one) if keeps else {}
    reader = _reader_bits(graph, bits)
    seen: set[str] = set()
    layers = []
    for geom in cost.layers:
        lb = bits.layers[geom.name]
        channel_bits = lb.channel_bits(geom.out_channels)
        channel_keep = lb.channel_keep(geom.out_channels)
        keep_out = keeps.get(geom.name)
        keep_in = input_keep(geom, node_keeps)
        w = weight_bits_view(geom, torch.tensor(channel_bits, dtype=f64))
        a = torch.tensor(float(lb.act_bits), dtype=f64)
        with torch.no_grad():
            macs = round(float(layer_bops(geom, one, one, keep_out, keep_in)))
            bops = round(float(layer_bops(geom, w, a, keep_out, keep_in)))
            n_weights = round(float(weighted_sum(geom, one, one, keep_out, keep_in)))
            weight_bits_total = round(float(weighted_sum(geom, w, one, keep_out, keep_in)))
        kept_bits = [b for b, k in zip(channel_bits, channel_keep, strict=True) if k]
        n_kept = len(kept_bits)
        low = sum(1 for b in kept_bits if b < FULL_PRECISION)
        scales = (low if per_channel else int(low > 0)) * scale_bits
        n_bias = n_kept if geom.has_bias else 0
        first_call = geom.name not in seen
        seen.add(geom.name)
        node = graph.nodes[geom.node_index]
        source_shape = graph.nodes[geom.input_index].out_shape if geom.input_index is not None else ()
        layers.append(LayerCost(
            name=geom.name, kind=geom.kind, macs=macs, bops=bops,
            params=(n_weights + n_bias) if first_call else 0,
            weight_bits=sum(kept_bits) / n_kept if n_kept else 0.0, act_bits=lb.act_bits,
            weight_memory_bits=(weight_bits_total + BIAS_BITS * n_bias + scales) if first_call else 0,
            out_channels=geom.out_channels, out_channels_kept=n_kept,
            act_memory_bits=_kept_numel(node.out_shape, node_keeps.get(node.index)) * reader[node.index],
            act_in_memory_bits=(_kept_numel(source_shape, node_keeps.get(geom.input_index)) * lb.act_bits
                                if source_shape else 0),
        ))
    return CostReport(layers=layers, input_shape=tuple(graph.input_shape[1:]), dof=n_dof,
                      scale_bits=scale_bits, per_channel=per_channel)
