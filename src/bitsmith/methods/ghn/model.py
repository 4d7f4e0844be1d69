"""GraphHyperNetwork: node embeddings → graph encoder → a decoder that emits every parameter tensor of the graph.

Decoder (ours): from a node's state an MLP gives the factors of a rank-R CP tensor
``W[o, i, u, v] = Σ_r A[o, r] B[i, r] S[u, v, r]`` of a fixed block (``max_channels`` x ``max_channels`` x
``max_kernel``²); the block is sliced to the layer's shape, and tiled along channels for wider layers (as GHN-2
tiles). The classifier has its own heads (one row per class). GHN-2's operation-dependent normalisation follows:
conv/linear weights are rescaled to RMS ``exp(s)/sqrt(fan_in)`` with a bounded learned log-scale ``s`` per layer,
normalisation weights are ``2·sigmoid``, biases ``tanh``.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn

from bitsmith.methods.ghn.config import GHNConfig
from bitsmith.methods.ghn.encoders import Batch, GatedGNN, Graphormer
from bitsmith.methods.ghn.encoding import FEATURES, Encoding


def _tile(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """The first ``n`` entries of ``t`` along ``dim``, repeating ``t`` when it is shorter."""
    size = t.shape[dim]
    if n > size:
        t = t.repeat(*[math.ceil(n / size) if d == dim else 1 for d in range(t.dim())])
    return t.narrow(dim, 0, n)


def _crop(s: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Centre ``kh`` x ``kw`` window of the (n, K, K, R) spatial factor (zero-padded when the kernel is larger)."""
    k = s.shape[1]
    if kh > k or kw > k:
        ph, pw = max(0, kh - k), max(0, kw - k)
        s = nn.functional.pad(s, (0, 0, pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        k = s.shape[1]
    top, left = (s.shape[1] - kh) // 2, (s.shape[2] - kw) // 2
    return s[:, top:top + kh, left:left + kw]


def _cp_product(a: torch.Tensor, b: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``W[n, o, i, u, v] = Σ_r a[n, o, r] b[n, i, r] s[n, u, v, r]`` as one batched GEMM over the rank (the
    in-channel x spatial factor first): 2-10x faster on CPU than the three-operand einsum."""
    n, o, r = a.shape
    i, kh, kw = b.shape[1], s.shape[1], s.shape[2]
    inner = (b[:, :, None, :] * s.reshape(n, 1, kh * kw, r)).reshape(n, i * kh * kw, r)
    return torch.bmm(a, inner.transpose(1, 2)).view(n, o, i, kh, kw)


#: The decoder heads each role of predicted tensor reads (the other roles read ``vector``).
_HEADS = {"weight": ("out_factor", "in_factor", "spatial", "log_scale"),
          "classifier": ("cls_factor", "cls_in_factor", "spatial", "log_scale"), "cls_bias": ("cls_bias",)}


class GraphHyperNetwork(nn.Module):
    """Predicts all conv, linear and normalisation parameters of encoded graphs in one forward pass."""

    def __init__(self, config: GHNConfig) -> None:
        super().__init__()
        self.config = config
        h, d, r, c, k = config.hidden, config.decoder_hidden, config.rank, config.max_channels, config.max_kernel
        self.embed = nn.ModuleList([nn.Embedding(size, h) for size in FEATURES.values()])
        self.encoder: nn.Module = (GatedGNN(h, config.layers) if config.encoder == "gatedgnn"
                                   else Graphormer(h, config.layers, config.heads, config.cutoff))
        self.trunk = nn.Sequential(nn.Linear(h, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU())
        self.out_factor = nn.Linear(d, c * r)
        self.in_factor = nn.Linear(d, c * r)
        self.spatial = nn.Linear(d, k * k * r)
        self.log_scale = nn.Linear(d, 1)
        self.cls_factor = nn.Linear(d, config.num_classes * r)
        self.cls_in_factor = nn.Linear(d, c * r)
        self.vector = nn.Linear(d, 3 * c)  # norm weight, norm bias, conv/linear bias
        self.cls_bias = nn.Linear(d, config.num_classes)
        for head in (self.log_scale, self.vector, self.cls_bias):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def embed_nodes(self, batch: Batch) -> torch.Tensor:
        """Initial node states: the sum of one embedding per categorical feature."""
        feats = batch.features.to(self.out_factor.weight.device)
        return sum(emb(feats[:, i]) for i, emb in enumerate(self.embed))

    def forward(self, encodings: list[Encoding]) -> list[dict[str, torch.Tensor]]:
        """One ``{parameter name: tensor}`` dict per encoding."""
        batch = Batch.of(encodings)
        states = self.trunk(self.encoder(self.embed_nodes(batch), batch))
        slots = [(g, slot) for g, enc in enumerate(encodings) for slot in enc.slots]
        out: list[dict[str, torch.Tensor]] = [{} for _ in encodings]
        by_heads: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for j, (_, slot) in enumerate(slots):
            by_heads[_HEADS.get(slot.role, ("vector",))].append(j)
        for heads, members in by_heads.items():
            rows = torch.tensor([batch.offsets[slots[j][0]] + slots[j][1].node for j in members], dtype=torch.long,
                                device=states.device)
            outputs = self._heads(states[rows], heads)  # every head of these slots in one matrix product
            groups: dict[tuple, list[int]] = defaultdict(list)
            for k, j in enumerate(members):
                groups[(slots[j][1].role, slots[j][1].shape)].append(k)
            for (role, shape), local in groups.items():
                index = torch.tensor(local, dtype=torch.long, device=states.device)
                values = self._decode(role, shape, outputs.index_select(0, index))
                for value, k in zip(values, local, strict=True):
                    g, slot = slots[members[k]]
                    out[g][slot.name] = value
        return out

    def _heads(self, z: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
        """The linear heads ``names`` applied to ``z`` as one layer (their outputs side by side, in that order)."""
        heads = [getattr(self, name) for name in names]
        if len(heads) == 1:
            return heads[0](z)
        return nn.functional.linear(z, torch.cat([h.weight for h in heads]), torch.cat([h.bias for h in heads]))

    def _decode(self, role: str, shape: tuple[int, ...], head: torch.Tensor) -> torch.Tensor:
        """Tensors of ``shape`` for a group of slots of one role, from the outputs of that role's heads (n, ...)."""
        n, c, r, k = head.shape[0], self.config.max_channels, self.config.rank, self.config.max_kernel
        if role in ("weight", "classifier"):
            out_channels, in_channels = shape[0], shape[1]
            kh, kw = (shape[2], shape[3]) if len(shape) == 4 else (1, 1)
            rows = self.config.num_classes if role == "classifier" else c
            a, b, s, log_scale = head.split([rows * r, c * r, k * k * r, 1], dim=1)
            a, b = _tile(a.reshape(n, rows, r), out_channels, 1), _tile(b.reshape(n, c, r), in_channels, 1)
            w = _cp_product(a, b, _crop(s.reshape(n, k, k, r), kh, kw))
            # RMS exp(log-scale) / sqrt(fan_in): one product over the full tensor, the rest on (n,) factors
            inv_rms = w.square().mean(dim=(1, 2, 3, 4)).add_(1e-8).rsqrt_()
            log_scale = 1.5 * torch.tanh(log_scale.reshape(n)) + 0.5 * math.log(2.0 / (in_channels * kh * kw))
            return (w * (inv_rms * log_scale.exp_()).view(n, 1, 1, 1, 1)).reshape(n, *shape)
        if role == "cls_bias":
            return torch.tanh(_tile(head, shape[0], 1))
        which = {"norm_weight": 0, "norm_bias": 1, "bias": 2}[role]
        raw = _tile(head.view(n, 3, c)[:, which], shape[0], 1)
        return 2 * torch.sigmoid(raw) if which == 0 else torch.tanh(raw)

    def num_parameters(self) -> int:
        """Trainable scalars of the hypernetwork."""
        return sum(p.numel() for p in self.parameters())
