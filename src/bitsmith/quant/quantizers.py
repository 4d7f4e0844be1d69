"""Uniform affine fake quantizers as nn.Modules: LSQ (learned scale), PACT (learned clipping), MinMax (observer).

All share :class:`Quantizer`: bit widths 2..8 and 16 (32 = pass-through, no rounding), signed or unsigned,
symmetric or asymmetric, per tensor or per output channel (axis 0; per-channel bit widths may differ), scale
initialised from the first batch they see (min/max or MSE-optimal clipping), integer codes via
``quantize_int`` and their inverse ``dequantize``. The rounding and its straight-through gradient live in
:mod:`bitsmith.quant.ste`.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from bitsmith.errors import ConfigError
from bitsmith.quant.observers import MSE_GRID, minmax_range, mse_range, range_to_qparams, rows
from bitsmith.quant.ste import MIN_SCALE, Bound, _broadcast, fake_quant, round_ste

FULL_PRECISION = 32
SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8, 16, FULL_PRECISION)
ACCEPTED_BITS = "2..8, 16, 32"
METHODS = ("lsq", "pact", "minmax")
INITS = ("minmax", "mse")
ROLES = ("weight", "activation")
#: Largest number of values per row the data-driven initialisation searches (a strided subsample beyond it).
INIT_SAMPLE = 1 << 16


def _where(name: str) -> str:
    return f" for '{name}'" if name else ""


def check_bits(bits: Any, role: str = "weight", name: str = "", channels: int | None = None) -> int | list[int]:
    """Validate a bit width, or a per-output-channel list of them, and return it (a uniform list as one int).

    Raises ConfigError such as "weight bit width 1 for 'features.0' is not supported; accepted: 2..8, 16, 32".
    """
    if isinstance(bits, (list, tuple)):
        if role != "weight":
            raise ConfigError(f"{role} bit width{_where(name)} must be one integer, got a list; accepted: "
                              f"{ACCEPTED_BITS}")
        if not bits:
            raise ConfigError(f"per-channel weight bit widths{_where(name)} must not be empty")
        values = [check_bits(b, role, name) for b in bits]
        if FULL_PRECISION in values and len(set(values)) > 1:
            raise ConfigError(f"per-channel weight bit widths{_where(name)} cannot mix 32 (pass-through) with "
                              f"quantized channels; accepted per channel: 2..8, 16")
        if channels is not None and len(values) != channels:
            raise ConfigError(f"per-channel weight bit widths{_where(name)} have {len(values)} entries; the "
                              f"layer has {channels} output channels")
        if len(set(values)) == 1:
            return values[0]
        if channels is None:
            raise ConfigError(f"per-channel weight bit widths{_where(name)} need a per-channel quantizer "
                              f"(per_channel=true)")
        return values
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or int(bits) not in SUPPORTED_BITS:
        raise ConfigError(f"{role} bit width {bits!r}{_where(name)} is not supported; accepted: {ACCEPTED_BITS}")
    return int(bits)


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """Integer code range of ``bits``: ``[-2^(b-1), 2^(b-1) - 1]`` signed, ``[0, 2^b - 1]`` unsigned."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def initialize_on_first_batch(quantizer: Any, x: torch.Tensor) -> bool:
    """The initialisation policy of every quantizer without a scale yet (see ``Quantizer.forward``): initialise
    from ``x`` and return True, or return False when ``x`` must pass through unchanged (an activation in eval
    mode, or a constant batch, which carries no range)."""
    if quantizer.is_initialized:
        return True
    if quantizer.role == "activation" and not quantizer.training:
        return False
    lo, hi = torch.aminmax(x.detach())
    if not bool(hi > lo):
        return False
    quantizer.initialize(x)
    return True


