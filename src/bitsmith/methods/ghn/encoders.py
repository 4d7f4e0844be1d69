"""Graph encoders of the hypernetwork: GHN-2's gated message passing and a small Graphormer (GHN-3 style).

Both read a :class:`Batch` (several encoded graphs joined into one) and return one embedding per node.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bitsmith.methods.ghn.encoding import Encoding


@dataclass
class Batch:
    """Several encodings as one disjoint graph: node features, global edge list with distances, graph offsets."""

    features: torch.Tensor
    edges: torch.Tensor
    distance: torch.Tensor
    offsets: list[int]
    sizes: list[int]

    @classmethod
    def of(cls, encodings: list[Encoding]) -> Batch:
        """Join ``encodings`` (node indices shifted by each graph's offset)."""
        offsets, total = [], 0
        for enc in encodings:
            offsets.append(total)
            total += enc.num_nodes
        return cls(
            features=torch.cat([e.features for e in encodings]),
            edges=torch.cat([e.edges + off for e, off in zip(encodings, offsets, strict=True)]),
            distance=torch.cat([e.distance for e in encodings]),
            offsets=offsets,
            sizes=[e.num_nodes for e in encodings],
        )


def _levels(num_nodes: int, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Longest-path depth of every node of a DAG whose edges all go from lower to higher node index."""
    level = [0] * num_nodes
    order = torch.argsort(dst, stable=True)
    for s, d in zip(src[order].tolist(), dst[order].tolist(), strict=True):
        level[d] = max(level[d], level[s] + 1)
    return torch.tensor(level, dtype=torch.long)


def _schedule(num_nodes: int, src: torch.Tensor, dst: torch.Tensor, dist: torch.Tensor,
              real: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per depth level: (receiving nodes, each edge's message row, edge target slot, 1/distance as a column).

    An edge's message row is ``2 * source + 1`` for a virtual edge and ``2 * source`` for a real one: the row of
    :meth:`GatedGNN._messages`'s output viewed as (2n, hidden). Nodes and edges are grouped by level with one sort
    each (no per-level scan), since this runs on every forward.
    """
    if num_nodes == 0:
        return []
    level = _levels(num_nodes, src[real], dst[real])
    depth = int(level.max()) + 1
    node_order = torch.argsort(level, stable=True)
    node_counts = torch.bincount(level, minlength=depth)
    first = torch.cumsum(node_counts, 0) - node_counts
    slot = torch.empty(num_nodes, dtype=torch.long)
    slot[node_order] = torch.arange(num_nodes) - first[level[node_order]]
    edge_level = level[dst]
    edge_order = torch.argsort(edge_level, stable=True)
    edge_counts = torch.bincount(edge_level, minlength=depth).tolist()
    weight = 1.0 / dist[edge_order, None].float()
    row = 2 * src[edge_order] + (~real[edge_order]).long()
    groups = zip(torch.split(node_order, node_counts.tolist()), torch.split(row, edge_counts),
                 torch.split(slot[dst[edge_order]], edge_counts), torch.split(weight, edge_counts), strict=True)
    return [step for lev, step in enumerate(groups) if lev > 0 and step[0].numel()]


class GatedGNN(nn.Module):
    """GHN-2's encoder: each round sweeps the graph in forward then backward topological order; a node's message is
    an MLP of its direct neighbours' states plus a second MLP of its virtual neighbours' states (all nodes within
    the cutoff distance) weighted by 1/distance; a GRU cell updates the node with it."""

    def __init__(self, hidden: int, layers: int) -> None:
        super().__init__()
        self.layers = layers

        def mlp() -> nn.Sequential:
            return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))

        self.message = nn.ModuleList([mlp(), mlp()])  # real edges, virtual edges
        self.gru = nn.GRUCell(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def _packed(self) -> tuple[torch.Tensor, ...]:
        """Both message MLPs as one, weights transposed for ``addmm``: first layers concatenated, second layers
        block-diagonal (two matrix products per call, not four)."""
        first = [mlp[0] for mlp in self.message]
        second = [mlp[2] for mlp in self.message]
        return (torch.cat([m.weight for m in first]).t(), torch.cat([m.bias for m in first]),
                torch.block_diag(*[m.weight for m in second]).t(), torch.cat([m.bias for m in second]))

    @staticmethod
    def _messages(states: torch.Tensor, packed: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """(n, 2 * hidden): what each node sends along real edges (first half) and along virtual edges (second)."""
        w1t, b1, w2t, b2 = packed
        return torch.addmm(b2, torch.addmm(b1, states, w1t).relu(), w2t)

    def _sweep(self, h: torch.Tensor, steps: list, packed: tuple[torch.Tensor, ...]) -> torch.Tensor:
        # A node's outgoing messages depend only on its own state, final once its level is done: keep them per node.
        # The sweep runs ~2 x depth tiny steps, so per-op overhead dominates on CPU: few ops per step.
        hidden = h.shape[1]
        sent = self._messages(h, packed)
        for nodes, row, slot, weight in steps:
            msg = sent.view(-1, hidden).index_select(0, row) * weight
            incoming = h.new_zeros(len(nodes), hidden).index_add_(0, slot, msg)
            new = self.gru(incoming, h.index_select(0, nodes))
            h = h.index_copy(0, nodes, new)
            sent = sent.index_copy(0, nodes, self._messages(new, packed))
        return h

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Node states after ``layers`` forward+backward sweeps."""
        n = h.shape[0]
        src, dst, dist = batch.edges[:, 0], batch.edges[:, 1], batch.distance
        real = dist == 1
        flip = n - 1  # reversing node order turns the backward sweep into a forward one
        backward = [(flip - nodes, 2 * (flip - row // 2) + row % 2, slot, w)
                    for nodes, row, slot, w in _schedule(n, flip - dst, flip - src, dist, real)]
        forward, backward = ([tuple(t.to(h.device) for t in step) for step in sweep]
                             for sweep in (_schedule(n, src, dst, dist, real), backward))
        packed = self._packed()
        for _ in range(self.layers):
            h = self._sweep(h, forward, packed)
            h = self._sweep(h, backward, packed)
        return self.norm(h)


class Graphormer(nn.Module):
    """A small Graphormer (GHN-3 style): pre-norm transformer blocks over each graph's nodes, with a learned attention
    bias per head for every (signed, clipped) shortest-path distance and in/out-degree embeddings."""

    def __init__(self, hidden: int, layers: int, heads: int, cutoff: int) -> None:
        super().__init__()
        self.heads, self.cutoff = heads, cutoff
        self.distance_bias = nn.Embedding(2 * cutoff + 2, heads)  # 0 self, 1..c forward, c+1..2c backward, last none
        self.degree = nn.ModuleList([nn.Embedding(11, hidden), nn.Embedding(11, hidden)])
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            self.blocks.append(nn.ModuleDict({
                "norm1": nn.LayerNorm(hidden), "qkv": nn.Linear(hidden, 3 * hidden), "proj": nn.Linear(hidden, hidden),
                "norm2": nn.LayerNorm(hidden),
                "ffn": nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden)),
            }))
        self.norm = nn.LayerNorm(hidden)

    def _bias(self, batch: Batch, width: int, device: torch.device) -> torch.Tensor:
        """(G, heads, N, N) attention bias of the padded batch (-inf towards padding)."""
        graphs = len(batch.sizes)
        code = torch.full((graphs, width, width), 2 * self.cutoff + 1, dtype=torch.long)
        for g, (off, size) in enumerate(zip(batch.offsets, batch.sizes, strict=True)):
            code[g, torch.arange(size), torch.arange(size)] = 0
            sel = (batch.edges[:, 0] >= off) & (batch.edges[:, 0] < off + size)
            s, d = batch.edges[sel, 0] - off, batch.edges[sel, 1] - off
            dist = batch.distance[sel].clamp(max=self.cutoff)
            code[g, s, d] = dist
            code[g, d, s] = dist + self.cutoff
        pad = torch.arange(width)[None, :] >= torch.tensor(batch.sizes)[:, None]
        bias = self.distance_bias(code.to(device)).permute(0, 3, 1, 2)
        return bias.masked_fill(pad.to(device)[:, None, None, :], float("-inf"))

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Node states after the transformer blocks (padding removed)."""
        device, width = h.device, max(batch.sizes)
        real = batch.distance == 1
        src, dst = batch.edges[real, 0], batch.edges[real, 1]
        n = h.shape[0]
        deg_in = torch.zeros(n, dtype=torch.long).index_add(0, dst, torch.ones_like(dst)).clamp(max=10)
        deg_out = torch.zeros(n, dtype=torch.long).index_add(0, src, torch.ones_like(src)).clamp(max=10)
        h = h + self.degree[0](deg_in.to(device)) + self.degree[1](deg_out.to(device))
        index = torch.cat([torch.arange(size) + g * width for g, size in enumerate(batch.sizes)]).to(device)
        x = h.new_zeros(len(batch.sizes) * width, h.shape[1]).index_copy(0, index, h)
        x = x.view(len(batch.sizes), width, -1)
        bias = self._bias(batch, width, device)
        graphs, heads = x.shape[0], self.heads
        for block in self.blocks:
            q, k, v = block["qkv"](block["norm1"](x)).chunk(3, dim=-1)
            q, k, v = (t.view(graphs, width, heads, -1).transpose(1, 2) for t in (q, k, v))
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            x = x + block["proj"](att.transpose(1, 2).reshape(graphs, width, -1))
            x = x + block["ffn"](block["norm2"](x))
        return self.norm(x.reshape(graphs * width, -1)[index])
