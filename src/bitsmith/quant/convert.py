"""Model conversion: ``quantize`` (float model -> quantized copy), ``fold_batchnorm`` and ``bits_assignment``.

Conversion walks the traced graph (:func:`bitsmith.graph.trace`) so that activation quantizers sit where integer
hardware puts them, at the input of every conv/linear layer, and picks each one's signedness from what produces
that input:

* relu / relu6, and max/avg-pool, flatten, dropout, identity, reshape, add or concat of such values only
  -> unsigned codes ``[0, 2^b - 1]``;
* the network input (possibly through pooling/reshaping only) -> decided from the first batch (unsigned when it
  has no negative value, e.g. images in [0, 1]), with a scale fixed after initialisation/calibration: learning
  it would make the first conv compute its input gradient (about +2 ms on LeNet-5's ~3 ms training step);
* anything else (BatchNorm, a linear bottleneck, a residual sum without ReLU, ...) -> signed.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bitsmith import zoo
from bitsmith.cost.bits import BitsAssignment, LayerBits
from bitsmith.errors import ConfigError, UnsupportedLayerError
from bitsmith.graph import Graph, insert_before, shared_readers, trace
from bitsmith.quant.config import QConfig
from bitsmith.quant.layers import QuantAct, QuantConv2d, QuantLinear, _QuantLayer

_UNSUPPORTED = (
    nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.RNNBase, nn.RNNCellBase,
    nn.Embedding, nn.EmbeddingBag, nn.Bilinear, nn.MultiheadAttention,
)
_NONNEGATIVE = frozenset({"relu", "relu6"})
_SIGN_PRESERVING = frozenset({
    "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool", "flatten", "dropout", "identity", "reshape",
    "add", "concat", "mean", "upsample", "quant_act",
})


def _short(names: Sequence[str], limit: int = 6) -> str:
    names = list(names)
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _check_model(model: nn.Module) -> None:
    """Refuse already-quantized models and weight layers that conversion cannot handle."""
    for name, module in model.named_modules():
        where = name or "<model>"
        if isinstance(module, (_QuantLayer, QuantAct)):
            raise ConfigError(f"the model is already quantized ('{where}' is a {type(module).__name__}); "
                              "quantize the float model")
        if isinstance(module, _UNSUPPORTED):
            raise UnsupportedLayerError(f"cannot quantize '{where}' ({type(module).__name__}): bitsmith quantizes "
                                        "Conv2d and Linear layers only")
        if isinstance(module, (nn.Conv2d, nn.Linear)) and not isinstance(module.weight, nn.Parameter):
            raise UnsupportedLayerError(f"cannot quantize '{where}' ({type(module).__name__}): its weight is computed, "
                                        "not a parameter; quantize a plain model (e.g. rpg.materialize(model))")
        custom = (isinstance(module, nn.Conv2d) and type(module).forward is not nn.Conv2d.forward) or (
            isinstance(module, nn.Linear) and type(module).forward is not nn.Linear.forward)
        if custom:
            raise UnsupportedLayerError(f"cannot quantize '{where}' ({type(module).__name__}): a Conv2d/Linear "
                                        "subclass with its own forward; use plain nn.Conv2d / nn.Linear")


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


# ----------------------------------------------------------------------------- BatchNorm folding
@torch.no_grad()
def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as a per-channel affine map ``y = x * factor + shift`` (float64):
    ``factor = g / sqrt(v + eps)``, ``shift = beta - m * factor``."""
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    factor = gamma / torch.sqrt(var + bn.eps)
    return factor, beta - mean * factor


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold eval-mode ``bn`` into ``conv``: ``w' = w * factor``, ``b' = b * factor + shift`` (:func:`bn_affine`, in
    float64, then back to the conv's dtype)."""
    dtype = conv.weight.dtype
    factor, shift = bn_affine(bn)
    conv.weight.copy_((conv.weight.double() * factor.view(-1, 1, 1, 1)).to(dtype))
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(factor)
    new_bias = (bias * factor + shift).to(dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)
    if isinstance(conv, _QuantLayer) and not conv.weight_quant.is_passthrough:
        conv.weight_quant.initialize(conv.weight)


def _fold(model: nn.Module, graph: Graph) -> list[tuple[str, str]]:
    """Fold every BatchNorm2d whose only producer is a Conv2d that feeds nothing else; BN -> Identity."""
    calls = Counter(n.module_name for n in graph.nodes if n.module_name)
    folded = []
    for node in graph.nodes:
        if node.kind != "bn" or node.module_name is None or len(node.inputs) != 1:
            continue
        producer = graph.nodes[node.inputs[0]]
        if (producer.kind not in ("conv", "dwconv") or producer.module_name is None
                or graph.successors(producer.index) != [node.index]
                or calls[producer.module_name] != 1 or calls[node.module_name] != 1):
            continue
        conv = model.get_submodule(producer.module_name)
        bn = model.get_submodule(node.module_name)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None:
            continue
        _fold_pair(conv, bn)
        _replace(model, node.module_name, nn.Identity())
        folded.append((producer.module_name, node.module_name))
    return folded


def fold_batchnorm(model: nn.Module, input_shape: Sequence[int]) -> nn.Module:
    """A copy of ``model`` with each BatchNorm2d folded into the Conv2d before it (the conv being the BN's only
    producer and the BN the conv's only consumer) and replaced by Identity; equal to ``model`` in eval mode.

    A quantized conv re-initialises its weight scale from the folded weight.
    """
    folded = copy.deepcopy(model)
    _fold(folded, trace(folded, tuple(input_shape)))
    return folded


# ----------------------------------------------------------------------------- signedness and layer order
def _combine(signs: list[bool | None]) -> bool | None:
    if any(s is True for s in signs):
        return True
    if signs and all(s is False for s in signs):
        return False
    return None


def _node_signs(graph: Graph) -> list[bool | None]:
    """Per node: False = never negative, None = network input (decided from data), True = may be negative."""
    signs: list[bool | None] = []
    for node in graph.nodes:
        if node.kind == "input":
            signs.append(None)
        elif node.kind in _NONNEGATIVE:
            signs.append(False)
        elif node.kind in _SIGN_PRESERVING and node.inputs:
            signs.append(_combine([signs[i] for i in node.inputs]))
        else:
            signs.append(True)
    return signs


def _layers_and_signs(model: nn.Module, graph: Graph | None) -> tuple[list[str], dict[str, bool | None]]:
    """Conv2d/Linear module names (execution order first) and each one's input-activation signedness."""
    all_layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if graph is None:
        return all_layers, {name: (None if i == 0 else True) for i, name in enumerate(all_layers)}
    node_signs = _node_signs(graph)
    per_layer: dict[str, list[bool | None]] = {}
    for node in graph.layers():
        if node.module_name is not None and node.inputs:
            per_layer.setdefault(node.module_name, []).append(node_signs[node.inputs[0]])
    order = [n for n in graph.layer_names() if n in all_layers]
    order += [n for n in all_layers if n not in order]
    return order, {name: _combine(per_layer[name]) if name in per_layer else True for name in order}


# ----------------------------------------------------------------------------- per-layer plan
def _check_target(name: str, entry: dict[str, Any], model: nn.Module, order: list[str], source: str) -> None:
    if name in order:
        return
    modules = dict(model.named_modules())
    if name not in modules:
        raise ConfigError(f"{source} names layer '{name}', which is not in the model; weight layers: "
                          f"{_short(order)}")
    kind = type(modules[name]).__name__
    if "per_channel" in entry:
        raise ConfigError(f"{source} sets per_channel for '{name}' ({kind}), which has no output channels to "
                          f"quantize; per_channel applies to Conv2d/Linear layers: {_short(order)}")
    raise ConfigError(f"{source} names '{name}' ({kind}), which is not a Conv2d or Linear layer; weight layers: "
                      f"{_short(order)}")


def _plan(qconfig: QConfig, model: nn.Module, order: list[str]) -> dict[str, dict[str, Any]]:
    """Bit widths, method, granularity and keep mask of every weight layer, after first/last, bits file and
    overrides (in that order of precedence, last wins)."""
    plan = {name: dict(weight_bits=qconfig.weight_bits, act_bits=qconfig.act_bits, method=qconfig.method,
                       per_channel=qconfig.per_channel, keep=None) for name in order}
    if qconfig.first_last_bits is not None and order:
        for name in (order[0], order[-1]):
            plan[name].update(weight_bits=qconfig.first_last_bits, act_bits=qconfig.first_last_bits)
    entries: list[tuple[str, dict[str, Any], str]] = []
    if qconfig.bits_file is not None:
        bits = BitsAssignment.load(qconfig.bits_file)
        entries += [(name, lb.to_dict(), f"bits file {qconfig.bits_file}") for name, lb in bits.layers.items()]
    entries += [(name, entry, "QConfig override") for name, entry in qconfig.overrides.items()]
    for name, entry, source in entries:
        _check_target(name, entry, model, order, source)
        plan[name].update(entry)
    return plan


def quantize(model: nn.Module, qconfig: QConfig | dict[str, Any] | None = None,
             example_input_shape: Sequence[int] | None = None) -> nn.Module:
    """A quantized deep copy of ``model`` (the original is untouched): every Conv2d/Linear becomes a
    QuantConv2d/QuantLinear per ``qconfig`` (default: W8A8 LSQ, per-channel weights).

    ``example_input_shape`` ((C, H, W)) lets conversion trace the model; zoo models carry it. Without it the
    layer order is the module order and activations after ReLU get signed codes (a warning says so).
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"quantize expects a torch.nn.Module, got {type(model).__name__}")
    if qconfig is None:
        qconfig = QConfig()
    elif isinstance(qconfig, dict):
        qconfig = QConfig.from_dict(qconfig)
    elif not isinstance(qconfig, QConfig):
        raise ConfigError(f"quantize expects a QConfig (or its dict), got {type(qconfig).__name__}")
    _check_model(model)
    qmodel = copy.deepcopy(model)
    shape = zoo.input_shape(model, example_input_shape)
    graph = trace(qmodel, shape) if shape is not None else None
    if graph is None:
        if qconfig.fold_bn:
            raise ConfigError("fold_bn needs the model's input shape: pass example_input_shape=(C, H, W)")
        warnings.warn("quantize: no example_input_shape, so the model was not traced: layer order is module "
                      "order and every activation but the first layer's input gets signed codes; pass "
                      "example_input_shape=(C, H, W)", UserWarning, stacklevel=2)
    elif qconfig.fold_bn:
        _fold(qmodel, graph)
    order, signs = _layers_and_signs(qmodel, graph)
    plan = _plan(qconfig, qmodel, order)
    for name in order:
        module = qmodel.get_submodule(name)
        cls = QuantConv2d if isinstance(module, nn.Conv2d) else QuantLinear
        settings = plan[name]
        layer = cls.from_float(
            module, name=name, weight_bits=settings["weight_bits"], act_bits=settings["act_bits"],
            method=settings["method"], per_channel=settings["per_channel"],
            weight_symmetric=qconfig.weight_symmetric, act_signed=signs[name],
            act_symmetric=qconfig.act_symmetric, init=qconfig.init, learn_act_scale=signs[name] is not None,
            keep=settings["keep"],
        )
        _replace(qmodel, name, layer)
    if qconfig.residual_bits is not None:
        qmodel = _quantize_residuals(qmodel, qconfig, graph is not None)
    return qmodel


RESIDUAL_PREFIX = "residual_quant_"


def _quantize_residuals(qmodel: nn.Module, qconfig: QConfig, traced: bool) -> nn.Module:
    """``qmodel`` as a GraphModule with a QuantAct on every input of each add (its residual sums), keeping the zoo
    spec so the result re-traces, costs and exports like the original. Each tensor is quantized once, as integer
    hardware stores it once: quantized layers reading the same tensor at the same width share one input quantizer
    (a block's first conv and its projection shortcut), and an add input that a quantized layer also reads at
    ``residual_bits`` reuses that layer's quantizer (the identity shortcut)."""
    if not traced:
        raise ConfigError("residual_bits needs the model's input shape: pass example_input_shape=(C, H, W)")
    bits = qconfig.residual_bits
    method = "lsq" if qconfig.method == "pact" else qconfig.method
    _share_input_quantizers(qmodel)

    made: dict[str, QuantAct] = {}

    def reader_quantizer(readers: list[str]) -> nn.Module | None:
        """The quantizer that another reader of the tensor already applies at ``bits``: an add's QuantAct made
        before, or a quantized layer's input quantizer."""
        for reader in readers:
            if reader in made:
                return made[reader].quant
            layer = qmodel.get_submodule(reader)
            if isinstance(layer, _QuantLayer) and layer.act_bits == bits:
                return layer.act_quant
        return None

    def make(i: int, readers: list[str]) -> QuantAct:
        name = f"{RESIDUAL_PREFIX}{i}"
        quant = reader_quantizer(readers)
        made[name] = QuantAct.sharing(quant) if quant is not None else QuantAct(
            bits, method=method, signed=None, symmetric=qconfig.act_symmetric, init=qconfig.init, name=name)
        return made[name]

    gm, count = insert_before(qmodel, "add", make, RESIDUAL_PREFIX)
    if count == 0:
        warnings.warn("quantize: residual_bits is set but the model has no add to quantize", UserWarning,
                      stacklevel=3)
    if hasattr(qmodel, "bitsmith_spec"):
        gm.bitsmith_spec = qmodel.bitsmith_spec
    gm.train(qmodel.training)
    return gm


def _share_input_quantizers(qmodel: nn.Module) -> None:
    """Give quantized layers that read one tensor with the same kind of input quantizer (width, method, sign) the
    first one's quantizer."""
    for readers in shared_readers(qmodel):
        first: dict[tuple[Any, ...], nn.Module] = {}
        for name in readers:
            layer = qmodel.get_submodule(name)
            if not isinstance(layer, _QuantLayer) or layer.act_bits >= 32:
                continue
            quant = layer.act_quant
            key = (type(quant), layer.act_bits, quant.signed)
            if key in first:
                layer.act_quant = first[key]
            else:
                first[key] = quant


def bits_assignment(qmodel: nn.Module) -> BitsAssignment:
    """The bits.json content (a ``bitsmith.cost.bits.BitsAssignment``) of a quantized model: each quantized
    layer's weight bit width(s), input-activation bit width and keep mask."""
    layers = {name: LayerBits(m.weight_bits, m.act_bits, m.keep_mask)
              for name, m in qmodel.named_modules() if isinstance(m, _QuantLayer)}
    if not layers:
        raise ConfigError("bits_assignment: the model has no quantized conv/linear layer; run bitsmith.quantize "
                          "first")
    return BitsAssignment(layers)
