"""The straight-through estimator (STE) of bitsmith, defined once: every quantizer and every method uses these.

Forward (the arithmetic of ONNX QuantizeLinear/DequantizeLinear: division, round half to even)::

    c = clamp(round(x / s) + z, qmin, qmax)        y = (c - z) * s

Backward, as in the LSQ and PACT papers (which clip before rounding; the codes are the same):
``dy/dx = 1`` where ``qmin <= x / s + z <= qmax`` ("inside") and 0 where it is clipped; with ``q = c - z`` the
scale gets

* LSQ (Esser et al. 2019): ``dy/ds = q - x / s`` inside and ``q`` where clipped,
* PACT (Choi et al. 2018, ``clip_only=True``): ``q`` where clipped and 0 inside (with ``s = alpha / qmax``
  this is ``dy/d alpha = 1`` above the clipping level),

times ``grad_factor``; a learnable zero point gets ``-s`` where clipped and 0 inside (LSQ+).

All of it runs as a few vectorised elementwise ops inside one autograd Function, which on CPU measured faster
than torch's fused ``_fake_quantize_learnable_*`` kernels (see docs/QUANTIZATION.md).
"""

from __future__ import annotations

from typing import Any

import torch

#: Smallest scale a quantizer uses; keeps ``x / s`` finite for an all-zero tensor or a collapsed learned scale.
MIN_SCALE = 1e-8

Bound = float | int | torch.Tensor


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` (half to even) in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


def _broadcast(t: torch.Tensor | Any, x: torch.Tensor) -> Any:
    """A per-channel vector (1-D, channel axis 0) viewed to broadcast against ``x``; numbers, 1-element and
    already multi-dimensional tensors are returned unchanged."""
    if isinstance(t, torch.Tensor) and t.dim() == 1 and t.shape[0] > 1:
        return t.view(-1, *([1] * (x.dim() - 1)))
    return t


def _codes(x: torch.Tensor, s: torch.Tensor, zero_point: torch.Tensor | None, qmin: Bound,
           qmax: Bound) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(v, q, inside)``: ``v = x / s``, the codes minus the zero point ``q = round(clamp(v, qmin - z, qmax -
    z))`` (as floats) and a float mask, 1.0 where ``v`` is within those bounds (float ops are 3-4x faster than
    bool ones on CPU). ``s`` is positive and already broadcast against ``x``. The zero point only shifts the
    bounds, so the codes are exactly ONNX's ``clamp(round(x / s) + z, qmin, qmax)``."""
    v = torch.div(x, s)
    lo, hi = _broadcast(qmin, x), _broadcast(qmax, x)
    if zero_point is not None:
        z = _broadcast(zero_point, x)
        lo, hi = lo - z, hi - z
    q = torch.clamp(v, lo, hi)
    inside = torch.empty_like(q)
    torch.eq(v, q, out=inside)
    return v, q.round_(), inside


def quant_dequant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, qmin: Bound,
                  qmax: Bound) -> tuple[torch.Tensor, torch.Tensor]:
    """Fake-quantize ``x`` without autograd; returns ``(y, inside)`` (see :func:`fake_quant`).

    ``scale``/``zero_point``/``qmin``/``qmax`` are numbers, 1-element tensors, per-channel vectors along axis 0
    of ``x``, or tensors already shaped to broadcast against ``x``.
    """
    s = _broadcast(scale.clamp_min(MIN_SCALE), x)
    _, q, inside = _codes(x, s, zero_point, qmin, qmax)
    return q.mul_(s), inside


def _reduce(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum ``t`` down to ``shape``: one element (per tensor) or one per channel along axis 0."""
    if shape.numel() == 1:
        return t.sum().reshape(shape)
    return t.reshape(t.shape[0], -1).sum(1).reshape(shape)


def _dot(a: torch.Tensor, b: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``sum(a * b)`` reduced to ``shape``: one element (per tensor) or one per channel along axis 0."""
    if shape.numel() == 1:
        return torch.dot(a.reshape(-1), b.reshape(-1)).reshape(shape)
    return torch.linalg.vecdot(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1), dim=1).reshape(shape)


class _FakeQuantSTE(torch.autograd.Function):
    """Fake quantization with the straight-through gradient for x and the LSQ/PACT gradient for the scale.

    For the scale it saves ``dy/ds`` per element (see the module docstring), so that the backward pass is one
    reduction ``grad_factor * sum(dy * dy/ds)``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, qmin: Bound,
                qmax: Bound, grad_factor: float | torch.Tensor, clip_only: bool) -> torch.Tensor:
        s_eff = scale.clamp_min(MIN_SCALE)
        s = _broadcast(s_eff, x)
        v, q, inside = _codes(x, s, zero_point, qmin, qmax)
        saved = [inside]
        if ctx.needs_input_grad[1]:
            # LSQ: q - v inside, q clipped  = q - v * inside;   PACT: q clipped, 0 inside = q - q * inside
            saved.append(torch.addcmul(q, q if clip_only else v, inside, value=-1.0))
        if ctx.needs_input_grad[2]:
            saved.append(s_eff)
        ctx.save_for_backward(*saved)
        ctx.grad_factor = grad_factor
        ctx.shape = scale.shape
        return q.mul_(s)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        inside, *rest = ctx.saved_tensors
        dx = dy * inside
        dscale = dzero = None
        if ctx.needs_input_grad[1]:
            dscale = _dot(dy, rest.pop(0), ctx.shape) * ctx.grad_factor
        if ctx.needs_input_grad[2]:
            dzero = _reduce(dy - dx, ctx.shape) * (-rest.pop(0) * ctx.grad_factor)
        return dx, dscale, dzero, None, None, None, None


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, qmin: Bound, qmax: Bound,
               grad_factor: float | torch.Tensor = 1.0, clip_only: bool = False) -> torch.Tensor:
    """Quantize-dequantize ``x`` with straight-through gradients (see the module docstring).

    ``scale`` and ``zero_point`` (integer-valued floats, or None for 0) are 1-element tensors (per tensor) or
    vectors over axis 0 of ``x`` (per channel); ``qmin``/``qmax`` are numbers or such vectors. Gradients reach
    ``scale`` and ``zero_point`` when they require grad, scaled by ``grad_factor`` (LSQ's ``1/sqrt(N*Qp)``);
    ``clip_only=True`` gives the scale PACT's gradient (clipped elements only) instead of LSQ's. A bfloat16/float16
    input (autocast) is quantized in float32 and gives a float32 result.
    """
    if x.dtype in (torch.bfloat16, torch.float16):
        x = x.float()  # under autocast: codes from a float32 input, so that 8-bit codes stay exact
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or scale.requires_grad or (zero_point is not None and zero_point.requires_grad)
    )
    if not needs_grad:
        return quant_dequant(x, scale, zero_point, qmin, qmax)[0]
    return _FakeQuantSTE.apply(x, scale, zero_point, qmin, qmax, grad_factor, clip_only)
