"""A model as a typed computational graph (torch.fx + shape propagation): nodes, shapes, parameters, edges.

Used by the cost model, the graph hypernetwork and export::

    graph = bitsmith.graph.trace(model, (3, 32, 32))
    [n.module_name for n in graph.layers()]
"""

from __future__ import annotations

from bitsmith.graph._fx import insert_before, shared_readers
from bitsmith.graph._graph import Graph, Node
from bitsmith.graph._kinds import CHANNELWISE_KINDS, WEIGHT_KINDS
from bitsmith.graph._trace import trace

__all__ = ["CHANNELWISE_KINDS", "WEIGHT_KINDS", "Graph", "Node", "insert_before", "shared_readers", "trace"]
