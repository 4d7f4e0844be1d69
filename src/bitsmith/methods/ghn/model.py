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
        rows = torch.tensor([batch.offsets[g] + slot.node for g, slot in slots], dtype=torch.long,
                            device=states.device)
        z = states[rows]
        out: list[dict[str, torch.Tensor]] = [{} for _ in encodings]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for j, (_, slot) in enumerate(slots):
            groups[(slot.role, slot.shape)].append(j)
        for (role, shape), members in groups.items():
            index = torch.tensor(members, dtype=torch.long, device=z.device)
            values = self._decode(role, shape, z[index])
            for value, j in zip(values, members, strict=True):
                g, slot = slots[j]
                out[g][slot.name] = value
        return out

    def _decode(self, role: str, shape: tuple[int, ...], z: torch.Tensor) -> torch.Tensor:
        """Tensors of ``shape`` for a group of slots of one role, from their decoder states ``z`` (n, d)."""
        n, c, r, k = z.shape[0], self.config.max_channels, self.config.rank, self.config.max_kernel
        if role in ("weight", "classifier"):
            out_channels, in_channels = shape[0], shape[1]
            kh, kw = (shape[2], shape[3]) if len(shape) == 4 else (1, 1)
            if role == "classifier":
                a = self.cls_factor(z).view(n, self.config.num_classes, r)
                b = self.cls_in_factor(z).view(n, c, r)
            else:
                a = self.out_factor(z).view(n, c, r)
                b = self.in_factor(z).view(n, c, r)
            a, b = _tile(a, out_channels, 1), _tile(b, in_channels, 1)
            s = _crop(self.spatial(z).view(n, k, k, r), kh, kw)
            w = _cp_product(a, b, s)
            fan_in = in_channels * kh * kw
            rms = w.pow(2).mean(dim=(1, 2, 3, 4), keepdim=True).add(1e-8).sqrt()
            scale = (1.5 * torch.tanh(self.log_scale(z)) + 0.5 * math.log(2.0)).exp().view(n, 1, 1, 1, 1)
            w = w / rms * scale / math.sqrt(fan_in)
            return w.reshape(n, *shape)
        if role == "cls_bias":
            return torch.tanh(_tile(self.cls_bias(z), shape[0], 1))
        vec = self.vector(z).view(n, 3, c)
        which = {"norm_weight": 0, "norm_bias": 1, "bias": 2}[role]
        raw = _tile(vec[:, which], shape[0], 1)
        return 2 * torch.sigmoid(raw) if which == 0 else torch.tanh(raw)

    def num_parameters(self) -> int:
        """Trainable scalars of the hypernetwork."""
        return sum(p.numel() for p in self.parameters())
