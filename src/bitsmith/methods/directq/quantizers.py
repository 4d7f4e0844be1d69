"""DirectQ's two quantizers (formulation: docs/METHODS.md, section DirectQ).

* :class:`DirectWeightQuantizer` stores a layer's weight as integer codes ``c`` and learnable levels
  ``s * k`` (one step size ``s`` per output channel or per layer). The forward pass computes with ``s * c``
  exactly; the gradient reaches the weight directly (identity) and each level through the codes that use it.
  After every optimizer step the proposed weight is projected back onto the level grid (by default to the
  nearest level, with the part that rounding cut off carried to the next step), so the weight is always a
  valid low-bit weight plus its levels, never a latent float weight; the carried remainder, under half a
  level per weight, is quantizer state beside it, as an optimizer's moments are.
* :class:`ChannelAwareActQuantizer` keeps one step size per tensor (what an integer conv accumulator allows)
  but chooses and trains it to minimise the variance-normalised quantization error of the majority of
  channels, so that a few high-variance channels no longer set the range for all.

Both subclass the core :class:`~bitsmith.quant.LSQQuantizer` and keep its state-dict entries, so a trained
model works with the cost model and the integer reference as is, and :func:`to_core` turns it into plain core
layers.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bitsmith.errors import ConfigError
from bitsmith.quant.quantizers import LSQQuantizer
from bitsmith.quant.ste import MIN_SCALE, _broadcast, _dot, fake_quant, quant_dequant


class _AddGrad(torch.autograd.Function):
    """Return ``y`` unchanged; in the backward pass ``s`` receives ``grad`` on top of what flows through ``y``:
    a gradient computed in the forward pass (an auxiliary objective's) joins the task loss's without any
    training-loop hook."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, s: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grad)
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        (grad,) = ctx.saved_tensors
        return dy, grad, None


#: What scales the activation objective's step-size gradient: "lsq", the gradient scale LSQ gives the task
#: loss's (so ``act_loss_weight`` weighs two like gradients), or "none" (the objective's own gradient, the rule
#: before 2026-12-07, 10 to 10^5 times the task loss's at initialisation).
ACT_GRAD_SCALES = ("lsq", "none")

#: How a proposed weight step becomes a move between levels (see DirectWeightQuantizer.project).
ROUNDINGS = ("residual", "stochastic", "greedy")


class _OnGrid(torch.autograd.Function):
    """``codes * s`` in the forward pass; the weight gets the output gradient unchanged (the direct update) and
    each step size the sum of ``dy * code`` over its group, times LSQ's gradient factor."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, s: torch.Tensor, codes: torch.Tensor,
                factor: float | torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(codes)
        ctx.factor, ctx.shape = factor, s.shape
        return codes * _broadcast(s.detach(), codes)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (codes,) = ctx.saved_tensors
        ds = _dot(dy, codes, ctx.shape) * ctx.factor if ctx.needs_input_grad[1] else None
        return dy, ds, None, None


def _code_dtype(bits: int | Sequence[int]) -> torch.dtype:
    top = max(bits) if isinstance(bits, (list, tuple)) else bits
    return torch.int8 if top <= 8 else torch.int32


class DirectWeightQuantizer(LSQQuantizer):
    """Weight as integer codes plus learnable uniform levels, updated directly (see the module docstring).

    ``shape`` is the weight's shape (the codes buffer has it, so a checkpoint loads without a first batch).
    ``step_gain`` multiplies the proposed step before it is rounded onto the grid; ``rounding`` is one of
    :data:`ROUNDINGS` (see :meth:`project`). ``seed`` fixes the stochastic rounding: the draws depend only on
    (seed, layer name, projection count), so resumed and data-parallel runs round identically.
    """

    def __init__(self, bits: int | Sequence[int], *, shape: Sequence[int], channels: int | None = None,
                 init: str = "mse", name: str = "", step_gain: float = 1.0, seed: int = 0,
                 rounding: str = "residual", learn_scale: bool = True) -> None:
        super().__init__(bits, signed=True, symmetric=True, channels=channels, init=init, role="weight",
                         name=name, learn_scale=learn_scale)
        if not step_gain > 0:
            raise ConfigError(f"DirectQ step_gain for '{name}' must be positive, got {step_gain!r}")
        if rounding not in ROUNDINGS:
            raise ConfigError(f"DirectQ rounding {rounding!r} is not known; accepted: {', '.join(ROUNDINGS)}")
        self.step_gain = float(step_gain)
        self.rounding = rounding
        self.seed = int(seed)
        self.register_buffer("codes", torch.zeros(tuple(shape), dtype=_code_dtype(bits)))
        self.register_buffer("anchor", torch.ones(channels or 1))
        self.register_buffer("projections", torch.zeros((), dtype=torch.int64))
        if rounding == "residual":
            self.register_buffer("residual", torch.zeros(tuple(shape)))
        self._seen: tuple[int, int] | None = None

    def levels(self) -> torch.Tensor:
        """The quantization levels ``s * k`` for every code ``k``: shape ``[groups, 2^b]`` (uniform bit width)."""
        if isinstance(self._bits, list):
            raise ConfigError(f"levels() of '{self.name}': per-channel bit widths differ; read scale_tensor()")
        k = torch.arange(self._qmin, self._qmax + 1, dtype=torch.float32, device=self.anchor.device)
        return self.scale_tensor().detach().reshape(-1, 1) * k

    def _grid(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any, Any]:
        s = self.scale_tensor().detach().clamp_min(MIN_SCALE).to(w.dtype)
        qmin, qmax = self._bounds()
        return s, _broadcast(s, w), _broadcast(qmin, w), _broadcast(qmax, w)

    @torch.no_grad()
    def _write_back(self, w: torch.Tensor, codes: torch.Tensor, s: torch.Tensor, s_b: torch.Tensor) -> None:
        self.codes.copy_(codes.to(self.codes.dtype))
        self.anchor.copy_(s.reshape(self.anchor.shape))
        if isinstance(w, nn.Parameter):
            w.copy_(codes * s_b)
        self._seen = (id(w), w._version)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Step size from the weight (MSE-optimal clipping), then codes by nearest rounding (with "residual"
        rounding, what rounding cut off is the first remainder); a weight parameter is overwritten with its grid
        value."""
        super().initialize(x)
        if self.is_passthrough:
            return
        if tuple(self.codes.shape) != tuple(x.shape):
            raise ConfigError(f"DirectQ weight of '{self.name}' has shape {tuple(x.shape)}, its codes "
                              f"{tuple(self.codes.shape)}")
        s, s_b, lo, hi = self._grid(x)
        position = x.detach() / s_b
        codes = torch.clamp(torch.round(position), lo, hi)
        if self.rounding == "residual":  # where the weight sat inside its level, so small steps can tip it over
            self.residual.copy_((position - codes).clamp(-0.5, 0.5))
        self._write_back(x, codes, s, s_b)

    def _seed(self) -> int:
        return (self.seed * 1_000_003 + zlib.crc32(self.name.encode()) * 7_919 + int(self.projections)) % (2**62)

    @torch.no_grad()
    def project(self, w: torch.Tensor) -> None:
        """Move the codes by the step the weight took since the last projection, in units of the current step
        size, rounded as ``self.rounding`` says; a level's own move carries its weights along.

        "residual" rounds to the nearest code and keeps what rounding cut off (under half a level, in units of
        the weight's own level) for the next projection, so steps far below one level add up instead of being
        lost (greedy) or turned into noise (stochastic); the weight itself stays on the grid."""
        s, s_b, lo, hi = self._grid(w)
        codes = self.codes.to(w.dtype)
        step = (w.detach() - codes * _broadcast(self.anchor.to(w.dtype), w)) / s_b
        if not bool(step.any()):  # nothing moved (a reload, an eval pass): no draw, so resumed runs match
            self._write_back(w, codes, s, s_b)
            return
        self.projections += 1
        step = step * self.step_gain
        if self.rounding == "greedy":
            whole = torch.trunc(step)
            frac = (step - whole).reshape(-1)
            moves = whole.reshape(-1).clone()
            k = min(int(torch.round(frac.abs().sum())), frac.numel())
            if k:
                index = frac.abs().topk(k).indices
                moves[index] += torch.sign(frac[index])
            new = codes + moves.view_as(codes)
        elif self.rounding == "residual":
            target = codes + self.residual.to(w.dtype) + step
            new = torch.clamp(torch.round(target), lo, hi)
            self.residual.copy_((target - new).clamp(-0.5, 0.5))
        else:
            gen = torch.Generator(device=w.device)
            gen.manual_seed(self._seed())
            noise = torch.rand(step.shape, generator=gen, device=w.device, dtype=w.dtype)
            new = torch.floor(codes + step + noise)
        self._write_back(w, torch.clamp(new, lo, hi), s, s_b)

    def _fake_quant(self, w: torch.Tensor) -> torch.Tensor:
        if self._seen != (id(w), w._version):
            self.project(w)
        s = self.scale_tensor()
        codes = self.codes.to(w.dtype)
        if torch.is_grad_enabled() and (w.requires_grad or s.requires_grad):
            return _OnGrid.apply(w, s, codes, self.grad_factor(w))
        return codes * _broadcast(s, codes)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._seen = None


class ChannelAwareActQuantizer(LSQQuantizer):
    """One activation step size per tensor, fitted to the majority of channels.

    Objective ``J(s)``: each channel's quantization MSE divided by that channel's variance, averaged over the
    channels after dropping the worst ``trim`` fraction. The step size starts at the minimiser of ``J`` on the
    first batch (a grid search over clipping levels) and is then learned from the task loss (LSQ) plus
    ``loss_weight * J`` on the first ``sample`` examples of each training batch, the gradient of ``J`` scaled
    as LSQ scales the task loss's (``grad_scale="lsq"``) or not (``"none"``).
    """

    def __init__(self, bits: int = 4, *, signed: bool | None = True, init: str = "mse", name: str = "",
                 loss_weight: float = 0.1, trim: float = 0.25, sample: int = 8, grid: int = 64,
                 grad_scale: str = "lsq", learn_scale: bool = True) -> None:
        super().__init__(bits, signed=signed, symmetric=True, channels=None, init=init, role="activation",
                         name=name, learn_scale=learn_scale)
        if not 0.0 <= trim < 1.0:
            raise ConfigError(f"DirectQ activation trim for '{name}' must be in [0, 1), got {trim!r}")
        if loss_weight < 0 or sample < 1 or grid < 2:
            raise ConfigError(f"DirectQ activation options for '{name}': loss_weight >= 0, sample >= 1 and "
                              f"grid >= 2 are accepted, got {loss_weight!r}, {sample!r}, {grid!r}")
        if grad_scale not in ACT_GRAD_SCALES:
            raise ConfigError(f"DirectQ activation grad_scale {grad_scale!r} for '{name}' is not known; accepted: "
                              f"{', '.join(ACT_GRAD_SCALES)}")
        self.loss_weight, self.trim, self.sample, self.grid = float(loss_weight), float(trim), int(sample), int(grid)
        self.grad_scale = grad_scale

    @staticmethod
    def _by_channel(x: torch.Tensor) -> torch.Tensor:
        """``x`` as ``[channels, values]``: axis 1 of an ``[N, C, ...]`` tensor (every feature of ``[N, F]``)."""
        if x.dim() < 2:
            return x.reshape(1, -1)
        return x.transpose(0, 1).reshape(x.shape[1], -1)

    @staticmethod
    def _normalizer(var: torch.Tensor) -> torch.Tensor:
        """Per-channel variances, floored so that (near-)constant channels cannot dominate."""
        return var + 1e-6 * var.mean(dim=-1, keepdim=True) + 1e-12

    def _majority(self, norm_err: torch.Tensor) -> torch.Tensor:
        """Indices (last axis) of the channels the objective keeps: all but the worst ``trim`` fraction."""
        keep = max(1, math.ceil((1.0 - self.trim) * norm_err.shape[-1]))
        return norm_err.topk(keep, dim=-1, largest=False).indices

    def _objective(self, err: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """Trimmed mean over the last axis (channels) of the variance-normalised errors."""
        norm = err / self._normalizer(var)
        return norm.gather(-1, self._majority(norm)).mean(dim=-1)

    def channel_error(self, x: torch.Tensor) -> torch.Tensor:
        """``J`` at the current step size for activations ``x``."""
        return self._objective_and_grad(x)[0]

    @torch.no_grad()
    def _objective_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``J`` and ``dJ/ds`` in closed form, with the straight-through derivative of the quantizer (LSQ's:
        ``dy/ds = q - x/s`` inside the range, ``q`` where clipped)."""
        xc = self._by_channel(x.detach())
        s = self.scale_tensor().detach().clamp_min(MIN_SCALE)
        qmin, qmax = self._bounds()
        y, inside = quant_dequant(xc, s, None, qmin, qmax)
        diff = y - xc
        dyds = torch.addcmul(y / s, xc / s, inside, value=-1.0)
        norm = self._normalizer(xc.var(dim=1, unbiased=False))
        err = diff.square().mean(dim=1) / norm
        derr = 2.0 * (diff * dyds).mean(dim=1) / norm
        index = self._majority(err)
        return err[index].mean(), derr[index].mean().reshape(s.shape)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Resolve signedness, then set the clipping level ``r * max|x|`` whose step size minimises ``J``."""
        if self._signed is None:
            self._resolve_signed(bool(x.detach().min() < 0))
        if self.is_passthrough:
            self._mark_initialized()
            return
        xc = self._by_channel(x.detach()[: max(self.sample, 32)].float())
        top = float(xc.abs().max()) if self._signed else float(xc.clamp_min(0).max())
        if top <= 0:
            return
        qmin, qmax = self._bounds()
        var = xc.var(dim=1, unbiased=False)
        ratios = torch.arange(self.grid, 0, -1, dtype=xc.dtype) / self.grid
        best, best_ratio = float("inf"), 1.0
        for r in ratios.tolist():
            scale = torch.tensor([max(r * top / qmax, MIN_SCALE)], dtype=xc.dtype)
            y, _ = quant_dequant(xc, scale, None, qmin, qmax)
            j = float(self._objective((y - xc).square().mean(dim=1), var))
            if j < best:
                best, best_ratio = j, r
        hi = best_ratio * top
        self.set_range(-hi if self._signed else 0.0, hi)

    def _fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.loss_weight > 0 and torch.is_grad_enabled() and self.log_scale.requires_grad):
            return super()._fake_quant(x)
        s = self.scale_tensor()
        qmin, qmax = self._bounds()
        factor = self.grad_factor(x)
        y = fake_quant(x, s, None, qmin, qmax, factor)
        _, grad = self._objective_and_grad(x[: self.sample])
        weight = self.loss_weight * (factor if self.grad_scale == "lsq" else 1.0)
        return _AddGrad.apply(y, s, weight * grad)
