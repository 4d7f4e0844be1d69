"""The seeded architecture search space of the graph hypernetwork: DARTS-like cell networks, a sampler and fixed
held-out splits.

An :class:`ArchSpec` is plain data (JSON via ``to_dict``/``from_dict``) and builds into a network of standard torch
layers (the zoo model ``cellnet``). Randomness comes only from ``random.Random.random()`` seeded with SHA-256 digests,
whose sequence Python guarantees across versions, so every seed, split and training index gives the same
architecture on every machine.

Design choices:

* ``"none"`` edges are dropped when a network is built. The sampler draws a node's first edge from the ops other
  than ``"none"`` and only later edges from all ops, so every node keeps at least one edge and sampled specs never
  hold ``"none"``; a hand-written spec may, provided every node keeps one other edge.
* ``"skip"`` at stride 2 (on the input of a reduction cell) is a 1x1 conv with stride 2 and BatchNorm; at
  stride 1 it is ``nn.Identity``.
* The stem width is log-uniform on the multiples of 8 in the width range (P(w) proportional to 1/w): each doubling
  is about as likely, and typical networks stay cheap enough to train by the hundred on a CPU.
* Every key falls in one of eight buckets by its hash: bucket 0 may hold only ``val`` architectures, bucket 1
  only ``test`` ones and the rest only training ones, so ``val``, ``test`` and ``train_architecture`` are disjoint
  for any sizes. Rejected samples are skipped deterministically (the next seed of the same stream).
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bitsmith.errors import ConfigError
from bitsmith.zoo._init import init_weights
from bitsmith.zoo._registry import create_model, register_model

SPACE_VERSION: int = 1
OPS: tuple[str, ...] = (
    "conv1x1", "conv3x3", "conv5x5", "sep3x3", "sep5x5", "dil3x3", "maxpool3x3", "avgpool3x3", "skip", "none",
)
SPLITS: tuple[str, ...] = ("val", "test", "wide", "deep")
#: Named spaces (sampler settings on top of the defaults). "darts": the full space. "ghnq": the reduced CNN space of
#: the GHN-Q setting as we define it: plain, separable and dilated convs, pools and skips with no dropped
#: ("none") edges, 2..6 cells.
SPACES: dict[str, dict[str, Any]] = {
    "darts": {},
    "ghnq": {"cells": (2, 6), "ops": tuple(op for op in OPS if op != "none")},
}
DEFAULT_SPACE = "darts"
_ORDERS: tuple[str, ...] = ("post", "pre")

__all__ = [
    "DEFAULT_SPACE", "OPS", "SPACES", "SPACE_VERSION", "SPLITS", "ArchSpec", "CellSpec", "build_network",
    "check_space", "predefined", "sample_architecture", "split", "train_architecture",
]

_SPLIT_RANGES: dict[str, dict[str, tuple[int, int]]] = {
    "val": {}, "test": {}, "wide": {"widths": (64, 128)}, "deep": {"cells": (10, 14)},
}
_BUCKETS = 8
_HELD_OUT_BUCKET = {"val": 0, "test": 1}
_PREDEFINED = ("lenet5", "vgg_small", "resnet20", "mobilenetv2")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _stable_int(*parts: object) -> int:
    """A 64-bit integer from the SHA-256 of ``parts`` (unlike ``hash()``, the same in every process)."""
    text = "/".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _edges(node: Any, j: int) -> tuple[tuple[int, str], ...]:
    """Node ``j``'s edges as a tuple of (state, op), checked: states in 0..j, known ops, one edge other than none."""
    if isinstance(node, (str, bytes)) or not isinstance(node, Sequence) or not node:
        raise ConfigError(f"node {j} must be a non-empty list of [state, op] edges, got {node!r}")
    edges = []
    for edge in node:
        if isinstance(edge, (str, bytes)) or not isinstance(edge, Sequence) or len(edge) != 2:
            raise ConfigError(f"node {j}: an edge must be a pair [state, op], got {edge!r}")
        state, op = edge
        if not _is_int(state) or not 0 <= state <= j:
            raise ConfigError(f"node {j}: edge state must be an integer in 0..{j}, got {state!r}")
        if op not in OPS:
            raise ConfigError(f"node {j}: unknown op {op!r}; accepted: {', '.join(OPS)}")
        edges.append((state, op))
    if all(op == "none" for _, op in edges):
        raise ConfigError(f"node {j} has only 'none' edges; every node needs one other op")
    return tuple(edges)


