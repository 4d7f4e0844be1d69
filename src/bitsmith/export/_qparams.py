"""What an exporter needs from a quantized model, read once for ONNX and the packed format alike: the affine
parameters of a quantizer (scale, zero point, code range, bit widths) and a layer's integer weight codes.

Any quantizer with ``scale_tensor()`` and ``bits`` works (the core LSQ / PACT / MinMax quantizers, and the methods'
own, e.g. CGMQ's gated one); the codes are read from the fake-quantized weight the layer computes with, so they are
exactly the integers its forward pass dequantizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bitsmith.errors import ConfigError, UnsupportedLayerError
from bitsmith.quant.layers import _QuantLayer
from bitsmith.quant.quantizers import FULL_PRECISION, qrange
from bitsmith.quant.ste import MIN_SCALE, _broadcast


@dataclass
class QParams:
    """Affine quantization ``value = (code - zero) * scale`` with codes in ``[qmin, qmax]``.

    Tensors have one entry (per tensor) or one per output channel (axis 0); ``bits`` is an int or one per channel.
    """

    scale: torch.Tensor
    zero: torch.Tensor
    qmin: torch.Tensor
    qmax: torch.Tensor
    bits: int | list[int]
    signed: bool


def is_quantized(model: nn.Module) -> bool:
    """True when ``model`` holds at least one quantized conv/linear layer."""
    return any(isinstance(m, _QuantLayer) for m in model.modules())


def _as_vector(value: object, n: int) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.long).reshape(-1)
    return t.expand(n).clone() if t.numel() == 1 else t


def _is_passthrough(quantizer: nn.Module) -> bool:
    return bool(getattr(quantizer, "is_passthrough", False))


@torch.no_grad()
def quantizer_params(quantizer: nn.Module, where: str) -> QParams | None:
    """The affine parameters of ``quantizer`` (None for a 32-bit pass-through); ``where`` names it in errors."""
    if _is_passthrough(quantizer):
        return None
    if not hasattr(quantizer, "scale_tensor") or not hasattr(quantizer, "bits"):
        raise UnsupportedLayerError(f"cannot export the quantizer of '{where}' ({type(quantizer).__name__}): it has "
                                    "no scale_tensor() and bits")
    if not getattr(quantizer, "is_initialized", True):
        raise ConfigError(f"the {getattr(quantizer, 'role', '')} quantizer of '{where}' has no scale yet; calibrate "
                          "or train the model before exporting it")
    scale = quantizer.scale_tensor().detach().float().clamp_min(MIN_SCALE).reshape(-1).clone()
    bits = quantizer.bits
    signed = quantizer.signed is not False
    zero_point = getattr(quantizer, "zero_point", None)
    zero = torch.zeros_like(scale, dtype=torch.long) if zero_point is None else zero_point.detach().long().reshape(-1)
    n = scale.numel()
    if getattr(quantizer, "qmin", None) is not None:
        qmin, qmax = _as_vector(quantizer.qmin, n), _as_vector(quantizer.qmax, n)
    else:
        widths = bits if isinstance(bits, list) else [bits] * n
        lo_hi = [qrange(b, signed) for b in widths]
        qmin = torch.tensor([lo for lo, _ in lo_hi], dtype=torch.long)
        qmax = torch.tensor([hi for _, hi in lo_hi], dtype=torch.long)
    if FULL_PRECISION in (bits if isinstance(bits, list) else [bits]):
        raise UnsupportedLayerError(f"the quantizer of '{where}' mixes 32-bit (float) and integer channels; "
                                    "export needs one or the other")
    return QParams(scale=scale, zero=_as_vector(zero, n), qmin=qmin, qmax=qmax, bits=bits, signed=signed)


@torch.no_grad()
def weight_codes(layer: _QuantLayer, where: str, masked: bool = True) -> tuple[torch.Tensor, QParams] | None:
    """Integer weight codes (int64) and their parameters, or None when the layer's weight is a 32-bit pass-through.
    With ``masked`` a pruned filter's codes are its zero point (value 0), as the layer computes."""
    params = quantizer_params(layer.weight_quant, where)
    if params is None:
        return None
    fake = layer.weight_quant(layer.weight).detach().float()
    codes = torch.round(fake / _broadcast(params.scale, fake)).long() + _broadcast(params.zero, fake)
    low, high = _broadcast(params.qmin, codes), _broadcast(params.qmax, codes)
    if bool((codes < low).any() or (codes > high).any()):
        raise ConfigError(f"the weight codes of '{where}' fall outside their range [{int(params.qmin.min())}, "
                          f"{int(params.qmax.max())}]: its quantizer is not a uniform affine one")
    if masked and layer.keep is not None:
        keep = _broadcast(layer.keep.long(), codes)
        codes = codes * keep + _broadcast(params.zero, codes) * (1 - keep)
    return codes, params


def dequantize(codes: torch.Tensor, params: QParams) -> torch.Tensor:
    """``(codes - zero) * scale`` in float32, computed as the fake quantizers compute their output."""
    return (codes - _broadcast(params.zero, codes)).float() * _broadcast(params.scale, codes)
