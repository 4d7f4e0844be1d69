"""A model's computational graph as the hypernetwork reads it: typed node features, edges and GHN-2 virtual edges.

Any ``nn.Module`` that :func:`bitsmith.graph.trace` accepts can be encoded, as long as every op kind is in
:data:`KINDS` and every parameter sits on a conv, linear or normalisation node (the ones the hypernetwork predicts).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from bitsmith import graph as graph_lib
from bitsmith.errors import UnsupportedLayerError
from bitsmith.methods.ghn import schedule
from bitsmith.methods.ghn.schedule import Sweeps

KINDS = (
    "input", "conv", "dwconv", "linear", "bn", "norm", "relu", "relu6", "act", "maxpool", "avgpool",
    "adaptive_avgpool", "adaptive_maxpool", "add", "sub", "mul", "concat", "flatten", "reshape", "mean",
    "identity", "dropout", "pad", "upsample", "softmax", "quant_act", "output",
)
PREDICTED_KINDS = frozenset({"conv", "dwconv", "linear", "bn", "norm"})
# Categorical node features: name -> number of categories (index 0 means "not applicable").
#: Bit-width features of a conv/linear node (its weight and its input activation): 0 = not given (a float-trained
#: hypernetwork never sees widths), then one category per width the quantization core accepts.
BIT_WIDTHS = (32, 16, 8, 7, 6, 5, 4, 3, 2)
BITS_CODES: dict[int | None, int] = {None: 0, **{b: i + 1 for i, b in enumerate(BIT_WIDTHS)}}
FEATURES = {"kind": len(KINDS), "kernel": 5, "stride": 3, "conv_type": 4, "c_in": 10, "c_out": 10, "size": 8,
            "role": 3, "bits": len(BITS_CODES), "act_bits": len(BITS_CODES)}
_BIT_COLUMNS = (list(FEATURES).index("bits"), list(FEATURES).index("act_bits"))


@dataclass
class ParamSlot:
    """One predicted tensor: the node it belongs to, the model's parameter name, its shape and what it is."""

    node: int
    name: str
    shape: tuple[int, ...]
    role: str  # "weight" (conv/linear), "classifier" (last linear), "norm_weight", "norm_bias", "bias", "cls_bias"


@dataclass
class Encoding:
    """A graph ready for the hypernetwork: node features, forward edges with their path distance, parameter slots."""

    features: torch.Tensor          # (N, len(FEATURES)) long
    edges: torch.Tensor             # (E, 2) long, (source, target) with source before target, distance <= cutoff
    distance: torch.Tensor          # (E,) long, shortest-path length of each edge (1 = a real edge)
    slots: list[ParamSlot] = field(default_factory=list)
    layers: dict[str, list[int]] = field(default_factory=dict)  # conv/linear module name -> its node(s)
    _sweeps: Sweeps | None = field(default=None, repr=False, compare=False)

    @property
    def sweeps(self) -> Sweeps:
        """The graph's message-passing schedule (computed once, then kept with the encoding)."""
        if self._sweeps is None:
            self._sweeps = schedule.sweeps(self.num_nodes, self.edges, self.distance)
        return self._sweeps

    @property
    def num_nodes(self) -> int:
        """Number of nodes."""
        return int(self.features.shape[0])

    def with_bits(self, weight_bits: int | dict[str, int] | None,
                  act_bits: int | dict[str, int] | None = None) -> Encoding:
        """A copy whose conv/linear nodes carry these widths (one for every layer, or per layer name; a layer
        not named, or None, means "not given"); edges and slots are shared, not copied."""
        features = self.features.clone()
        for column, widths in zip(_BIT_COLUMNS, (weight_bits, act_bits), strict=True):
            for name, nodes in self.layers.items():
                width = widths.get(name) if isinstance(widths, dict) else widths
                features[nodes, column] = _bits_code(width)
        return Encoding(features, self.edges, self.distance, self.slots, self.layers, self._sweeps)


def _bucket_log2(value: int, top: int) -> int:
    """1 + floor(log2(value)) clipped to [1, top]: channel counts and sizes on a log scale (0 = not applicable)."""
    if value <= 0:
        return 0
    return max(1, min(top, 1 + int(math.log2(value))))


def _first(value: object, default: int) -> int:
    if isinstance(value, list) and value:
        return int(value[0])
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return default


def _bits_code(bits: int | None) -> int:
    if bits not in BITS_CODES:
        raise UnsupportedLayerError(f"the hypernetwork reads bit widths {', '.join(map(str, BIT_WIDTHS))} (or none), "
                                    f"got {bits!r}")
    return BITS_CODES[bits]