@dataclass(frozen=True)
class CellSpec:
    """One cell: whether it reduces (stride 2), its output channels and its nodes' incoming edges.

    ``nodes[j]`` lists (state, op) edges; state 0 is the preprocessed cell input, state i is node i-1.
    """

    reduction: bool
    channels: int
    nodes: tuple[tuple[tuple[int, str], ...], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.reduction, bool):
            raise ConfigError(f"cell reduction must be true or false, got {self.reduction!r}")
        if not _is_int(self.channels) or self.channels <= 0:
            raise ConfigError(f"cell channels must be a positive integer, got {self.channels!r}")
        if isinstance(self.nodes, (str, bytes)) or not isinstance(self.nodes, Sequence) or not self.nodes:
            raise ConfigError(f"cell nodes must be a non-empty list of nodes, got {self.nodes!r}")
        nodes = tuple(_edges(node, j) for j, node in enumerate(self.nodes))
        object.__setattr__(self, "nodes", nodes)  # lists from a caller become tuples: hashable, canonical


@dataclass(frozen=True)
class ArchSpec:
    """A network of the space: stem width, its cells, and where every conv op puts its ReLU (post/pre)."""

    stem_channels: int
    cells: tuple[CellSpec, ...]
    order: str

    def __post_init__(self) -> None:
        if not _is_int(self.stem_channels) or self.stem_channels <= 0:
            raise ConfigError(f"stem_channels must be a positive integer, got {self.stem_channels!r}")
        if (isinstance(self.cells, (str, bytes)) or not isinstance(self.cells, Sequence) or not self.cells
                or not all(isinstance(cell, CellSpec) for cell in self.cells)):
            raise ConfigError(f"cells must be a non-empty sequence of CellSpec, got {self.cells!r}")
        if self.order not in _ORDERS:
            raise ConfigError(f"order must be one of {', '.join(_ORDERS)}, got {self.order!r}")
        object.__setattr__(self, "cells", tuple(self.cells))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (with the space version) that :meth:`from_dict` turns back into this spec."""
        return {
            "version": SPACE_VERSION,
            "stem_channels": self.stem_channels,
            "order": self.order,
            "cells": [
                {"reduction": cell.reduction, "channels": cell.channels,
                 "nodes": [[[state, op] for state, op in node] for node in cell.nodes]}
                for cell in self.cells
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchSpec:
        """Parse and check a dict from :meth:`to_dict`; anything malformed raises ConfigError."""
        keys = {"version", "stem_channels", "order", "cells"}
        if not isinstance(data, Mapping):
            raise ConfigError(f"an architecture must be a dict with keys {', '.join(sorted(keys))}, got {data!r}")
        unknown, missing = sorted(set(data) - keys), sorted(keys - {"version"} - set(data))
        if unknown or missing:
            raise ConfigError(f"architecture dict has unknown keys {unknown} / lacks keys {missing}; "
                              f"accepted: {', '.join(sorted(keys))}")
        if data.get("version", SPACE_VERSION) != SPACE_VERSION:
            raise ConfigError(f"architecture version {data['version']!r} is not this space's {SPACE_VERSION}")
        cells = data["cells"]
        if isinstance(cells, (str, bytes)) or not isinstance(cells, Sequence):
            raise ConfigError(f"cells must be a list of cell dicts, got {cells!r}")
        specs = []
        for index, cell in enumerate(cells):
            if not isinstance(cell, Mapping) or set(cell) != {"reduction", "channels", "nodes"}:
                raise ConfigError(f"cells[{index}] must be a dict with exactly the keys channels, nodes, reduction, "
                                  f"got {cell!r}")
            try:
                specs.append(CellSpec(cell["reduction"], cell["channels"], cell["nodes"]))
            except ConfigError as exc:
                raise ConfigError(f"cells[{index}]: {exc}") from None
        return cls(stem_channels=data["stem_channels"], cells=tuple(specs), order=data["order"])

    def key(self) -> str:
        """SHA-1 of the canonical JSON: equal keys mean the same architecture."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(text.encode()).hexdigest()


