"""The integer-exact reference matches the fake-quant forward: fake quantization is what integer hardware computes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import bitsmith
import bitsmith.quant.integer as integer_module
from bitsmith.errors import ConfigError
from bitsmith.quant import QConfig, QuantConv2d, QuantLinear, calibrate, integer_forward, quantize


def _prepared(name: str, bits: int, **qconfig) -> tuple[nn.Module, torch.Tensor]:
    """A randomly initialised zoo model for 1x16x16 inputs, quantized, BN statistics from one batch,
    calibrated on another; and a test batch."""
    torch.manual_seed(0)
    model = bitsmith.create_model(name, num_classes=10, in_channels=1, image_size=16)
    model.train()
    with torch.no_grad():
        model(torch.rand(32, 1, 16, 16))  # gives BatchNorm non-trivial running statistics
    qmodel = quantize(model.eval(), QConfig(weight_bits=bits, act_bits=bits, **qconfig))
    calibrate(qmodel, [torch.rand(32, 1, 16, 16)], observer="mse")
    return qmodel.eval(), torch.rand(16, 1, 16, 16)


def _check_exact(qmodel: nn.Module, x: torch.Tensor) -> None:
    x64 = x.double()
    with torch.no_grad():
        reference = copy.deepcopy(qmodel).double()(x64)
    result = integer_forward(qmodel, x64)
    rel = float((result - reference).abs().max() / reference.abs().max())
    assert rel < 1e-5, rel
    assert torch.equal(result.argmax(1), reference.argmax(1))


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_integer_forward_matches_fake_quant(name, bits):
    qmodel, x = _prepared(name, bits)
    _check_exact(qmodel, x)


@pytest.mark.parametrize("qconfig", [
    {"method": "pact", "act_symmetric": True},
    {"method": "minmax", "act_symmetric": False, "weight_symmetric": False},
    {"overrides": {"features.3": {"weight_bits": [2, 3, 4, 5, 6, 7, 8, 16] * 2,
                                  "keep": [1, 0] * 8}}},
])
def test_integer_forward_with_zero_points_pact_mixed_bits_and_pruning(qconfig):
    qmodel, x = _prepared("lenet5", 4, **qconfig)
    _check_exact(qmodel, x)


def test_integer_codes_are_integers_in_range():
    qmodel, x = _prepared("lenet5", 4)
    layer = qmodel.classifier[0]
    with torch.no_grad():
        inputs = qmodel.flatten(qmodel.features(x))
    codes = layer.act_quant.quantize_int(inputs)
    assert codes.dtype == torch.int64 and int(codes.min()) >= 0 and int(codes.max()) <= 15
    weights = layer.weight_quant.quantize_int(layer.weight)
    assert int(weights.min()) >= -8 and int(weights.max()) <= 7
    bias = layer.bias_codes()
    assert bias.dtype == torch.int64 and int(bias.abs().max()) < 2**31


def test_float64_emulation_where_int64_convolution_is_missing(monkeypatch):
    qmodel, x = _prepared("lenet5", 8)
    expected = integer_forward(qmodel, x.double())
    real_conv, real_linear = integer_module.F.conv2d, integer_module.F.linear

    def no_int64(real):
        def call(a, b, *args, **kwargs):
            if not a.is_floating_point():
                raise RuntimeError("int64 not implemented")
            return real(a, b, *args, **kwargs)
        return call

    monkeypatch.setattr(integer_module.F, "conv2d", no_int64(real_conv))
    monkeypatch.setattr(integer_module.F, "linear", no_int64(real_linear))
    assert torch.equal(integer_forward(qmodel, x.double()), expected)
    xi = torch.full((1, 4), 2**20, dtype=torch.long)
    with pytest.raises(ConfigError, match="exceed 2\\^53"):
        integer_module._accumulate("linear", xi, xi, 2**60)


def test_integer_forward_errors_and_32_bit_layers():
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ConfigError, match="no quantized conv/linear"):
        integer_forward(model, torch.rand(2, 4))
    qmodel = quantize(model, QConfig(weight_bits=4, act_bits=4), example_input_shape=(1, 1, 4))
    with pytest.raises(ConfigError, match="has no scale yet"):
        integer_forward(qmodel, torch.rand(2, 4))
    passthrough = nn.Sequential(QuantLinear(4, 3, weight_bits=32, act_bits=32),
                                QuantConv2d(1, 1, 1, weight_bits=32, act_bits=32))
    x = torch.rand(2, 1, 5, 4)
    assert torch.equal(integer_forward(passthrough, x), passthrough(x).detach())
