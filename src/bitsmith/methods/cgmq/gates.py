"""The gated quantizer of CGMQ: nested bit-width refinements switched on by gate variables (docs/METHODS.md).

For bit widths ``b_0 < b_1 < ... < b_K`` (e.g. 2, 4, 8, 16, 32) the step sizes are nested,
``s_k = s_0 * 2^(b_0 - b_k)``, so every coarser grid is a subset of every finer one. With ``Q_k`` the
quantizer at ``b_k`` (``Q`` at 32 bits is the identity) and ``e_k = Q_k(x) - Q_(k-1)(x)``::

    y = Q_0(x) + z_1 (e_1 + z_2 (e_2 + ... + z_K e_K))        z_k = 1[g_k > 0]

``y`` is exactly ``Q_k*(x)`` for the highest ``k*`` whose gate and all gates below it are on: the same
quantization in training and at inference. Gates get straight-through gradients (``dz/dg = 1``); a gate can
be one per layer, per output channel, or per weight (weights) and one per layer (activations).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bitsmith.errors import ConfigError
from bitsmith.quant.observers import estimate_range, range_to_qparams, rows
from bitsmith.quant.quantizers import FULL_PRECISION, LOG_SCALE_GAIN, initialize_on_first_batch, qrange
from bitsmith.quant.ste import MIN_SCALE, _broadcast, fake_quant

LN2 = math.log(2.0)


def _hard(g: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    return (g > threshold).to(g.dtype)


class GatedQuantizer(nn.Module):
    """Fake quantizer whose bit width is chosen by gates (see the module docstring).

    role "weight": signed, one step size per output channel (``channels``) or per tensor; gates of shape
    ``gate_shape`` ((), (out,) or the weight's shape). role "activation": one step size and one gate chain per
    tensor; ``signed=None`` decides from the first batch. ``ref_bits`` is the width whose MSE-optimal range
    initialises the step sizes.
    """

    def __init__(self, bits: Sequence[int], *, role: str, signed: bool | None = True, channels: int | None = None,
                 gate_shape: Sequence[int] = (), gate_init: float = 1.0, ref_bits: int = 4, name: str = "") -> None:
        super().__init__()
        self.bit_list = tuple(int(b) for b in bits)
        if len(self.bit_list) < 2 or self.bit_list[0] >= FULL_PRECISION:
            raise ConfigError(f"gated quantizer '{name}' needs at least two bit widths, the lowest below 32")
        self.role, self.name, self.channels = role, name, channels
        self.ref_bits = min(self.bit_list[:-1] if self.bit_list[-1] == FULL_PRECISION else self.bit_list,
                            key=lambda b: abs(b - ref_bits))
        self._signed = signed
        self.learnable = True
        self.frozen = False  # set while the gates are frozen: no gate gradients, only the selected widths computed
        self.log_scale = nn.Parameter(torch.zeros(channels or 1))
        # staggered start: the finest refinement has the smallest gate, so under a uniform push the top widths
        # switch off first (32, then 16, ...) instead of every refinement of a group at once
        levels = len(self.bit_list) - 1
        start = torch.tensor([gate_init * (levels - k) / levels for k in range(levels)])
        self.gates = nn.Parameter(start.view(-1, *[1] * len(gate_shape)).expand(levels, *gate_shape).clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))
        self.register_buffer("signed_flag", torch.tensor(-1 if signed is None else int(bool(signed)),
                                                         dtype=torch.int8))
        # log-step offset of every width: s_k = exp(GAIN * (log_scale + offset_k)), as the core LSQ computes it
        self._offsets = [(self.bit_list[0] - b) * LN2 / LOG_SCALE_GAIN for b in self.bit_list]

    # ----------------------------------------------------------------- gates and bit widths
    @property
    def signed(self) -> bool | None:
        """Whether codes are signed (None until the first activation batch decides)."""
        flag = int(self.signed_flag)
        return None if flag < 0 else bool(flag)

    @property
    def is_initialized(self) -> bool:
        """True once the step size has been set from data (or loaded)."""
        return bool(self.initialized)

    @property
    def is_passthrough(self) -> bool:
        """True when some group computes in full precision (then a bias cannot be put on an integer grid)."""
        return self.bit_list[-1] == FULL_PRECISION and bool(self.bit_width(ste=False).max() >= FULL_PRECISION)

    def chain(self, ste: bool = True, threshold: float = 0.0) -> list[torch.Tensor]:
        """Nested gates ``Z_k = z_1 * ... * z_k`` (k = 1..K), 0/1 in value; with ``ste`` they carry the gates'
        straight-through gradients. Gates at or below ``threshold`` count as off."""
        out, acc = [], None
        for g in self.gates:
            z = _hard(g.detach(), threshold)
            if ste:
                z = z + (g - g.detach())
            acc = z if acc is None else acc * z
            out.append(acc)
        return out

    def bit_width(self, ste: bool = True, threshold: float = 0.0) -> torch.Tensor:
        """Bit width of every gate group (shape ``gate_shape``): ``b_0 + sum_k Z_k (b_k - b_(k-1))``."""
        bits = torch.full(self.gates.shape[1:], float(self.bit_list[0]), device=self.gates.device)
        for k, z in enumerate(self.chain(ste, threshold), start=1):
            bits = bits + z * float(self.bit_list[k] - self.bit_list[k - 1])
        return bits

    @property
    def bits(self) -> int | list[int]:
        """Bit width(s) the hardware stores: one int, or per output channel the widest of its weights."""
        width = self.bit_width(ste=False).detach()
        if self.role == "weight" and width.dim() > 0:
            per_channel = width.reshape(width.shape[0], -1).amax(dim=1).long().tolist()
            return per_channel[0] if len(set(per_channel)) == 1 else per_channel
        return int(width.max())

    # ----------------------------------------------------------------- step sizes
    def log_scale_at(self, k: int) -> torch.Tensor:
        """``log_scale`` of width ``bit_list[k]`` (the core LSQ parametrisation, ``s = exp(GAIN * .)``)."""
        return self.log_scale + self._offsets[k]

    def scale_at(self, k: int) -> torch.Tensor:
        """Step size(s) at width ``bit_list[k]``."""
        return (self.log_scale_at(k) * LOG_SCALE_GAIN).exp()

    def index_of(self, bits: int) -> int:
        """Position of ``bits`` in the nested widths."""
        return self.bit_list.index(bits)

    def scale_tensor(self) -> torch.Tensor:
        """Step size of the grid the values lie on: per output channel at its widest width (weights), or at the
        tensor's width (activations)."""
        width = self.bit_width(ste=False).detach()
        top = width.reshape(width.shape[0], -1).amax(dim=1) if self.role == "weight" and width.dim() else \
            width.max().reshape(1)
        index = (top.unsqueeze(-1) == top.new_tensor(self.bit_list)).float().argmax(dim=-1)
        offsets = torch.tensor(self._offsets, dtype=self.log_scale.dtype, device=self.log_scale.device)[index]
        return ((self.log_scale + offsets) * LOG_SCALE_GAIN).exp()

    def _signed_now(self) -> bool:
        return True if self._signed is None else bool(self._signed)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Signedness (activations with ``signed=None``) and the step sizes from the MSE-optimal range of ``x``
        at ``ref_bits``."""
        if self._signed is None:
            self._signed = bool(x.detach().min() < 0)
            self.signed_flag.fill_(int(self._signed))
        x2d = rows(x, self.channels is not None)
        qmin, qmax = qrange(self.ref_bits, self._signed_now())
        lo, hi = estimate_range(x2d[:, :: max(1, x2d.shape[1] // 65536)], "mse", qmin, qmax, True)
        scale, _ = range_to_qparams(lo, hi, qmin, qmax, True)
        ref = self.index_of(self.ref_bits)
        self.log_scale.copy_(scale.clamp_min(MIN_SCALE).log() / LOG_SCALE_GAIN - self._offsets[ref])
        self.initialized.fill_(1)

    def _grad_factor(self, x: torch.Tensor, qmax: int) -> float:
        per_scale = x.numel() // (self.channels or (x.shape[0] if self.role == "activation" and x.dim() else 1))
        return 1.0 / math.sqrt(max(per_scale, 1) * max(qmax, 1))

    def _depth(self, gate_grad: bool) -> int:
        """How many refinements must be computed: up to the deepest gate that is on anywhere, plus the next one
        when gates need gradients (beyond it every term is multiplied by an off gate and is exactly zero)."""
        on = (self.gates.detach() > 0).reshape(self.gates.shape[0], -1).any(dim=1).tolist()
        last_on = max((k + 1 for k, flag in enumerate(on) if flag), default=0)
        return min(len(on), last_on + 1) if gate_grad else last_on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quantize ``x`` at the bit width its gates select (identity for an activation not yet initialised in
        eval mode, as the core quantizers do)."""
        if not initialize_on_first_batch(self, x):
            return x
        signed = self._signed_now()
        gate_grad = self.gates.requires_grad and torch.is_grad_enabled() and not self.frozen
        depth = self._depth(gate_grad)
        levels = []
        for k, b in enumerate(self.bit_list[: depth + 1]):
            if b == FULL_PRECISION:
                levels.append(x)
                continue
            qmin, qmax = qrange(b, signed)
            levels.append(fake_quant(x, self.scale_at(k), None, qmin, qmax, self._grad_factor(x, qmax)))
        z = [self._view(zk, x) for zk in self.chain(ste=gate_grad)[:depth]]
        acc = None
        for k in range(len(levels) - 1, 0, -1):
            step = levels[k] - levels[k - 1] if acc is None else levels[k] - levels[k - 1] + acc
            acc = z[k - 1] * step
        return levels[0] if acc is None else levels[0] + acc

    def _view(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if z.dim() == 0 or z.shape == x.shape:
            return z
        return _broadcast(z, x) if z.dim() == 1 else z

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        flag = int(self.signed_flag)
        self._signed = None if flag < 0 else bool(flag)

    def extra_repr(self) -> str:
        return f"bits={self.bit_list}, role={self.role}, gates={tuple(self.gates.shape[1:])}"
