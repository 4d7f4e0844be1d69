"""A float model into a CGMQ model (:func:`prepare`); a trained one into plain core layers (:func:`to_core`)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from bitsmith.errors import ConfigError
from bitsmith.methods.cgmq.config import CGMQConfig
from bitsmith.methods.cgmq.constraint import BopConstraint, gated_layers
from bitsmith.methods.cgmq.gates import GatedQuantizer
from bitsmith.quant import QConfig, QuantConv2d, QuantLinear, bits_assignment, quantize


def prepare(model: nn.Module, config: CGMQConfig, example_input_shape: Sequence[int]) -> nn.Module:
    """A copy of ``model`` whose every conv/linear quantizes its weight and input through gated quantizers
    (``config.granularity`` for the weight gates, one chain per layer for activations), every gate on.

    Raises ConfigError before any training when the bound is below the cheapest reachable configuration.
    """
    if not isinstance(config, CGMQConfig):
        raise ConfigError(f"cgmq.prepare expects a CGMQConfig, got {type(config).__name__}")
    qmodel = quantize(model, QConfig(weight_bits=8, act_bits=8, first_last_bits=None),
                      example_input_shape=example_input_shape)
    for name, module in list(qmodel.named_modules()):
        if not isinstance(module, (QuantConv2d, QuantLinear)):
            continue
        out = module.weight.shape[0]
        shape = {"layer": (), "channel": (out,), "weight": tuple(module.weight.shape)}[config.granularity]
        common = dict(gate_init=config.gate_init, ref_bits=config.ref_bits, name=name)
        wq = GatedQuantizer(config.bits, role="weight", signed=True, channels=out, gate_shape=shape, **common)
        module.weight_quant = wq.to(module.weight.device)
        wq.initialize(module.weight)
        module.act_quant = GatedQuantizer(config.bits, role="activation", signed=module.act_quant.signed,
                                          **common).to(module.weight.device)
    BopConstraint(qmodel, example_input_shape, config)  # refuses an infeasible bound now
    return qmodel


def _float_layer(layer: QuantConv2d | QuantLinear) -> nn.Module:
    """A float conv/linear with ``layer``'s geometry holding its quantized weight (nested grids make it exact)."""
    if isinstance(layer, QuantConv2d):
        out = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                        padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                        bias=layer.bias is not None, padding_mode=layer.padding_mode)
    else:
        out = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    out.weight.data.copy_(layer.weight_quant(layer.weight).detach())
    if layer.bias is not None:
        out.bias.data.copy_(layer.bias.detach())
    return out.to(layer.weight.device)


def to_core(model: nn.Module, example_input_shape: Sequence[int]) -> nn.Module:
    """A core-quantized copy (QuantConv2d/QuantLinear with LSQ quantizers at the learned per-layer/per-channel
    widths and the same step sizes) that computes what the CGMQ model computes. A layer left at 32 bits in
    some channels but not others cannot be expressed by the core and is refused."""
    assignment = bits_assignment(model)
    skeleton = copy.deepcopy(model)
    for name, layer in gated_layers(skeleton):
        parent, _, child = name.rpartition(".")
        setattr(skeleton.get_submodule(parent) if parent else skeleton, child, _float_layer(layer))
    core = quantize(skeleton, QConfig.from_bits(assignment), example_input_shape=example_input_shape)
    for name, layer in gated_layers(model):
        target = core.get_submodule(name)
        for source, dest in ((layer.weight_quant, target.weight_quant), (layer.act_quant, target.act_quant)):
            if dest.is_passthrough:
                continue
            width = source.bits
            per = width if isinstance(width, list) else [width] * (source.channels or 1)
            logs = [float(source.log_scale_at(source.index_of(b)).detach()[c]) for c, b in enumerate(per)]
            dest.log_scale.data.copy_(dest.log_scale.new_tensor(logs))  # same parametrisation as the core
            if dest.signed is None:
                dest._resolve_signed(bool(source.signed))
            dest._mark_initialized()
    return core.eval() if not model.training else core