# --- sampling --------------------------------------------------------------------------------------------------


def _range(value: Any, what: str) -> tuple[int, int]:
    if (not isinstance(value, Sequence) or len(value) != 2 or not all(_is_int(v) for v in value)
            or not 1 <= value[0] <= value[1]):
        raise ConfigError(f"{what} must be a pair (low, high) of integers with 1 <= low <= high, got {value!r}")
    return value[0], value[1]


def _reduction_cells(n: int) -> frozenset[int]:
    """Indices of the stride-2 cells: n//3 and 2n//3 (two reductions), cell 1 of two, none of one."""
    if n >= 3:
        return frozenset({n // 3, 2 * n // 3})
    return frozenset({1}) if n == 2 else frozenset()


def _width(u: float, low: int, high: int) -> int:
    """The stem width for a uniform ``u`` in [0, 1): a multiple of 8 in [low, high] (any integer there if none is)
    with probability proportional to 1/width, a discrete log-uniform law that makes each doubling about as likely
    and keeps typical networks cheap; multiples of 8 also suit vectorised and integer kernels."""
    choices = [w for w in range(low, high + 1) if w % 8 == 0] or list(range(low, high + 1))
    target, total = u * sum(1 / w for w in choices), 0.0
    for w in choices:
        total += 1 / w
        if target < total:
            return w
    return choices[-1]


def sample_architecture(
    seed: int,
    *,
    cells: tuple[int, int] = (2, 8),
    nodes: tuple[int, int] = (1, 4),
    widths: tuple[int, int] = (8, 64),
    ops: tuple[str, ...] = OPS,
) -> ArchSpec:
    """The architecture of ``seed``: cell count and nodes per cell uniform in their inclusive ranges, the stem width
    log-uniform on the multiples of 8 in ``widths``, post or pre order at even odds; each node reads 1 or 2
    uniformly drawn earlier states through uniformly drawn ops; reduction cells double the width, capped at
    ``widths[1]``."""
    if not _is_int(seed):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    cells, nodes, widths = _range(cells, "cells"), _range(nodes, "nodes"), _range(widths, "widths")
    if isinstance(ops, str) or not ops or not all(op in OPS for op in ops):
        raise ConfigError(f"ops must be a non-empty tuple of ops from {', '.join(OPS)}, got {ops!r}")
    real_ops = [op for op in ops if op != "none"]
    if not real_ops:
        raise ConfigError("ops must hold at least one op other than 'none'")
    rng = random.Random(_stable_int("bitsmith-space", "sample", seed))

    def uniform(low: int, high: int) -> int:
        return low + min(int(rng.random() * (high - low + 1)), high - low)

    n_cells = uniform(*cells)
    width = _width(rng.random(), *widths)
    stem, order = width, _ORDERS[uniform(0, 1)]
    reductions = _reduction_cells(n_cells)
    cell_specs = []
    for index in range(n_cells):
        if index in reductions:
            width = min(2 * width, widths[1])
        node_specs = []
        for j in range(uniform(*nodes)):
            edges = []
            for e in range(uniform(1, 2)):
                state = uniform(0, j)
                choices = real_ops if e == 0 else ops
                op = choices[uniform(0, len(choices) - 1)]
                if op != "none":
                    edges.append((state, op))
            node_specs.append(tuple(sorted(edges)))
        cell_specs.append(CellSpec(index in reductions, width, tuple(node_specs)))
    return ArchSpec(stem, tuple(cell_specs), order)


def check_space(name: str) -> str:
    """``name`` if it is a named space, else a ConfigError listing them."""
    if name not in SPACES:
        raise ConfigError(f"unknown search space {name!r}; accepted: {', '.join(SPACES)}")
    return name


def _stream(space: str, *parts: object) -> int:
    """Seed of a sampling stream; the default space keeps the version-1 streams (and so its pinned splits)."""
    return _stable_int("bitsmith-space", SPACE_VERSION, *parts) if space == DEFAULT_SPACE else _stable_int(
        "bitsmith-space", SPACE_VERSION, space, *parts)


def _bucket(spec: ArchSpec) -> int:
    return int(spec.key()[:8], 16) % _BUCKETS


@functools.lru_cache(maxsize=32)
def _split(name: str, n: int, space: str) -> tuple[ArchSpec, ...]:
    bucket = _HELD_OUT_BUCKET.get(name)
    found: dict[str, ArchSpec] = {}
    settings = {**SPACES[space], **_SPLIT_RANGES[name]}
    i = 0
    while len(found) < n:
        spec = sample_architecture(_stream(space, name, i), **settings)
        i += 1
        key = spec.key()
        if key not in found and (bucket is None or _bucket(spec) == bucket):
            found[key] = spec
    return tuple(found.values())


def split(name: str, n: int = 100, space: str = DEFAULT_SPACE) -> list[ArchSpec]:
    """The first ``n`` architectures of a fixed held-out split of a named space: val/test in distribution, wide
    (widths 64..128), deep (10..14 cells); distinct, and the same on every machine for a given SPACE_VERSION."""
    if name not in SPLITS:
        raise ConfigError(f"unknown split {name!r}; accepted: {', '.join(SPLITS)}")
    if not _is_int(n) or n <= 0:
        raise ConfigError(f"split size n must be a positive integer, got {n!r}")
    return list(_split(name, n, check_space(space)))


def train_architecture(index: int, space: str = DEFAULT_SPACE) -> ArchSpec:
    """The ``index``-th training architecture of a named space, never one that val or test can hold."""
    if not _is_int(index) or index < 0:
        raise ConfigError(f"training index must be a non-negative integer, got {index!r}")
    settings = SPACES[check_space(space)]
    attempt = 0
    while True:
        spec = sample_architecture(_stream(space, "train", index, attempt), **settings)
        if _bucket(spec) not in _HELD_OUT_BUCKET.values():
            return spec
        attempt += 1


# --- networks ----------------------------------------------------------------------------------------------------


def _leaves(cell: CellSpec) -> list[int]:
    """Indices of the nodes that no other node reads (through an edge other than none): summed as the output."""
    read = {state for node in cell.nodes for state, op in node if op != "none"}
    return [j for j in range(len(cell.nodes)) if j + 1 not in read]


def _unit(layers: list[nn.Module], channels: int, order: str) -> nn.Sequential:
    """Conv layers and a BatchNorm with the ReLU placed by ``order``: post = conv-BN-ReLU, pre = ReLU-conv-BN."""
    if order == "pre":
        return nn.Sequential(nn.ReLU(), *layers, nn.BatchNorm2d(channels))
    return nn.Sequential(*layers, nn.BatchNorm2d(channels), nn.ReLU())


def _conv(c: int, k: int, stride: int, order: str) -> nn.Module:
    return _unit([nn.Conv2d(c, c, k, stride=stride, padding=k // 2, bias=False)], c, order)


def _separable(c: int, k: int, stride: int, order: str, dilation: int = 1) -> nn.Module:
    depthwise = nn.Conv2d(c, c, k, stride=stride, padding=dilation * (k // 2), dilation=dilation, groups=c,
                          bias=False)
    return _unit([depthwise, nn.Conv2d(c, c, 1, bias=False)], c, order)


def _skip(c: int, stride: int, order: str) -> nn.Module:
    return nn.Identity() if stride == 1 else _conv(c, 1, stride, order)


_OP_BUILDERS: dict[str, Callable[[int, int, str], nn.Module]] = {
    "conv1x1": lambda c, s, o: _conv(c, 1, s, o),
    "conv3x3": lambda c, s, o: _conv(c, 3, s, o),
    "conv5x5": lambda c, s, o: _conv(c, 5, s, o),
    "sep3x3": lambda c, s, o: _separable(c, 3, s, o),
    "sep5x5": lambda c, s, o: _separable(c, 5, s, o),
    "dil3x3": lambda c, s, o: _separable(c, 3, s, o, dilation=2),
    "maxpool3x3": lambda c, s, o: nn.MaxPool2d(3, stride=s, padding=1),
    "avgpool3x3": lambda c, s, o: nn.AvgPool2d(3, stride=s, padding=1, count_include_pad=False),
    "skip": _skip,
}


class Cell(nn.Module):
    """A 1x1 preprocess to the cell's width, then nodes that each sum ops of earlier states; the output sums the
    leaf nodes. In a reduction cell the ops reading the cell input have stride 2."""

    def __init__(self, spec: CellSpec, in_channels: int, order: str) -> None:
        super().__init__()
        c = spec.channels
        conv = nn.Conv2d(in_channels, c, 1, bias=False)
        relu = [nn.ReLU()] if order == "pre" else []  # post order: conv-BN, the ops that read it add their ReLU
        self.preprocess = nn.Sequential(*relu, conv, nn.BatchNorm2d(c))
        self.nodes = nn.ModuleList()
        self.sources: list[list[int]] = []
        for node in spec.nodes:
            edges = [(state, op) for state, op in node if op != "none"]
            stride = {state: 2 if spec.reduction and state == 0 else 1 for state, _ in edges}
            self.nodes.append(nn.ModuleList(_OP_BUILDERS[op](c, stride[state], order) for state, op in edges))
            self.sources.append([state for state, _ in edges])
        self.leaves = _leaves(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of the leaf nodes for the cell input ``x``."""
        states = [self.preprocess(x)]
        for ops, sources in zip(self.nodes, self.sources, strict=True):
            total = ops[0](states[sources[0]])
            for op, source in zip(ops[1:], sources[1:], strict=True):
                total = total + op(states[source])
            states.append(total)
        out = states[self.leaves[0] + 1]
        for leaf in self.leaves[1:]:
            out = out + states[leaf + 1]
        return out


class CellNet(nn.Module):
    """Stem conv, the spec's cells, then (ReLU for pre order,) global average pooling and one linear layer."""

    def __init__(self, spec: ArchSpec, num_classes: int, in_channels: int) -> None:
        super().__init__()
        stem = [nn.Conv2d(in_channels, spec.stem_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(spec.stem_channels)]
        self.stem = nn.Sequential(*stem, *([nn.ReLU()] if spec.order == "post" else []))
        self.cells = nn.ModuleList()
        width = spec.stem_channels
        for cell in spec.cells:
            self.cells.append(Cell(cell, width, spec.order))
            width = cell.channels
        head: list[nn.Module] = [nn.ReLU()] if spec.order == "pre" else []
        self.head = nn.Sequential(*head, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of images."""
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.fc(self.head(x))


@functools.lru_cache(maxsize=1)
def _default_arch() -> ArchSpec:
    return sample_architecture(0)


@register_model("cellnet", "a network of the GHN search space: stem, DARTS-like cells, pooled linear head")
def cellnet(num_classes: int, in_channels: int, image_size: tuple[int, int], *,
            arch: dict = {}) -> nn.Module:  # noqa: B006  (the registry needs a JSON default; it is never mutated)
    """Build the architecture ``arch`` (``ArchSpec.to_dict()``; empty: ``sample_architecture(0)``)."""
    spec = ArchSpec.from_dict(arch) if arch else _default_arch()
    model = CellNet(spec, num_classes, in_channels)
    init_weights(model)
    return model


def build_network(spec: ArchSpec, num_classes: int = 10, in_channels: int = 1,
                  image_size: int | tuple[int, int] = 16) -> nn.Module:
    """The network of ``spec`` as zoo model ``cellnet`` (so its ``bitsmith_spec`` rebuilds it)."""
    if not isinstance(spec, ArchSpec):
        raise ConfigError(f"spec must be an ArchSpec, got {type(spec).__name__}")
    return create_model("cellnet", num_classes, in_channels, image_size, arch=spec.to_dict())


def predefined(num_classes: int, in_channels: int, image_size: int | tuple[int, int]) -> dict[str, nn.Module]:
    """The zoo's hand-designed networks as unseen architectures: LeNet-5, VGG-Small, ResNet-20, MobileNetV2."""
    return {name: create_model(name, num_classes, in_channels, image_size) for name in _PREDEFINED}
