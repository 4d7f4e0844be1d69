"""GHN-2's message-passing schedule of a graph: which nodes update together, in forward and in backward order.

A node is updated once all its predecessors are (longest-path level); nodes of one level update together. The
schedule depends only on the graph's edges, so it is computed once per encoded graph and joined for a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: A level's incoming edges in a :class:`Sweep`: (message row of each edge, its target's position within the level,
#: 1/distance as a column). The message row is ``2 * p`` for a real edge from the node at level-order position ``p``
#: and ``2 * p + 1`` for a virtual one: the rows of the level-ordered messages viewed as (2 * nodes, hidden).
Edges = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Sweep:
    """One sweep in level order: node ``order[p]`` sits at position ``p`` (``position`` inverts it), level ``L``
    holds the next ``sizes[L]`` positions, and ``edges[L - 1]`` feeds level ``L`` (level 0 receives nothing)."""

    order: torch.Tensor
    position: torch.Tensor
    sizes: list[int]
    edges: list[Edges]

    def to(self, device: torch.device) -> Sweep:
        """The same sweep with its tensors on ``device``."""
        return Sweep(self.order.to(device), self.position.to(device), self.sizes,
                     [tuple(t.to(device) for t in level) for level in self.edges])


@dataclass(frozen=True)
class Sweeps:
    """GHN-2's two sweeps of a graph: forward (along the edges) and backward (against them)."""

    forward: Sweep
    backward: Sweep

    def to(self, device: torch.device) -> Sweeps:
        """The same schedule with its tensors on ``device`` (itself when they already are)."""
        if self.forward.order.device == device:
            return self
        return Sweeps(self.forward.to(device), self.backward.to(device))


def _levels(num_nodes: int, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Longest-path depth of every node of a DAG whose edges all go from lower to higher node index."""
    level = [0] * num_nodes
    order = torch.argsort(dst, stable=True)
    for s, d in zip(src[order].tolist(), dst[order].tolist(), strict=True):
        level[d] = max(level[d], level[s] + 1)
    return torch.tensor(level, dtype=torch.long)


def _sweep(num_nodes: int, src: torch.Tensor, dst: torch.Tensor, dist: torch.Tensor, real: torch.Tensor) -> Sweep:
    """The sweep along the edges ``src -> dst``: nodes and edges grouped by level with one sort each."""
    level = _levels(num_nodes, src[real], dst[real])
    order = torch.argsort(level, stable=True)
    sizes = torch.bincount(level, minlength=int(level.max()) + 1 if num_nodes else 1)
    position = torch.empty(num_nodes, dtype=torch.long)
    position[order] = torch.arange(num_nodes)
    first = torch.cumsum(sizes, 0) - sizes
    edge_level = level[dst]
    edge_order = torch.argsort(edge_level, stable=True)
    edge_counts = torch.bincount(edge_level, minlength=len(sizes)).tolist()
    row = 2 * position[src[edge_order]] + (~real[edge_order]).long()
    slot = position[dst[edge_order]] - first[edge_level[edge_order]]
    weight = 1.0 / dist[edge_order, None].float()
    edges = list(zip(torch.split(row, edge_counts), torch.split(slot, edge_counts), torch.split(weight, edge_counts),
                     strict=True))
    return Sweep(order, position, sizes.tolist(), edges[1:])  # level 0 receives nothing


def sweeps(num_nodes: int, edges: torch.Tensor, distance: torch.Tensor) -> Sweeps:
    """The schedule of one graph with ``edges`` (E, 2) from lower to higher node index and their path lengths."""
    src, dst = edges[:, 0], edges[:, 1]
    real = distance == 1
    flip = num_nodes - 1  # reversing node order turns the backward sweep into a forward one
    back = _sweep(num_nodes, flip - dst, flip - src, distance, real)
    return Sweeps(_sweep(num_nodes, src, dst, distance, real),
                  Sweep(flip - back.order, back.position.flip(0), back.sizes, back.edges))


def _join_sweep(parts: list[Sweep], offsets: list[int]) -> Sweep:
    depth = max(len(p.sizes) for p in parts)
    sizes = [sum(p.sizes[level] for p in parts if level < len(p.sizes)) for level in range(depth)]
    start = [sum(sizes[:level]) for level in range(depth)]
    taken = [0] * depth
    order = torch.empty(sum(sizes), dtype=torch.long)
    levels: list[list[Edges]] = [[] for _ in range(depth - 1)]
    for part, off in zip(parts, offsets, strict=True):
        moved = []  # where each of this graph's level-order positions lands in the join
        for level, size in enumerate(part.sizes):
            moved.append(torch.arange(start[level] + taken[level], start[level] + taken[level] + size))
            if level:
                row, slot, weight = part.edges[level - 1]
                levels[level - 1].append((row, slot + taken[level], weight))
            taken[level] += size
        moved_t = torch.cat(moved)
        order[moved_t] = part.order + off
        for level in range(len(part.sizes) - 1):
            row, slot, weight = levels[level][-1]
            levels[level][-1] = (2 * moved_t[row // 2] + row % 2, slot, weight)
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order))
    edges = [tuple(torch.cat(column) for column in zip(*level, strict=True)) for level in levels]
    return Sweep(order, position, sizes, edges)


def join(parts: list[Sweeps], sizes: list[int]) -> Sweeps:
    """The schedule of disjoint graphs numbered one after another (graph ``g`` has ``sizes[g]`` nodes): level
    ``L`` of the join updates level ``L`` of every graph at once."""
    if len(parts) == 1:
        return parts[0]
    offsets = [sum(sizes[:g]) for g in range(len(sizes))]
    return Sweeps(_join_sweep([p.forward for p in parts], offsets), _join_sweep([p.backward for p in parts], offsets))
