"""Quantized layers: QuantConv2d and QuantLinear (weight + input-activation quantizer), QuantAct elsewhere.

They keep the float layers' ``weight``/``bias`` names, so a float state dict loads into them unchanged; the
quantizers' own entries live under ``weight_quant.`` and ``act_quant.`` and are initialised from data when a
float checkpoint lacks them. In eval mode the bias is quantized to int32 at scale ``s_w * s_a``, exactly what
integer hardware adds to its accumulator (see :func:`bitsmith.quant.integer_forward`); in training mode it
stays float (its rounding error, at most ``s_w * s_a / 2``, is far below the weight and activation noise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bitsmith.errors import ConfigError
from bitsmith.quant.quantizers import Quantizer, make_quantizer
from bitsmith.quant.ste import _broadcast

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class _QuantLayer:
    """Shared behaviour of QuantConv2d and QuantLinear (a mixin placed before the torch layer)."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    weight_quant: Quantizer
    act_quant: Quantizer
    keep: torch.Tensor | None
    training: bool

    def _setup_quant(self, name: str, out_channels: int, weight_bits: int | Sequence[int], act_bits: int,
                     method: str, per_channel: bool, weight_symmetric: bool, act_signed: bool | None,
                     act_symmetric: bool, init: str, learn_act_scale: bool, keep: Sequence[int] | None) -> None:
        self.weight_quant = make_quantizer(
            method, list(weight_bits) if isinstance(weight_bits, (list, tuple)) else weight_bits,
            role="weight", signed=True, symmetric=weight_symmetric,
            channels=out_channels if per_channel else None, init=init, name=name,
        )
        self.act_quant = make_quantizer(method, act_bits, role="activation", signed=act_signed,
                                        symmetric=act_symmetric, init=init, name=name, learnable=learn_act_scale)
        mask = None
        if keep is not None:
            values = list(keep)
            if len(values) != out_channels or any(v not in (0, 1) for v in values):
                raise ConfigError(f"keep mask for '{name}' must list 0/1 for each of its {out_channels} output "
                                  f"channels, got {values!r}")
            mask = torch.tensor(values, dtype=self.weight.dtype, device=self.weight.device)
        self.register_buffer("keep", mask)  # type: ignore[attr-defined]

    @property
    def weight_bits(self) -> int | list[int]:
        """Weight bit width: an int, or one per output channel."""
        return self.weight_quant.bits

    @property
    def act_bits(self) -> int:
        """Bit width of this layer's input activation."""
        return int(self.act_quant.bits)  # type: ignore[arg-type]

    @property
    def keep_mask(self) -> list[int] | None:
        """Per-output-channel keep flags (0 = pruned filter), or None when every filter is kept."""
        return None if self.keep is None else [int(v) for v in self.keep.tolist()]

    def _masked(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.keep is None else t * _broadcast(self.keep.to(t.dtype), t)

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized weight this layer computes with (pruned filters zeroed)."""
        return self._masked(self.weight_quant(self.weight))

    def bias_scale(self) -> torch.Tensor:
        """Scale of the integer bias, ``s_w * s_a`` (per output channel or one value)."""
        return (self.weight_quant.scale_tensor().detach() * self.act_quant.scale_tensor().detach()).reshape(-1)

    def _bias_is_quantized(self) -> bool:
        """A bias, and both quantizers below 32 bits with a scale (so ``s_w * s_a`` exists)."""
        weight, act = self.weight_quant, self.act_quant
        return (self.bias is not None and not weight.is_passthrough and not act.is_passthrough
                and weight.is_initialized and act.is_initialized)

    @torch.no_grad()
    def bias_codes(self) -> torch.Tensor | None:
        """The int32-range integer bias (int64 tensor) at scale ``s_w * s_a``, or None without a bias, when
        either quantizer is 32-bit or has no scale yet."""
        if not self._bias_is_quantized():
            return None
        codes = torch.round(self.bias / self.bias_scale().to(self.bias.dtype)).clamp_(INT32_MIN, INT32_MAX)
        # in float32 INT32_MAX rounds up to 2**31, which would wrap to -2**31 as an int32: clamp the integers too
        return self._masked(codes).long().clamp_(INT32_MIN, INT32_MAX)

    def quantized_bias(self) -> torch.Tensor | None:
        """The bias used in the forward pass: int32-quantized in eval mode, float (masked) in training mode."""
        if self.bias is None:
            return None
        if self.training or not self._bias_is_quantized():
            return self._masked(self.bias)
        scale = self.bias_scale().to(self.bias.dtype)
        return self.bias_codes().to(self.bias.dtype) * scale

    def _adopt(self, float_module: nn.Module) -> Any:
        """Share ``float_module``'s weight and bias parameters and its train/eval mode; returns self."""
        self.weight = float_module.weight
        self.bias = float_module.bias
        self.train(float_module.training)
        return self

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        before = len(missing_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,  # type: ignore[misc]
                                      unexpected_keys, error_msgs)
        if self.keep is not None and prefix + "keep" not in state_dict:  # a float checkpoint has no mask
            missing_keys[before:] = [k for k in missing_keys[before:] if k != prefix + "keep"]


def _quant_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = dict(name="", weight_bits=8, act_bits=8, method="lsq", per_channel=True,
                                    weight_symmetric=True, act_signed=True, act_symmetric=True, init="mse",
                                    learn_act_scale=True, keep=None)
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown quantization option(s) {', '.join(unknown)}; accepted: {', '.join(defaults)}")
    return {**defaults, **kwargs}


class QuantConv2d(_QuantLayer, nn.Conv2d):
    """nn.Conv2d whose input activation (``act_quant``) and weight (``weight_quant``) are fake-quantized.

    Quantization options (keyword-only): name, weight_bits (int or one per output channel), act_bits, method
    ("lsq" | "pact" | "minmax"), per_channel, weight_symmetric, act_signed (None: from data), act_symmetric,
    init ("mse" | "minmax"), learn_act_scale, keep (0/1 per output channel).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None, **quant: Any) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype)
        self._setup_quant(out_channels=out_channels, **_quant_kwargs(quant))

    @classmethod
    def from_float(cls, conv: nn.Conv2d, **quant: Any) -> QuantConv2d:
        """A QuantConv2d with the geometry of ``conv`` that shares its weight and bias parameters."""
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                    padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype, **quant)
        return layer._adopt(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolution of the quantized input with the quantized weight."""
        x = self.act_quant(x)
        return self._conv_forward(x, self.quantized_weight(), self.quantized_bias())


class QuantLinear(_QuantLayer, nn.Linear):
    """nn.Linear whose input activation and weight are fake-quantized (same options as QuantConv2d)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None, **quant: Any) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._setup_quant(out_channels=out_features, **_quant_kwargs(quant))

    @classmethod
    def from_float(cls, linear: nn.Linear, **quant: Any) -> QuantLinear:
        """A QuantLinear with the shape of ``linear`` that shares its weight and bias parameters."""
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype, **quant)
        return layer._adopt(linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Linear map of the quantized input with the quantized weight."""
        x = self.act_quant(x)
        return F.linear(x, self.quantized_weight(), self.quantized_bias())


class QuantAct(nn.Module):
    """A stand-alone activation quantizer (a graph leaf of kind "quant_act") for places other than the input of
    a conv/linear layer, e.g. a residual sum that integer hardware stores."""

    bitsmith_leaf = True
    bitsmith_kind = "quant_act"

    def __init__(self, bits: int = 8, *, method: str = "lsq", signed: bool | None = True, symmetric: bool = True,
                 init: str = "mse", name: str = "", learnable: bool = True) -> None:
        super().__init__()
        self.quant = make_quantizer(method, bits, role="activation", signed=signed, symmetric=symmetric,
                                    init=init, name=name, learnable=learnable)

    @classmethod
    def sharing(cls, quantizer: nn.Module) -> QuantAct:
        """A QuantAct that applies an existing activation quantizer (same scale and parameters), for a tensor
        that a layer with that input quantizer also reads."""
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module.quant = quantizer
        return module

    @property
    def bits(self) -> int:
        """Bit width of the quantized activation."""
        return int(self.quant.bits)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x``."""
        return self.quant(x)
