"""The one BOPs formula of bitsmith, and the rule that carries filter-keep masks from layer to layer.

For a conv/linear layer with output positions P (H_out*W_out for a conv, 1 for a linear on (N, F)),
weight elements e = (o, j, k) (output channel, input channel within its group, kernel position)::

    BOPs = P * sum_e  w_bits[e] * a_bits[c(e)] * keep_out[o] * keep_in[c(e)]

where c(e) = group(o) * (in_channels / groups) + j is the input channel that e reads. MACs are the same sum
with w_bits = a_bits = 1. Everything here is torch arithmetic, so soft (expected) bit widths and keep
probabilities give expected BOPs with gradients, and 0/1 inputs give the exact count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from bitsmith.errors import BitsmithError
from bitsmith.graph import CHANNELWISE_KINDS, WEIGHT_KINDS, Graph, Node


@dataclass(frozen=True)
class LayerGeometry:
    """What the formula needs to know about one weight-layer node (precomputed once per graph)."""

    node_index: int
    name: str
    kind: str
    weight_shape: tuple[int, ...]
    groups: int
    positions: int
    has_bias: bool
    input_index: int | None
    input_channel_aligned: bool

    @property
    def out_channels(self) -> int:
        """Output channels (conv) or output features (linear)."""
        return self.weight_shape[0]

    @property
    def in_channels(self) -> int:
        """Input channels (conv) or input features (linear)."""
        return self.weight_shape[1] * self.groups

    @property
    def kernel_numel(self) -> int:
        """Kernel positions per (output, input) channel pair: k*k for a 2-d conv, 1 for linear."""
        return math.prod(self.weight_shape[2:])


def geometry(graph: Graph, node: Node) -> LayerGeometry:
    """The formula's view of weight-layer ``node``: weight shape, groups, output positions per sample."""
    weight_shape = tuple(int(d) for d in node.attrs["weight_shape"])
    out = node.out_shape
    positions = math.prod(out[2:]) if node.kind != "linear" else math.prod(out[1:-1])
    source = node.inputs[0] if node.inputs else None
    aligned = False
    if source is not None:
        src = graph.nodes[source].out_shape
        in_channels = weight_shape[1] * int(node.attrs.get("groups", 1))
        aligned = len(src) >= 2 and src[1] == in_channels and (node.kind != "linear" or len(src) == 2)
    return LayerGeometry(
        node_index=node.index, name=str(node.module_name), kind=node.kind, weight_shape=weight_shape,
        groups=int(node.attrs.get("groups", 1)), positions=int(positions), has_bias=bool(node.attrs.get("bias")),
        input_index=source, input_channel_aligned=aligned,
    )


def weight_bits_view(geom: LayerGeometry, w_bits: torch.Tensor, where: str = "weight_bits") -> torch.Tensor:
    """``w_bits`` with the weight's number of dims: scalar, (out,) per output channel, or broadcastable."""
    shape = geom.weight_shape
    if w_bits.dim() == 1 and w_bits.numel() == shape[0] and len(shape) > 1:
        return w_bits.reshape(shape[0], *([1] * (len(shape) - 1)))
    try:
        ok = w_bits.dim() <= len(shape) and torch.broadcast_shapes(tuple(w_bits.shape), shape) == shape
    except RuntimeError:
        ok = False
    if not ok:
        raise BitsmithError(f"{where}[{geom.name!r}] has shape {tuple(w_bits.shape)}; accepted: a scalar, "
                            f"({shape[0]},) per output channel, or a shape broadcastable to {shape}")
    return w_bits.reshape((1,) * (len(shape) - w_bits.dim()) + tuple(w_bits.shape))


def channel_vector(geom: LayerGeometry, value: torch.Tensor, size: int, what: str) -> torch.Tensor:
    """``value`` as a scalar or a (size,) vector; anything else is refused naming the layer."""
    if value.numel() == 1:
        return value.reshape(())
    if value.numel() != size:
        raise BitsmithError(f"{what}[{geom.name!r}] has shape {tuple(value.shape)}; accepted: a scalar or "
                            f"{size} values (one per channel)")
    return value.reshape(size)


