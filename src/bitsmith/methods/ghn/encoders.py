"""Graph encoders of the hypernetwork: GHN-2's gated message passing and a small Graphormer (GHN-3 style).

Both read a :class:`Batch` (several encoded graphs joined into one) and return one embedding per node.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from bitsmith.methods.ghn import schedule
from bitsmith.methods.ghn.encoding import Encoding


@dataclass
class Batch:
    """Several encodings as one disjoint graph: node features, global edge list with distances, graph offsets."""

    features: torch.Tensor
    edges: torch.Tensor
    distance: torch.Tensor
    offsets: list[int]
    sizes: list[int]
    encodings: list[Encoding]

    @cached_property
    def sweeps(self) -> schedule.Sweeps:
        """The joined message-passing schedule of the graphs (each graph's own is computed when it is encoded)."""
        return schedule.join([e.sweeps for e in self.encodings], self.sizes)

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
            encodings=list(encodings),
        )


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

    def _sweep(self, h: torch.Tensor, sweep: schedule.Sweep, packed: tuple[torch.Tensor, ...]) -> torch.Tensor:
        # In level order every level is a slice, and a node's messages depend only on its own state, final once its
        # level is done: the sweep runs ~depth tiny steps, so per-op overhead dominates on CPU: few ops per step.
        hidden = h.shape[1]
        gru = (self.gru.weight_ih, self.gru.weight_hh, self.gru.bias_ih, self.gru.bias_hh)  # GRUCell, minus its checks
        states = h.index_select(0, sweep.order)
        sent = self._messages(states, packed)  # rewritten level by level, only after every read of those rows
        done, start = [states[:sweep.sizes[0]]], sweep.sizes[0]
        for size, (row, slot, weight) in zip(sweep.sizes[1:], sweep.edges, strict=True):
            msg = sent.view(-1, hidden).index_select(0, row) * weight
            incoming = h.new_zeros(size, hidden).index_add_(0, slot, msg)
            new = torch.gru_cell(incoming, states[start:start + size], *gru)
            sent[start:start + size] = self._messages(new, packed)
            done.append(new)
            start += size
        return torch.cat(done).index_select(0, sweep.position)

    def forward(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Node states after ``layers`` forward+backward sweeps."""
        sweeps = batch.sweeps.to(h.device)
        packed = self._packed()
        for _ in range(self.layers):
            h = self._sweep(h, sweeps.forward, packed)
            h = self._sweep(h, sweeps.backward, packed)
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
