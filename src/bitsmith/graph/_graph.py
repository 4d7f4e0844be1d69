"""The typed computational graph of a model: nodes with kinds, shapes, parameters and edges, in topological order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from bitsmith.errors import BitsmithError
from bitsmith.graph._kinds import WEIGHT_KINDS


@dataclass
class Node:
    """One op of the graph: its kind, the module it calls (if any), its producers and tensor shapes.

    Shapes include the batch dimension. ``params`` maps a local name ("weight") to the full name in
    ``model.named_parameters()``; ``attrs`` holds plain JSON data (kernel size, channels, groups, ...).
    """

    index: int
    name: str
    kind: str
    module_name: str | None
    module_type: str | None
    inputs: list[int]
    in_shapes: list[tuple[int, ...]]
    out_shape: tuple[int, ...]
    params: dict[str, str] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_weight_layer(self) -> bool:
        """True for conv, depthwise conv and linear nodes: the layers that carry weights and cost BOPs."""
        return self.kind in WEIGHT_KINDS

    def to_dict(self) -> dict[str, Any]:
        """The node as plain JSON data."""
        return {
            "index": self.index, "name": self.name, "kind": self.kind, "module_name": self.module_name,
            "module_type": self.module_type, "inputs": list(self.inputs),
            "in_shapes": [list(s) for s in self.in_shapes], "out_shape": list(self.out_shape),
            "params": dict(self.params), "attrs": dict(self.attrs),
        }


@dataclass
class Graph:
    """A model as a DAG of :class:`Node` in topological order; ``model`` maps nodes back to modules.

    ``method`` says how it was built: "fx" (symbolic trace) or "hooks" (fallback for data-dependent control flow).
    """

    nodes: list[Node]
    input_shape: tuple[int, ...]
    method: str = "fx"
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name = {n.name: n for n in self.nodes}
        self._succ: list[list[int]] = [[] for _ in self.nodes]
        for n in self.nodes:
            for i in n.inputs:
                self._succ[i].append(n.index)

    def layers(self) -> list[Node]:
        """The weight layers (conv, dwconv, linear) in execution order."""
        return [n for n in self.nodes if n.is_weight_layer]

    def layer_names(self) -> list[str]:
        """Module names of the weight layers, each once, in execution order."""
        return list(dict.fromkeys(n.module_name for n in self.layers() if n.module_name is not None))

    def node(self, name: str) -> Node:
        """The node called ``name``."""
        if name not in self._by_name:
            raise BitsmithError(f"no node named {name!r}; nodes: {_short_list(list(self._by_name))}")
        return self._by_name[name]

    def by_module(self, module_name: str) -> Node:
        """The (first) node that calls the module ``module_name``."""
        for n in self.nodes:
            if n.module_name == module_name:
                return n
        names = [n.module_name for n in self.nodes if n.module_name]
        raise BitsmithError(f"no node calls module {module_name!r}; modules: {_short_list(names)}")

    def successors(self, index: int) -> list[int]:
        """Indices of the nodes that consume node ``index``'s output."""
        return list(self._succ[index])

    def predecessors(self, index: int) -> list[int]:
        """Indices of the nodes whose outputs node ``index`` consumes."""
        return list(self.nodes[index].inputs)

    def adjacency(self) -> list[list[int]]:
        """Adjacency list: entry ``i`` lists the successors of node ``i``."""
        return [list(s) for s in self._succ]

    def module(self, node: Node | str | int) -> nn.Module:
        """The module that a node (given as Node, node name or index) calls."""
        if isinstance(node, int):
            node = self.nodes[node]
        elif isinstance(node, str):
            node = self.node(node)
        if node.module_name is None or self.model is None:
            raise BitsmithError(f"node {node.name!r} ({node.kind}) calls no module of a known model")
        return self.model.get_submodule(node.module_name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready graph: input shape, build method, nodes with their features, and the adjacency list."""
        return {
            "input_shape": list(self.input_shape),
            "method": self.method,
            "nodes": [n.to_dict() for n in self.nodes],
            "adjacency": self.adjacency(),
        }


def _short_list(names: list[str], limit: int = 12) -> str:
    """Comma-joined names, truncated with a count when long (for one-line errors)."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names) - limit} more)"