def weighted_sum(geom: LayerGeometry, w_bits: torch.Tensor, a_bits: torch.Tensor,
                 keep_out: torch.Tensor | None, keep_in: torch.Tensor | None) -> torch.Tensor:
    """sum_e w_bits[e] * a_bits[c(e)] * keep_out[o] * keep_in[c(e)] over the layer's weight elements.

    ``w_bits`` as accepted by :func:`weight_bits_view`; ``a_bits`` scalar or (in,); keeps (out,)/(in,) or None.
    """
    out, per_group, groups = geom.out_channels, geom.weight_shape[1], geom.groups
    w_bits = weight_bits_view(geom, w_bits)
    kernel_dims = tuple(range(2, w_bits.dim()))
    if kernel_dims:
        present = math.prod(w_bits.shape[2:])
        w_pair = w_bits.sum(dim=kernel_dims) * (geom.kernel_numel / present)
    else:
        w_pair = w_bits * geom.kernel_numel
    a = a_bits if keep_in is None else a_bits * keep_in
    if w_pair.shape[1] == 1:  # bit widths constant along the input channels: sum the inputs per group first
        a_sum = a * per_group if a.dim() == 0 else a.reshape(groups, per_group).sum(dim=1).repeat_interleave(
            out // groups)
        per_out = (w_pair[:, 0] * a_sum).expand(out)
    else:
        if a.dim() == 1:
            a = a.reshape(groups, 1, per_group).expand(groups, out // groups, per_group).reshape(out, per_group)
        per_out = (w_pair.expand(out, per_group) * a).sum(dim=1)
    if keep_out is not None:
        per_out = per_out * keep_out
    return per_out.sum()


def layer_bops(geom: LayerGeometry, w_bits: torch.Tensor, a_bits: torch.Tensor,
               keep_out: torch.Tensor | None = None, keep_in: torch.Tensor | None = None) -> torch.Tensor:
    """BOPs of one layer (MACs when both bit widths are 1): output positions times :func:`weighted_sum`."""
    return geom.positions * weighted_sum(geom, w_bits, a_bits, keep_out, keep_in)


@dataclass(frozen=True)
class KeepStep:
    """How one node's per-channel keep vector follows from its inputs (see :func:`keep_plan`)."""

    index: int
    rule: str
    inputs: tuple[int, ...] = ()
    layer: str | None = None
    factor: int = 1
    sizes: tuple[int, ...] = ()


def _reshape_rule(src: tuple[int, ...], out: tuple[int, ...]) -> tuple[str, int]:
    """pass when channels stay on dim 1; repeat(f) when each channel becomes f consecutive features; else none."""
    if len(src) < 2 or len(out) < 2 or src[0] != out[0]:
        return "none", 1
    if out[1] == src[1] and math.prod(out[2:]) == math.prod(src[2:]):
        return "pass", 1
    for end in range(3, len(src) + 1):
        if out[1] == math.prod(src[1:end]) and math.prod(out[2:]) == math.prod(src[end:]):
            return "repeat", out[1] // src[1]
    return "none", 1


def _step(graph: Graph, node: Node) -> KeepStep:
    shapes = [graph.nodes[i].out_shape for i in node.inputs]
    out = node.out_shape
    i, inputs = node.index, tuple(node.inputs)
    if node.kind in WEIGHT_KINDS:
        aligned = len(out) >= 2 and (len(out) == 2 or node.kind != "linear")
        return KeepStep(i, "layer", layer=node.module_name) if aligned else KeepStep(i, "none")
    if len(out) < 2 or not inputs or any(len(s) < 2 for s in shapes):
        return KeepStep(i, "none")
    if node.kind in CHANNELWISE_KINDS and len(inputs) == 1 and shapes[0][1] == out[1]:
        return KeepStep(i, "pass", inputs)
    if node.kind in ("flatten", "reshape") and len(inputs) == 1:
        rule, factor = _reshape_rule(shapes[0], out)
        return KeepStep(i, rule, inputs, factor=factor)
    aligned = tuple(j for j, s in zip(inputs, shapes, strict=True) if s[1] == out[1])
    if node.kind in ("add", "sub") and len(aligned) == len(inputs):
        return KeepStep(i, "or", inputs)
    if node.kind == "mul" and aligned and all(s[1] in (1, out[1]) for s in shapes):
        return KeepStep(i, "and", aligned)
    if node.kind == "div" and inputs[0] in aligned:
        return KeepStep(i, "pass", inputs[:1])
    if node.kind == "concat":
        dim = node.attrs.get("dim", 0)
        dim = dim % len(out) if isinstance(dim, int) else None
        sizes = tuple(s[1] for s in shapes)
        if dim == 1 and all(len(s) == len(out) for s in shapes) and sum(sizes) == out[1]:
            return KeepStep(i, "concat", inputs, sizes=sizes)
        if dim not in (None, 1) and len(aligned) == len(inputs):
            return KeepStep(i, "or", inputs)
    return KeepStep(i, "none")


def keep_plan(graph: Graph) -> list[KeepStep]:
    """Per node, how pruned channels propagate: through channel-wise ops (BN, activations, pooling, dropout),
    flatten (a channel becomes its H*W features), adds (kept if kept in ANY input), concat (joined)."""
    return [_step(graph, n) for n in graph.nodes]


def propagate_keep(plan: list[KeepStep], layer_keep: Mapping[str, torch.Tensor],
                   like: torch.Tensor) -> dict[int, torch.Tensor | None]:
    """Keep vector (over dim 1) of every node's output; None means all channels kept.

    Adds use ``1 - prod(1 - k_i)`` (logical OR for 0/1, its probability for independent soft keeps),
    multiplications ``prod(k_i)`` (AND).
    """
    keeps: dict[int, torch.Tensor | None] = {}
    for step in plan:
        ins = [keeps[j] for j in step.inputs]
        if step.rule == "layer":
            value = layer_keep.get(step.layer) if step.layer is not None else None
        elif step.rule == "pass":
            value = ins[0]
        elif step.rule == "repeat":
            value = None if ins[0] is None else ins[0].repeat_interleave(step.factor)
        elif step.rule == "or":
            value = None if any(k is None for k in ins) else 1 - torch.stack([1 - k for k in ins]).prod(0)
        elif step.rule == "and":
            known = [k for k in ins if k is not None]
            value = torch.stack(known).prod(0) if known else None
        elif step.rule == "concat" and any(k is not None for k in ins):
            value = torch.cat([k if k is not None else like.new_ones(n) for k, n in zip(ins, step.sizes,
                                                                                       strict=True)])
        else:
            value = None
        keeps[step.index] = value
    return keeps


def input_keep(geom: LayerGeometry, keeps: Mapping[int, torch.Tensor | None]) -> torch.Tensor | None:
    """Keep vector of a layer's input channels (None: all kept, or channels not traceable to a producer)."""
    if geom.input_index is None or not geom.input_channel_aligned:
        return None
    k = keeps.get(geom.input_index)
    return k if k is not None and k.numel() == geom.in_channels else None