def _node_features(node: graph_lib.Node, classifier: bool) -> list[int]:
    attrs = node.attrs
    kernel = _first(attrs.get("kernel_size"), 0)
    stride = _first(attrs.get("stride"), 1)
    c_in = node.in_shapes[0][1] if node.in_shapes and len(node.in_shapes[0]) > 1 else 0
    c_out = node.out_shape[1] if len(node.out_shape) > 1 else 0
    size = node.out_shape[-1] if len(node.out_shape) == 4 else 0
    conv = 0
    if node.kind in ("conv", "dwconv"):
        dilated = max(attrs.get("dilation", [1])) > 1 if isinstance(attrs.get("dilation"), list) else False
        conv = 2 if node.kind == "dwconv" else (3 if dilated or int(attrs.get("groups", 1)) > 1 else 1)
    role = 2 if classifier else (1 if node.kind in PREDICTED_KINDS else 0)
    return [
        KINDS.index(node.kind),
        {0: 0, 1: 1, 3: 2, 5: 3}.get(kernel, 4),
        0 if node.kind not in ("conv", "dwconv", "maxpool", "avgpool") else (1 if stride == 1 else 2),
        conv,
        _bucket_log2(c_in, FEATURES["c_in"] - 1),
        _bucket_log2(c_out, FEATURES["c_out"] - 1),
        _bucket_log2(size, FEATURES["size"] - 1),
        role,
        0,
        0,
    ]


def _distances(num_nodes: int, succ: Sequence[Sequence[int]], cutoff: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Shortest forward path length from every node to every node it reaches within ``cutoff`` hops (BFS)."""
    pairs: list[tuple[int, int]] = []
    dists: list[int] = []
    for source in range(num_nodes):
        seen = {source: 0}
        queue = deque([source])
        while queue:
            u = queue.popleft()
            if seen[u] >= cutoff:
                continue
            for v in succ[u]:
                if v not in seen:
                    seen[v] = seen[u] + 1
                    queue.append(v)
        for target, d in seen.items():
            if d > 0:
                pairs.append((source, target))
                dists.append(d)
    return pairs, dists


def _check_supported(g: graph_lib.Graph, model: nn.Module) -> None:
    for node in g.nodes:
        if node.kind not in KINDS:
            raise UnsupportedLayerError(
                f"the hypernetwork cannot encode node {node.name!r} of kind {node.kind!r}"
                f"{f' ({node.module_type})' if node.module_type else ''}; supported kinds: {', '.join(KINDS)}")
        if node.params and node.kind not in PREDICTED_KINDS:
            raise UnsupportedLayerError(
                f"the hypernetwork predicts conv, linear and normalisation parameters only; {node.module_name!r} "
                f"({node.module_type}) has parameters {', '.join(node.params)}")
    covered = {full for node in g.nodes for full in node.params.values()}
    stray = [name for name, _ in model.named_parameters() if name not in covered]
    if stray:
        raise UnsupportedLayerError(f"parameters outside any traced layer cannot be predicted: {', '.join(stray[:5])}")


def _slots(g: graph_lib.Graph, model: nn.Module, classifier: int | None) -> list[ParamSlot]:
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    slots: list[ParamSlot] = []
    seen: set[str] = set()
    for node in g.nodes:
        for local, full in node.params.items():
            if full in seen:
                continue  # a module called twice shares its parameters: predicted once, at its first call
            seen.add(full)
            shape = shapes[full]
            if node.kind in ("bn", "norm"):
                role = "norm_weight" if local == "weight" else "norm_bias"
            elif local == "bias":
                role = "cls_bias" if node.index == classifier else "bias"
            else:
                role = "classifier" if node.index == classifier else "weight"
            slots.append(ParamSlot(node.index, full, shape, role))
    return slots


def classifier_node(g: graph_lib.Graph) -> int | None:
    """Index of the linear layer that produces the model's output (the classifier), or None."""
    layers = g.layers()
    return layers[-1].index if layers and layers[-1].kind == "linear" else None


def encode(model: nn.Module, input_shape: Sequence[int], cutoff: int = 50) -> Encoding:
    """Trace ``model`` for inputs of ``input_shape`` ((C, H, W)) and encode it for the hypernetwork (bit widths
    not given; :meth:`Encoding.with_bits` sets them for a bit-conditioned hypernetwork).

    ``cutoff`` bounds the shortest-path length of GHN-2's virtual edges.
    """
    g = graph_lib.trace(model, input_shape)
    _check_supported(g, model)
    classifier = classifier_node(g)
    features = [_node_features(n, n.index == classifier) for n in g.nodes]
    layers: dict[str, list[int]] = {}
    for node in g.layers():
        if node.module_name is not None:
            layers.setdefault(node.module_name, []).append(node.index)
    succ = g.adjacency()
    pairs, dists = _distances(len(g.nodes), succ, max(1, cutoff))
    edges = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    distance = torch.tensor(dists, dtype=torch.long)
    return Encoding(
        features=torch.tensor(features, dtype=torch.long),
        edges=edges,
        distance=distance,
        slots=_slots(g, model, classifier),
        layers=layers,
        _sweeps=schedule.sweeps(len(g.nodes), edges, distance),  # once per graph, not once per prediction
    )
