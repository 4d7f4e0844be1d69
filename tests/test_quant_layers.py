"""Quantized layers: float checkpoints load, quantized weights/biases are what the layer computes with."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bitsmith.errors import ConfigError
from bitsmith.graph import trace
from bitsmith.quant import QuantAct, QuantConv2d, QuantLinear


def _net(quant: bool, **kw) -> nn.Sequential:
    conv = QuantConv2d(2, 4, 3, padding=1, **kw) if quant else nn.Conv2d(2, 4, 3, padding=1)
    linear = QuantLinear(4 * 6 * 6, 5, **kw) if quant else nn.Linear(4 * 6 * 6, 5)
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), linear)


def test_float_state_dict_loads_strictly_and_quantizers_reinitialise():
    torch.manual_seed(0)
    float_net, qnet = _net(False), _net(True, weight_bits=4, act_bits=4)
    x = torch.rand(8, 2, 6, 6)
    qnet(x)  # initialise quantizers on the random weights
    assert qnet[0].weight_quant.is_initialized
    result = qnet.load_state_dict(float_net.state_dict())  # strict=True
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(qnet[0].weight, float_net[0].weight)
    assert not qnet[0].weight_quant.is_initialized  # new weights: the scale is re-derived from them
    qnet(x)
    w = qnet[0].quantized_weight()
    assert (w - float_net[0].weight).abs().max() < 0.2 * float_net[0].weight.abs().max()


def test_quantized_checkpoint_round_trips():
    torch.manual_seed(1)
    qnet = _net(True, weight_bits=3, act_bits=5, act_signed=None)
    x = torch.rand(8, 2, 6, 6)
    qnet(x)
    qnet.eval()
    state = qnet.state_dict()
    assert {"0.weight_quant.log_scale", "0.act_quant.log_scale", "3.act_quant.initialized"} <= set(state)
    clone = _net(True, weight_bits=3, act_bits=5, act_signed=None).eval()
    clone.load_state_dict(state)
    assert clone[0].act_quant.signed is False
    assert torch.equal(clone(x), qnet(x))


def test_quantized_weight_is_what_the_conv_uses_and_bias_is_int32_in_eval():
    torch.manual_seed(2)
    conv = QuantConv2d(3, 4, 3, padding=1, weight_bits=4, act_bits=6, act_signed=False)
    x = torch.rand(2, 3, 5, 5)
    conv(x)
    conv.eval()
    with torch.no_grad():
        w = conv.quantized_weight()
        for c in range(4):
            assert w[c].unique().numel() <= 16
        xq = conv.act_quant(x)
        codes = conv.bias_codes()
        scale = conv.weight_quant.scale * conv.act_quant.scale
        assert torch.equal(conv.quantized_bias(), codes.float() * scale)
        assert torch.allclose(conv(x), F.conv2d(xq, w, codes.float() * scale, padding=1))
        conv.train()
        assert torch.equal(conv.quantized_bias(), conv.bias)  # float bias while training
    assert conv.weight_bits == 4 and conv.act_bits == 6


def test_gradients_reach_weights_bias_and_scales():
    torch.manual_seed(3)
    qnet = _net(True, weight_bits=4, act_bits=4)
    x = torch.rand(8, 2, 6, 6)
    qnet(x)
    qnet(x).square().mean().backward()
    for name, p in qnet.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, name


def test_per_channel_bits_and_keep_mask():
    torch.manual_seed(4)
    lin = QuantLinear(10, 4, weight_bits=[2, 4, 8, 16], act_bits=8, keep=[1, 1, 0, 1])
    x = torch.randn(6, 10)
    y = lin(x).detach()
    assert lin.weight_bits == [2, 4, 8, 16] and lin.keep_mask == [1, 1, 0, 1]
    w = lin.quantized_weight().detach()
    assert w[0].unique().numel() <= 4 and float(w[2].abs().sum()) == 0.0
    assert float(y[:, 2].abs().sum()) == 0.0  # a pruned filter outputs nothing, bias included
    float_lin = nn.Linear(10, 4)
    assert not lin.load_state_dict(float_lin.state_dict()).missing_keys  # no mask in a float checkpoint
    assert lin.keep_mask == [1, 1, 0, 1]
    with pytest.raises(ConfigError, match="keep mask"):
        QuantLinear(10, 4, keep=[1, 0])
    with pytest.raises(ConfigError, match="3 entries; the layer has 4"):
        QuantLinear(10, 4, weight_bits=[2, 4, 8])
    with pytest.raises(ConfigError, match="unknown quantization option"):
        QuantLinear(10, 4, wbits=4)


def test_32_bit_layer_is_the_float_layer():
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 4, 3)
    qconv = QuantConv2d.from_float(conv, weight_bits=32, act_bits=32)
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(qconv(x), conv(x))
    assert qconv.weight is conv.weight  # from_float shares the parameters


def test_quant_act_is_a_graph_leaf():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), QuantAct(4, signed=False), nn.Flatten())
    graph = trace(model, (1, 5, 5))
    node = graph.by_module("2")
    assert node.kind == "quant_act" and node.attrs.get("bits") == 4
    out = model(torch.rand(3, 1, 5, 5))
    assert out.unique().numel() <= 16


def test_activation_scales_come_from_training_batches_not_eval_runs():
    layer = QuantLinear(6, 3, weight_bits=4, act_bits=4).eval()
    x = torch.randn(5, 6)
    with torch.no_grad():
        layer(x)
    assert layer.weight_quant.is_initialized and not layer.act_quant.is_initialized
    layer.train()
    layer(torch.zeros(5, 6))  # a constant batch has no range
    assert not layer.act_quant.is_initialized
    layer(x)
    assert layer.act_quant.is_initialized
