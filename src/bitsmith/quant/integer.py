"""Integer-exact reference: run a quantized model with every conv/linear computed on integer codes.

For each QuantConv2d/QuantLinear (both quantizers below 32 bits) the layer computes, like integer hardware::

    acc[c] = sum_k (q_x[k] - z_x) * (q_w[c, k] - z_w[c]) + b_int[c]      (int64)
    out[c] = acc[c] * s_w[c] * s_a                                       (rescaled in float64, cast back)

with ``b_int = round(b / (s_w * s_a))`` clamped to int32: the bias the fake-quant forward uses in eval mode.
The accumulation is true int64 (torch's int64 conv2d / matmul on CPU); where a device has no int64
convolution, it runs in float64 on the same integer values, which is exact while every partial sum stays below
2^53 (checked: ``K * max|q_x - z_x| * max|q_w - z_w| + max|b_int| < 2^53``). Everything between layers (ReLU,
pooling, residual adds, unfolded BatchNorm, QuantAct) runs in floating point in the input's dtype.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bitsmith.errors import ConfigError
from bitsmith.quant.layers import QuantConv2d, QuantLinear, _QuantLayer
from bitsmith.quant.quantizers import Quantizer
from bitsmith.quant.ste import _broadcast

_FLOAT64_EXACT = 2**53


def _accumulate(op: str, xi: torch.Tensor, wi: torch.Tensor, bound: int, **kwargs: object) -> torch.Tensor:
    """``F.conv2d``/``F.linear`` of int64 codes with int64 accumulation (float64 where int64 is unsupported)."""
    fn = F.conv2d if op == "conv" else F.linear
    try:
        return fn(xi, wi, **kwargs)
    except (RuntimeError, NotImplementedError):
        if bound >= _FLOAT64_EXACT:
            raise ConfigError(f"integer_forward: partial sums up to {bound} exceed 2^53, so float64 cannot "
                              f"emulate the int64 accumulation on {xi.device}") from None
        return fn(xi.double(), wi.double(), **kwargs).round().long()


class _IntegerLayer(nn.Module):
    """Wraps a quantized conv/linear and computes its output from integer codes (see the module docstring)."""

    def __init__(self, layer: _QuantLayer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        xi = layer.act_quant.quantize_int(x) - _broadcast(layer.act_quant.zero_point, x)
        wi = layer.weight_quant.quantize_int(layer.weight) - _broadcast(layer.weight_quant.zero_point, layer.weight)
        if layer.keep is not None:
            wi = wi * _broadcast(layer.keep.long(), wi)
        bias = layer.bias_codes()
        fan_in = wi[0].numel()
        bound = fan_in * int(xi.abs().max()) * int(wi.abs().max()) + (int(bias.abs().max()) if bias is not None
                                                                       else 0)
        if isinstance(layer, QuantConv2d):
            if layer.padding_mode != "zeros":
                xi = F.pad(xi.double(), layer._reversed_padding_repeated_twice, mode=layer.padding_mode).long()
                padding: object = 0
            else:
                padding = layer.padding
            acc = _accumulate("conv", xi, wi, bound, stride=layer.stride, padding=padding,
                              dilation=layer.dilation, groups=layer.groups)
        else:
            acc = _accumulate("linear", xi, wi, bound)
        scale = layer.bias_scale().double()
        if bias is not None:
            acc = acc + (bias.view(-1, 1, 1) if acc.dim() == 4 else bias)
        if acc.dim() == 4:
            scale = scale.view(-1, 1, 1)
        return (acc.double() * scale).to(x.dtype)


def _check_initialized(qmodel: nn.Module) -> None:
    for module in qmodel.modules():
        if isinstance(module, Quantizer) and not module.is_passthrough and not module.is_initialized:
            where = module.name or type(module).__name__
            raise ConfigError(f"integer_forward: the {module.role} quantizer of '{where}' has no scale yet; run "
                              "calibrate() or one forward pass first")


def integer_forward(qmodel: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The output of ``qmodel`` (in eval mode, without gradients) with every quantized conv/linear computed on
    integer weight and activation codes with int64 accumulation; ``qmodel`` itself is not modified.

    Layers with a 32-bit weight or activation quantizer run their fake-quant float forward. The float parts run
    in ``x``'s dtype: pass float64 to compare with ``copy.deepcopy(qmodel).double()(x.double())`` to ~1e-12.
    """
    if not any(isinstance(m, _QuantLayer) for m in qmodel.modules()):
        raise ConfigError("integer_forward: the model has no quantized conv/linear layer; run bitsmith.quantize "
                          "first")
    _check_initialized(qmodel)
    model = copy.deepcopy(qmodel).to(dtype=x.dtype)
    model.eval()
    for name, module in list(model.named_modules()):
        if (isinstance(module, (QuantConv2d, QuantLinear)) and not module.weight_quant.is_passthrough
                and not module.act_quant.is_passthrough):
            if not name:
                model = _IntegerLayer(module)
                break
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, _IntegerLayer(module))
    with torch.no_grad():
        return model(x)