class Quantizer(nn.Module, abc.ABC):
    """Base of the uniform affine fake quantizers (subclasses define the scale's parametrisation).

    ``signed=None`` decides signedness from the data at initialisation (unsigned if the first batch has no
    negative value); it is stored in the state dict with the scale. A float checkpoint (without quantizer
    entries) loads cleanly: the quantizer then re-initialises from the next batch it sees.
    """

    #: Data-driven initialisation: at most ``init_sample`` values per row, ``init_grid`` clipping ratios (MSE).
    #: Plain attributes, not state: a caller that re-initialises every step (GHN-Q training) may coarsen them.
    init_sample: int = INIT_SAMPLE
    init_grid: int = MSE_GRID

    def __init__(self, bits: int | Sequence[int] = 8, *, signed: bool | None = True, symmetric: bool = True,
                 channels: int | None = None, init: str = "mse", role: str = "activation", name: str = "") -> None:
        super().__init__()
        if role not in ROLES:
            raise ConfigError(f"quantizer role {role!r} is not known; accepted: {', '.join(ROLES)}")
        if init not in INITS:
            raise ConfigError(f"scale initialisation {init!r}{_where(name)} is not known; accepted: {', '.join(INITS)}")
        if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
            raise ConfigError(f"per-channel quantization{_where(name)} needs the number of output channels (a "
                              f"positive integer), got {channels!r}")
        self.role = role
        self.name = name
        self.symmetric = bool(symmetric)
        self.channels = channels
        self.init = init
        self._signed = signed
        self._initialized = False
        self._calibration_hook: Callable[[torch.Tensor], None] | None = None
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))
        self.register_buffer("signed_flag", torch.tensor(-1 if signed is None else int(bool(signed)),
                                                         dtype=torch.int8))
        self.set_bits(bits)

    # ----------------------------------------------------------------- bit width and code range
    def set_bits(self, bits: int | Sequence[int]) -> None:
        """Change the bit width (one int, or one per output channel for a per-channel weight quantizer)."""
        self._bits = check_bits(bits, self.role, self.name, self.channels)
        self._update_range()
        self._sync_learnable()

    def _sync_learnable(self) -> None:
        """Own parameters require grad when ``learnable`` and not a 32-bit pass-through (an unused parameter
        would stall DistributedDataParallel)."""
        learn = getattr(self, "learnable", False) and not self.is_passthrough
        for param in self.parameters(recurse=False):
            param.requires_grad_(learn)

    def _update_range(self) -> None:
        signed = True if self._signed is None else self._signed
        device = self.initialized.device
        qmin_t = qmax_t = None
        self._qmin: int | None = None
        self._qmax: int | None = None
        if isinstance(self._bits, list):
            lo_hi = [qrange(b, signed) for b in self._bits]
            qmin_t = torch.tensor([lo for lo, _ in lo_hi], dtype=torch.float32, device=device)
            qmax_t = torch.tensor([hi for _, hi in lo_hi], dtype=torch.float32, device=device)
        elif self._bits != FULL_PRECISION:
            self._qmin, self._qmax = qrange(self._bits, signed)
        self.register_buffer("qmin_t", qmin_t, persistent=False)
        self.register_buffer("qmax_t", qmax_t, persistent=False)
        self._mixed = qmin_t is not None
        self._grad_factors: dict[tuple[int, int], float] = {}

    def _bounds(self) -> tuple[Bound, Bound]:
        """(qmin, qmax) for computation: numbers, or per-channel tensors for mixed bit widths."""
        if self._mixed:
            return self.qmin_t, self.qmax_t
        return self._qmin, self._qmax

    @property
    def bits(self) -> int | list[int]:
        """Bit width: an int, or a list with one entry per output channel."""
        return list(self._bits) if isinstance(self._bits, list) else self._bits

    @property
    def is_passthrough(self) -> bool:
        """True at 32 bits: the quantizer returns its input unchanged."""
        return self._bits == FULL_PRECISION

    @property
    def signed(self) -> bool | None:
        """Whether codes are signed; None until the first batch decides it (``signed=None``)."""
        return self._signed

    @property
    def qmin(self) -> int | list[int] | None:
        """Smallest integer code (a list for per-channel bit widths; None at 32 bits)."""
        return [int(v) for v in self.qmin_t.tolist()] if self.qmin_t is not None else self._qmin

    @property
    def qmax(self) -> int | list[int] | None:
        """Largest integer code (a list for per-channel bit widths; None at 32 bits)."""
        return [int(v) for v in self.qmax_t.tolist()] if self.qmax_t is not None else self._qmax

    @property
    def is_initialized(self) -> bool:
        """True once a scale has been set (from data, calibration or a loaded checkpoint)."""
        return self._initialized

    # ----------------------------------------------------------------- scale parametrisation (subclasses)
    @abc.abstractmethod
    def scale_tensor(self) -> torch.Tensor:
        """The scale used in the forward pass, shape ``[channels]`` or ``[1]``."""

    def zero_tensor(self) -> torch.Tensor | None:
        """The zero point used in the forward pass (integer-valued float), or None when it is 0."""
        return None

    @abc.abstractmethod
    def _store(self, lo: torch.Tensor, hi: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> None:
        """Keep a new range and its scale/zero point in this quantizer's parameters or buffers."""

    @abc.abstractmethod
    def _fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        """Quantize-dequantize ``x`` with the current scale (the quantizer is initialised)."""

    @property
    def zero_point(self) -> torch.Tensor:
        """Integer zero point(s), shape ``[channels]`` or ``[1]`` (zeros when symmetric)."""
        zero = self.zero_tensor()
        if zero is None:
            return torch.zeros_like(self.scale_tensor().detach(), dtype=torch.long)
        return zero.detach().round().long()

    # ----------------------------------------------------------------- initialisation
    def _resolve_signed(self, signed: bool) -> None:
        self._signed = bool(signed)
        self.signed_flag.fill_(int(self._signed))
        self._update_range()

    def _mark_initialized(self, flag: bool = True) -> None:
        self._initialized = flag
        self.initialized.fill_(int(flag))

    @torch.no_grad()
    def set_range(self, lo: torch.Tensor | float, hi: torch.Tensor | float) -> None:
        """Set the scale (and zero point) so that the real range ``[lo, hi]`` maps onto the codes; per-channel
        quantizers take one ``lo``/``hi`` per channel. Marks the quantizer initialised."""
        ref = self.initialized.device
        n = self.channels or 1
        lo_t = torch.as_tensor(lo, dtype=torch.float32, device=ref).detach().reshape(-1).expand(n)
        hi_t = torch.as_tensor(hi, dtype=torch.float32, device=ref).detach().reshape(-1).expand(n)
        if self._signed is None:
            self._resolve_signed(bool((lo_t < 0).any()))
        if self.is_passthrough:
            self._mark_initialized()
            return
        qmin, qmax = self._bounds()
        scale, zero = range_to_qparams(lo_t, hi_t, qmin, qmax, self.symmetric)
        self._store(lo_t, hi_t, scale, zero)
        self._mark_initialized()

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set the scale from data ``x`` with this quantizer's ``init`` method (min/max or MSE-optimal)."""
        x2d = rows(x, self.channels is not None)
        if self._signed is None:
            self._resolve_signed(bool(x2d.min() < 0))
        if self.is_passthrough:
            self._mark_initialized()
            return
        lo, hi = minmax_range(x2d)
        if self.init == "mse":
            stride = max(1, math.ceil(x2d.shape[1] / self.init_sample))
            qmin, qmax = self._bounds()
            lo, hi = mse_range(x2d[:, ::stride], qmin, qmax, self.symmetric, grid=self.init_grid, lo=lo, hi=hi)
        self.set_range(lo, hi)

    # ----------------------------------------------------------------- forward and integer codes
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x``; identity at 32 bits.

        Without a scale yet, a weight quantizer initialises from the weight on its first call, an activation
        quantizer from its first training-mode batch (or calibrate()); until then, and for a constant batch
        (which carries no range), it passes its input through, so that tracing or costing a fresh quantized
        model (an eval-mode run on zeros) cannot fix its scales from meaningless data.
        """
        if self.is_passthrough:
            return x
        if self._calibration_hook is not None:
            self._calibration_hook(x)
            return x
        if not initialize_on_first_batch(self, x):
            return x
        return self._fake_quant(x)

    def _check_ready(self) -> None:
        if self.is_passthrough:
            raise ConfigError(f"the 32-bit {self.role} quantizer{_where(self.name)} is a pass-through; it has no "
                              "integer codes")
        if not self._initialized:
            raise ConfigError(f"the {self.role} quantizer{_where(self.name)} has no scale yet; run calibrate() or "
                              "one forward pass first")

    @torch.no_grad()
    def quantize_int(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes (int64, within ``[qmin, qmax]``) of ``x``: exactly those the forward pass dequantizes."""
        self._check_ready()
        y = self._fake_quant(x)
        scale = _broadcast(self.scale_tensor().detach().clamp_min(MIN_SCALE).to(y.dtype), y)
        return torch.round(y / scale).long() + _broadcast(self.zero_point, y)

    @torch.no_grad()
    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        """Real values ``(q - zero_point) * scale`` of integer codes ``q``."""
        self._check_ready()
        scale = self.scale_tensor().detach().clamp_min(MIN_SCALE)
        return (q - _broadcast(self.zero_point, q)).to(scale.dtype) * _broadcast(scale, q)

    # ----------------------------------------------------------------- state dict
    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        own = [prefix + n for n, _ in self.named_parameters(recurse=False)]
        own += [prefix + n for n, b in self._buffers.items()
                if b is not None and n not in self._non_persistent_buffers_set]
        if not any(key in state_dict for key in own):
            self._mark_initialized(False)  # a float checkpoint: re-initialise from the next batch
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        flag = int(self.signed_flag)
        self._signed = None if flag < 0 else bool(flag)
        self._initialized = bool(self.initialized)
        self._update_range()

    def extra_repr(self) -> str:
        sign = "auto" if self._signed is None else ("signed" if self._signed else "unsigned")
        gran = f"per_channel={self.channels}" if self.channels is not None else "per_tensor"
        sym = "symmetric" if self.symmetric else "asymmetric"
        return f"bits={self._bits}, {sign}, {sym}, {gran}, role={self.role}"


#: LSQ step sizes are ``exp(LOG_SCALE_GAIN * log_scale)``: an Adam step of ``lr`` on ``log_scale`` changes the
#: step size by about ``LOG_SCALE_GAIN * lr`` relative (0.5 % at lr 1e-3).
LOG_SCALE_GAIN = 5.0


class LSQQuantizer(Quantizer):
    """Learned Step size Quantization (Esser et al. 2019): the scale is a parameter whose gradient is scaled by
    ``1 / sqrt(N * Qp)`` (N values per scale, Qp the largest positive code). Asymmetric ones also learn their
    zero point (as a float offset, rounded in the forward pass). ``learn_scale=False`` freezes both."""

    def __init__(self, bits: int | Sequence[int] = 8, *, signed: bool | None = True, symmetric: bool = True,
                 channels: int | None = None, init: str = "mse", role: str = "activation", name: str = "",
                 learn_scale: bool = True) -> None:
        super().__init__(bits, signed=signed, symmetric=symmetric, channels=channels, init=init, role=role,
                         name=name)
        n = channels or 1
        self.learnable = learn_scale
        self.log_scale = nn.Parameter(torch.zeros(n))
        if self.symmetric:
            self.register_buffer("offset", torch.zeros(n))
        else:
            self.offset = nn.Parameter(torch.zeros(n))
        self._sync_learnable()

    @property
    def scale(self) -> torch.Tensor:
        """The step size ``exp(log_scale)``."""
        return (self.log_scale * LOG_SCALE_GAIN).exp()

    def scale_tensor(self) -> torch.Tensor:
        """The step size. It is learned in the log domain so that an optimizer step changes it by a relative
        amount: with Adam a raw step size moves by about ``lr`` per step whatever its magnitude, which at
        step sizes of 1e-3 coarsened LeNet-5's activations within a few dozen steps and stalled training; the
        LSQ gradient (``grad_factor``) reaches ``log_scale`` multiplied by the scale (chain rule)."""
        return (self.log_scale * LOG_SCALE_GAIN).exp()

    def zero_tensor(self) -> torch.Tensor | None:
        """Rounded, clamped offset (straight-through), or None when symmetric."""
        if self.symmetric:
            return None
        qmin, qmax = self._bounds()
        return torch.clamp(round_ste(self.offset), qmin, qmax)

    def _store(self, lo: torch.Tensor, hi: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> None:
        self.log_scale.data.copy_(scale.clamp_min(MIN_SCALE).log() / LOG_SCALE_GAIN)
        self.offset.data.copy_(zero)

    def grad_factor(self, x: torch.Tensor) -> float | torch.Tensor:
        """LSQ's gradient scale ``1 / sqrt(N * Qp)``: N = values per scale (per sample for activations)."""
        key = (x.numel(), x.shape[0] if x.dim() else 1)
        factor = self._grad_factors.get(key)
        if factor is None:
            per_scale = key[0] if (self.channels is None and self.role == "weight") else key[0] // max(key[1], 1)
            if self._mixed:  # a tensor on the quantizer's device: not cached, so it follows .to()
                return torch.rsqrt(self.qmax_t * float(per_scale))
            factor = 1.0 / math.sqrt(per_scale * max(self._qmax, 1))
            self._grad_factors[key] = factor
        return factor

    def _fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        qmin, qmax = self._bounds()
        return fake_quant(x, self.scale_tensor(), self.zero_tensor(), qmin, qmax, self.grad_factor(x))


class PACTQuantizer(Quantizer):
    """PACT (Choi et al. 2018) for activations: clip to ``[0, alpha]`` (``[-alpha, alpha]`` when signed, codes
    ``[-qmax, qmax]``) with a learnable ``alpha`` and quantize uniformly with scale ``alpha / qmax``; ``alpha``'s
    gradient is ``sum(dy[x > alpha])`` (minus ``sum(dy[x < -alpha])`` when signed), ``x``'s the straight-through
    one inside the clipping range. Per tensor and symmetric by construction."""

    def __init__(self, bits: int = 8, *, signed: bool | None = False, symmetric: bool = True,
                 channels: int | None = None, init: str = "mse", role: str = "activation", name: str = "",
                 learn_alpha: bool = True) -> None:
        if channels is not None:
            raise ConfigError(f"PACT{_where(name)} clips activations per tensor; per-channel is not available")
        if not symmetric:
            raise ConfigError(f"PACT{_where(name)} clips to [0, alpha] or [-alpha, alpha]; asymmetric is not "
                              "available (use method 'lsq' or 'minmax')")
        super().__init__(bits, signed=signed, symmetric=True, channels=None, init=init, role=role, name=name)
        self.learnable = learn_alpha
        self.alpha = nn.Parameter(torch.ones(1))
        self._sync_learnable()

    def _update_range(self) -> None:
        super()._update_range()
        if self._qmax is not None and self._signed:
            self._qmin = -self._qmax  # [-alpha, alpha] exactly

    def scale_tensor(self) -> torch.Tensor:
        """``alpha / qmax``."""
        return self.alpha.abs() / float(self._qmax)

    def _store(self, lo: torch.Tensor, hi: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> None:
        self.alpha.data.copy_(scale * float(self._qmax))

    def _fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quant(x, self.scale_tensor(), None, self._qmin, self._qmax, clip_only=True)


class MinMaxQuantizer(Quantizer):
    """No learnable parameters: the range is a running min/max (activations: over every training batch seen;
    weights: the current tensor) observed in training mode and frozen in eval mode; calibrate() sets it for PTQ."""

    def __init__(self, bits: int | Sequence[int] = 8, *, signed: bool | None = True, symmetric: bool = True,
                 channels: int | None = None, init: str = "minmax", role: str = "activation",
                 name: str = "") -> None:
        super().__init__(bits, signed=signed, symmetric=symmetric, channels=channels, init=init, role=role,
                         name=name)
        n = channels or 1
        self.register_buffer("min_val", torch.zeros(n))
        self.register_buffer("max_val", torch.zeros(n))
        self.register_buffer("scale", torch.ones(n))
        self.register_buffer("offset", torch.zeros(n))

    def scale_tensor(self) -> torch.Tensor:
        """The scale derived from the observed range."""
        return self.scale

    def zero_tensor(self) -> torch.Tensor | None:
        """The zero point derived from the observed range, or None when symmetric."""
        return None if self.symmetric else self.offset

    def _store(self, lo: torch.Tensor, hi: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> None:
        self.min_val.copy_(lo)
        self.max_val.copy_(hi)
        self.scale.copy_(scale)
        self.offset.copy_(zero)

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Update the range from ``x``: running min/max for activations, the current min/max for weights."""
        lo, hi = minmax_range(rows(x, self.channels is not None))
        if self.role == "activation" and self._initialized:
            lo = torch.minimum(lo, self.min_val)
            hi = torch.maximum(hi, self.max_val)
        if self._signed is None or not self._initialized:
            self.set_range(lo, hi)
            return
        qmin, qmax = self._bounds()
        self._store(lo, hi, *range_to_qparams(lo, hi, qmin, qmax, self.symmetric))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Observe ``x`` in training mode, then fake-quantize it with the observed range."""
        if self.training and not self.is_passthrough and self._calibration_hook is None:
            self.observe(x)
        return super().forward(x)

    def _fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        qmin, qmax = self._bounds()
        return fake_quant(x, self.scale, self.zero_tensor(), qmin, qmax)


def make_quantizer(method: str, bits: int | Sequence[int], *, role: str, signed: bool | None = True,
                   symmetric: bool = True, channels: int | None = None, init: str = "mse", name: str = "",
                   learnable: bool = True) -> Quantizer:
    """The quantizer for ``method``: "lsq" (LSQQuantizer), "pact" (PACT for activations, LSQ for weights, as
    PACT defines only activation clipping), "minmax" (MinMaxQuantizer). ``learnable=False`` freezes the scale."""
    if method not in METHODS:
        raise ConfigError(f"unknown quantization method {method!r}{_where(name)}; accepted: {', '.join(METHODS)}")
    common: dict[str, Any] = dict(signed=signed, symmetric=symmetric, channels=channels, init=init, role=role,
                                  name=name)
    if method == "minmax":
        return MinMaxQuantizer(bits, **common)
    if method == "pact" and role == "activation":
        return PACTQuantizer(bits, learn_alpha=learnable, **common)
    return LSQQuantizer(bits, learn_scale=learnable, **common)
