"""A float model into a DirectQ model (:func:`prepare`); a trained one into plain core layers (:func:`to_core`)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

from torch import nn

from bitsmith.errors import ConfigError
from bitsmith.methods.directq.config import DirectQConfig
from bitsmith.methods.directq.quantizers import ChannelAwareActQuantizer, DirectWeightQuantizer
from bitsmith.quant import LSQQuantizer, QuantConv2d, QuantLinear, quantize


def _quant_layers(model: nn.Module) -> Iterator[tuple[str, QuantConv2d | QuantLinear]]:
    for name, module in model.named_modules():
        if isinstance(module, (QuantConv2d, QuantLinear)):
            yield name, module


def prepare(model: nn.Module, config: DirectQConfig | None = None,
            example_input_shape: Sequence[int] | None = None) -> nn.Module:
    """A quantized copy of ``model`` trained the DirectQ way by any training loop (the shared Trainer included).

    The copy is the core's conversion (:func:`bitsmith.quantize`, same first/last layer policy) with the weight
    quantizers replaced by :class:`DirectWeightQuantizer` (``direct_weights``) and the learnable activation
    quantizers by :class:`ChannelAwareActQuantizer` (``channel_aware_acts``); 32-bit layers stay float. The
    weights are snapped onto their level grid at once; activation step sizes start from the first training batch.
    """
    config = config or DirectQConfig()
    if not isinstance(config, DirectQConfig):
        raise ConfigError(f"prepare expects a DirectQConfig, got {type(config).__name__}")
    qmodel = quantize(model, config.qconfig(), example_input_shape=example_input_shape)
    for name, layer in _quant_layers(qmodel):
        old_w, old_a = layer.weight_quant, layer.act_quant
        if config.direct_weights and not old_w.is_passthrough:
            wq = DirectWeightQuantizer(old_w.bits, shape=layer.weight.shape, channels=old_w.channels,
                                       init=old_w.init, name=name, step_gain=config.step_gain, seed=config.seed,
                                       rounding=config.rounding)
            layer.weight_quant = wq.to(layer.weight.device)
            wq.initialize(layer.weight)
        serves = config.act_layers == "all" or isinstance(layer, QuantConv2d)
        if config.channel_aware_acts and serves and not old_a.is_passthrough and old_a.learnable:
            layer.act_quant = ChannelAwareActQuantizer(
                old_a.bits, signed=old_a.signed, init=old_a.init, name=name, loss_weight=config.act_loss_weight,
                trim=config.act_trim, sample=config.act_sample,
                grad_scale=config.act_grad_scale).to(layer.weight.device)
    return qmodel


def _core_copy(q: LSQQuantizer) -> LSQQuantizer:
    core = LSQQuantizer(q.bits, signed=q.signed, symmetric=q.symmetric, channels=q.channels, init=q.init,
                        role=q.role, name=q.name, learn_scale=q.learnable)
    own = {k: v for k, v in q.state_dict().items() if k in core.state_dict()}
    core.load_state_dict(own)
    return core.to(q.log_scale.device)


def to_core(model: nn.Module) -> nn.Module:
    """A copy of a DirectQ model whose quantizers are the core's LSQQuantizers with the same step sizes and
    weights: it computes the same outputs and is what ONNX export and other tools that know only the core
    layers take."""
    core = copy.deepcopy(model)
    for _, layer in _quant_layers(core):
        if isinstance(layer.weight_quant, DirectWeightQuantizer):
            layer.weight_quant(layer.weight)  # project a pending optimizer step first
            layer.weight_quant = _core_copy(layer.weight_quant)
        if isinstance(layer.act_quant, ChannelAwareActQuantizer):
            layer.act_quant = _core_copy(layer.act_quant)
    return core
