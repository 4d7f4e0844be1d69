"""ONNX export in QDQ form: integer weights behind DequantizeLinear, QuantizeLinear/DequantizeLinear pairs where the
model quantizes activations, BatchNorm folded into the weight scales, emitted node by node from the traced graph.

The graph is built here with ``onnx.helper`` from :func:`bitsmith.graph.trace` rather than by
``torch.onnx.export``: on torch 2.13 the TorchScript exporter turns the fake quantizers into float
Div/Round/Clip/Mul chains (no QuantizeLinear, float weights, scales recomputed through Exp), and the dynamo exporter
needs onnxscript. Emitting the graph ourselves keeps every code range under control (docs/EXPORT.md).
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from bitsmith import __version__, _io
from bitsmith.errors import ConfigError, ParityError, UnsupportedLayerError
from bitsmith.export._deps import require
from bitsmith.export._qparams import QParams, is_quantized, quantizer_params, weight_codes
from bitsmith.graph import Graph, Node, trace
from bitsmith.quant.convert import bn_affine
from bitsmith.quant.layers import INT32_MAX, INT32_MIN, QuantAct, _QuantLayer
from bitsmith.zoo import input_shape as zoo_input_shape

if TYPE_CHECKING:
    from bitsmith.export.parity import ParityReport

#: Default opset: the first with per-axis (per-channel) QuantizeLinear/DequantizeLinear, so the widest choice of
#: runtimes loads the file; nothing newer is needed (int4/int16 QDQ types of opset 21 are not used).
DEFAULT_OPSET = 13
MIN_OPSET = 13
#: Metadata key listing the tensors that the parity check compares with PyTorch module outputs.
LAYERS_KEY = "bitsmith.layers"
#: The batch size the graph is traced with (2, so that reshapes that keep the batch axis can be told apart).
_TRACE_BATCH = 2
_INT8 = (-128, 127)
_UINT8 = (0, 255)

SUPPORTED_KINDS = (
    "conv", "dwconv", "linear", "bn", "relu", "relu6", "maxpool", "avgpool", "adaptive_avgpool", "add", "concat",
    "flatten", "reshape", "mean", "identity", "dropout", "quant_act",
)


@dataclass
class OnnxExport:
    """What :func:`to_onnx` wrote: the file, its opset and size, which BatchNorms were folded, and the parity check
    (None with ``check=False``)."""

    path: Path
    opset: int
    size_bytes: int
    folded_bn: list[str] = field(default_factory=list)
    unfolded_bn: list[str] = field(default_factory=list)
    parity: ParityReport | None = None


def _storage(low: int, high: int, what: str) -> tuple[Any, int]:
    """The ONNX element type (int8 or uint8) and numpy dtype that hold codes in ``[low, high]``."""
    onnx = require("onnx", "ONNX export")
    if _UINT8[0] <= low and high <= _UINT8[1]:
        return onnx.TensorProto.UINT8, np.uint8
    if _INT8[0] <= low and high <= _INT8[1]:
        return onnx.TensorProto.INT8, np.int8
    raise ConfigError(f"{what} has codes in [{low}, {high}], which int8/uint8 cannot hold: QuantizeLinear/"
                      "DequantizeLinear export accepts bit widths 2..8 (32 = float); re-quantize at 8 bits or less")


def _bits_text(params: QParams) -> str:
    bits = params.bits
    return f"{min(bits)}..{max(bits)}" if isinstance(bits, list) else str(bits)


class _Emitter:
    """Collects ONNX nodes and initializers with unique names."""

    def __init__(self, opset: int) -> None:
        self.onnx = require("onnx", "ONNX export")
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.names: set[str] = set()
        self.node_names: set[str] = set()

    def unique(self, name: str, taken: set[str] | None = None) -> str:
        """``name``, or ``name_2``, ``name_3``, ... when taken (tensor names, or the node names ``taken``)."""
        taken = self.names if taken is None else taken
        candidate, count = name, 1
        while candidate in taken:
            count += 1
            candidate = f"{name}_{count}"
        taken.add(candidate)
        return candidate

    def const(self, name: str, array: np.ndarray) -> str:
        """Add an initializer and return its name. A 0-d array stays a scalar (``np.ascontiguousarray`` would make it
        shape (1,), which onnxruntime does not take as a per-tensor scale when it fuses QLinearAdd)."""
        name = self.unique(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.require(array, requirements="C"), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], output: str, name: str | None = None, **attrs: Any) -> str:
        """Add a node with one output (``output``, made unique) and return the output's name."""
        output = self.unique(output)
        node_name = self.unique(name or output, self.node_names)
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [output], name=node_name, **attrs))
        return output

    def qdq(self, x: str, params: QParams, base: str, what: str) -> str:
        """QuantizeLinear -> DequantizeLinear of ``x`` with per-tensor ``params``; a Clip to the code range first
        when it is narrower than int8/uint8 (widths below 8, PACT's symmetric range), so the codes are exactly the
        fake quantizer's: ``clamp(round(x / s) + z, qmin, qmax)`` (round half to even in both)."""
        low, high = int(params.qmin[0]), int(params.qmax[0])
        elem, dtype = _storage(low, high, what)
        scale = np.float32(params.scale[0].item())
        zero = int(params.zero[0])
        s_name = self.const(f"{base}.scale", np.array(scale, dtype=np.float32))
        z_name = self.const(f"{base}.zero_point", np.array(zero, dtype=dtype))
        full = _UINT8 if elem == self.onnx.TensorProto.UINT8 else _INT8
        if (low, high) != full:
            lo = self.const(f"{base}.clip_min", np.array(np.float32(low - zero) * scale, dtype=np.float32))
            hi = self.const(f"{base}.clip_max", np.array(np.float32(high - zero) * scale, dtype=np.float32))
            x = self.op("Clip", [x, lo, hi], f"{base}.clipped")
        q = self.op("QuantizeLinear", [x, s_name, z_name], f"{base}.q")
        return self.op("DequantizeLinear", [q, s_name, z_name], f"{base}.dq")

    def dequantized(self, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, code_range: tuple[int, int],
                    base: str, what: str, axis: int = 0) -> str:
        """Integer ``codes`` (in ``code_range``) stored as an int8/uint8 initializer behind DequantizeLinear (per
        axis 0 when ``scale`` has one entry per channel). Signed codes wider than 7 bits are stored shifted into
        uint8 (zero point + 128; the same values): onnxruntime's u8s8 integer kernels on CPUs without VNNI sum
        pairs of products in saturating 16-bit arithmetic and get 8-bit signed weights wrong, its u8u8 kernels
        do not."""
        _, dtype = _storage(*code_range, what)
        if dtype == np.int8 and (code_range[0] < -64 or code_range[1] > 63):
            codes, zero, dtype = codes + 128, zero + 128, np.uint8
        per_channel = scale.numel() > 1
        shape: tuple[int, ...] = (-1,) if per_channel else ()
        c = self.const(f"{base}_quantized", codes.numpy().astype(dtype))
        s = self.const(f"{base}_scale", scale.float().numpy().reshape(shape).astype(np.float32))
        z = self.const(f"{base}_zero_point", zero.numpy().reshape(shape).astype(dtype))
        attrs = {"axis": axis} if per_channel else {}
        return self.op("DequantizeLinear", [c, s, z], base, **attrs)

    def int32_bias(self, codes: torch.Tensor, scale: torch.Tensor, base: str) -> str:
        """An int32 bias at scale ``s_w * s_a`` behind DequantizeLinear, as integer hardware adds it."""
        c = self.const(f"{base}_quantized", codes.numpy().astype(np.int32))
        per_channel = scale.numel() > 1
        s = self.const(f"{base}_scale", scale.float().numpy().reshape((-1,) if per_channel else ()).astype(np.float32))
        return self.op("DequantizeLinear", [c, s], base, **({"axis": 0} if per_channel else {}))

    def floats(self, name: str, t: torch.Tensor) -> str:
        """A float32 initializer."""
        return self.const(name, t.detach().float().cpu().numpy())


@dataclass
class _Fold:
    """A BatchNorm folded into the conv before it: ``y = conv(x) * factor + shift`` per output channel."""

    bn_node: Node
    factor: torch.Tensor
    shift: torch.Tensor


def _check_supported(graph: Graph) -> None:
    """Refuse any node the exporter cannot express, naming it and its kind."""
    for node in graph.nodes:
        if node.kind in ("input", "output"):
            continue
        where = f"node '{node.name}'" + (f" (module '{node.module_name}', {node.module_type})"
                                         if node.module_name else "")
        if node.kind not in SUPPORTED_KINDS:
            raise UnsupportedLayerError(f"cannot export {where} of kind '{node.kind}' to ONNX; supported kinds: "
                                        f"{', '.join(SUPPORTED_KINDS)}")
        if node.kind in ("maxpool", "avgpool", "adaptive_avgpool", "bn") and node.module_name is None:
            raise UnsupportedLayerError(f"cannot export {where}: functional {node.kind} has no recorded arguments; "
                                        f"use the nn module (e.g. nn.MaxPool2d, nn.AdaptiveAvgPool2d)")
        module = graph.module(node) if node.module_name else None
        if node.kind in ("conv", "dwconv") and (not isinstance(module, nn.Conv2d) or module.padding_mode != "zeros"):
            raise UnsupportedLayerError(f"cannot export {where}: only 2-D convolutions with zero padding are "
                                        "supported")
        if node.kind == "linear" and len(node.in_shapes[0]) != 2:
            raise UnsupportedLayerError(f"cannot export {where}: a linear layer on a rank-{len(node.in_shapes[0])} "
                                        "input (only [batch, features] is supported)")


def _fold_plan(graph: Graph, fold_bn: bool) -> tuple[dict[int, _Fold], list[str], list[str]]:
    """Which BatchNorms fold into their conv (all that can with ``fold_bn``): conv -> BN, the BN the conv's only
    consumer, each module called once, and (for a quantized conv) every channel's codes still in range after a
    negative factor flips their sign."""
    calls = Counter(n.module_name for n in graph.nodes if n.module_name)
    plan: dict[int, _Fold] = {}
    folded: list[str] = []
    unfolded: list[str] = []
    for node in graph.nodes:
        if node.kind != "bn":
            continue
        bn = graph.module(node)
        producer = graph.nodes[node.inputs[0]]
        single = (producer.kind in ("conv", "dwconv") and graph.successors(producer.index) == [node.index]
                  and calls[producer.module_name] == 1 and calls[node.module_name] == 1)
        if not fold_bn or not single or not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None:
            unfolded.append(node.module_name)
            continue
        factor, shift = bn_affine(bn)
        if not _foldable(graph.module(producer), factor):
            unfolded.append(node.module_name)
            continue
        plan[producer.index] = _Fold(node, factor, shift)
        folded.append(node.module_name)
    return plan, folded, unfolded


def _foldable(conv: nn.Module, factor: torch.Tensor) -> bool:
    """A BN factor folds into a quantized conv's weight scales if it is finite and non-zero, and where it is negative
    the channel's codes can change sign (symmetric, no code at ``qmin``, whose negation is out of range)."""
    if not bool(torch.isfinite(factor).all()) or bool((factor == 0).any()):
        return False
    if not isinstance(conv, _QuantLayer) or not bool((factor < 0).any()):
        return True
    got = weight_codes(conv, "")
    if got is None:
        return True
    codes, params = got
    negative = factor < 0
    if bool((params.zero.expand(negative.numel())[negative] != 0).any()):
        return False
    at_min = (codes == params.qmin.view(-1, *[1] * (codes.dim() - 1))).reshape(codes.shape[0], -1).any(dim=1)
    return not bool((at_min & negative).any())


def _float_bias(layer: nn.Module) -> torch.Tensor | None:
    """The bias a layer adds in eval mode (the int32-quantized one of a quantized layer), in float64."""
    bias = layer.quantized_bias() if isinstance(layer, _QuantLayer) else layer.bias
    return None if bias is None else bias.detach().double()


def _layer_weight(emitter: _Emitter, layer: nn.Module, name: str, fold: _Fold | None,
                  act: QParams | None) -> tuple[str, str | None]:
    """The weight and bias inputs of a conv/linear node: integer codes behind DequantizeLinear with an int32 bias
    at ``s_w * s_a`` (a folded BN's factor in the per-channel weight scale, its shift in the bias), or float
    initializers where the layer's weight is not quantized."""
    got = weight_codes(layer, name) if isinstance(layer, _QuantLayer) else None
    bias = _float_bias(layer)
    if fold is not None:
        bias = fold.shift + (bias * fold.factor if bias is not None else 0.0)
    if got is None:
        weight = (layer.quantized_weight() if isinstance(layer, _QuantLayer) else layer.weight).detach().double()
        if fold is not None:
            weight = weight * fold.factor.view(-1, *[1] * (weight.dim() - 1))
        return emitter.floats(f"{name}.weight", weight), None if bias is None else emitter.floats(f"{name}.bias", bias)
    codes, params = got
    scale, zero = params.scale, params.zero
    if fold is not None:
        n = codes.shape[0]
        codes = codes * torch.where(fold.factor < 0, -1, 1).view(-1, *[1] * (codes.dim() - 1))
        scale = (scale.double().expand(n) * fold.factor.abs()).float()
        zero = zero.expand(n).clone()
    what = f"weight of '{name}' ({_bits_text(params)} bits)"
    w_name = emitter.dequantized(codes, scale, zero, (int(params.qmin.min()), int(params.qmax.max())),
                                 f"{name}.weight", what)
    if bias is None:
        return w_name, None
    if act is None:
        return w_name, emitter.floats(f"{name}.bias", bias)
    if fold is None:
        return w_name, emitter.int32_bias(layer.bias_codes(), layer.bias_scale().float(), f"{name}.bias")
    bias_scale = (scale * act.scale).reshape(-1)
    codes32 = torch.round(bias / bias_scale.double()).clamp_(INT32_MIN, INT32_MAX).long()
    return w_name, emitter.int32_bias(codes32, bias_scale, f"{name}.bias")


def _pair(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * 2


class _GraphWriter:
    """Walks the traced graph in order and emits each node (see the module docstring)."""

    def __init__(self, graph: Graph, emitter: _Emitter, fold_bn: bool) -> None:
        self.graph = graph
        self.e = emitter
        self.out: dict[int, str] = {}
        self.compare: list[dict[str, Any]] = []
        self.calls: Counter[str] = Counter()
        self.quantized: dict[tuple[str, int], str] = {}
        self.plan, self.folded, self.unfolded = _fold_plan(graph, fold_bn)
        self.folded_bn_nodes = {fold.bn_node.index for fold in self.plan.values()}

    def qdq(self, x: str, quantizer: nn.Module, params: QParams, base: str, what: str) -> str:
        """The QuantizeLinear/DequantizeLinear of ``x`` by ``quantizer``, emitted once: a quantizer shared by several
        readers of one tensor (``QConfig.residual_bits``) gives one QuantizeLinear, as integer hardware stores the
        tensor once, and onnxruntime can then fuse the ReLU and the residual add before it into integer kernels."""
        key = (x, id(quantizer))
        if key not in self.quantized:
            self.quantized[key] = self.e.qdq(x, params, base, what)
        return self.quantized[key]

    def record(self, node: Node, tensor: str, kind: str | None = None) -> None:
        """Remember ``tensor`` as the output of ``node`` and, for a module, list it for the parity check."""
        self.out[node.index] = tensor
        module_name = node.module_name
        if module_name is not None:
            self.compare.append({"tensor": tensor, "module": module_name, "call": self.calls[module_name],
                                 "kind": kind or node.kind})
            self.calls[module_name] += 1

    def write(self) -> list[str]:
        """Emit every node; returns the graph output names."""
        outputs: list[str] = []
        for node in self.graph.nodes:
            if node.kind == "input":
                self.out[node.index] = "input"
            elif node.kind == "output":
                outputs = [self.out[i] for i in node.inputs]
            elif node.index not in self.folded_bn_nodes:  # a folded BN's output was recorded with its conv
                self.emit(node)
        return outputs

    def emit(self, node: Node) -> None:
        """Emit one node (its kind was checked by ``_check_supported``)."""
        inputs = [self.out[i] for i in node.inputs]
        module = self.graph.module(node) if node.module_name else None
        name = node.module_name or node.name
        kind = node.kind
        e = self.e
        if kind in ("conv", "dwconv", "linear"):
            self.layer(node, module, inputs[0])
            return
        if kind in ("identity", "dropout"):
            self.out[node.index] = inputs[0]
            return
        if kind == "relu":
            y = e.op("Relu", inputs, node.name, name=name)
        elif kind == "relu6":
            lo = e.const(f"{name}.min", np.array(0.0, np.float32))
            y = e.op("Clip", [inputs[0], lo, e.const(f"{name}.max", np.array(6.0, np.float32))], node.name, name=name)
        elif kind == "maxpool":
            y = self.maxpool(module, inputs[0], node.name, name)
        elif kind == "avgpool":
            y = self.avgpool(node, module, inputs[0], name)
        elif kind == "adaptive_avgpool":
            y = self.adaptive_avgpool(node, inputs[0], name)
        elif kind == "add":
            y = self.add(node, inputs, name)
        elif kind == "concat":
            y = self.concat(node, inputs, name)
        elif kind in ("flatten", "reshape"):
            y = self.reshape(node, inputs[0], name)
        elif kind == "mean":
            y = self.mean(node, inputs[0], name)
        elif kind == "quant_act":
            y = self.quant_act(node, module, inputs[0], name)
        else:  # "bn" that could not be folded
            y = self.batchnorm(node, module, inputs[0], name)
        self.record(node, y)

    # ------------------------------------------------------------------------------------------ weight layers
    def layer(self, node: Node, module: nn.Module, x: str) -> None:
        """Conv/Gemm with QuantizeLinear/DequantizeLinear on the input (where the layer quantizes it) and
        integer weights and bias; a folded BN's output is this node's."""
        name = node.module_name
        act = quantizer_params(module.act_quant, name) if isinstance(module, _QuantLayer) else None
        if act is not None:
            x = self.qdq(x, module.act_quant, act, f"{name}.input",
                         f"input activation of '{name}' ({_bits_text(act)} bits)")
        fold = self.plan.get(node.index)
        w, b = _layer_weight(self.e, module, name, fold, act)
        target = fold.bn_node if fold is not None else node
        inputs = [x, w] + ([b] if b is not None else [])
        if node.kind == "linear":
            y = self.e.op("Gemm", inputs, target.name, name=name, transB=1)
        else:
            pads = self.conv_pads(module)
            y = self.e.op("Conv", inputs, target.name, name=name, kernel_shape=_pair(module.kernel_size),
                          strides=_pair(module.stride), pads=pads, dilations=_pair(module.dilation),
                          group=module.groups)
        self.record(target, y, kind="conv+bn" if fold is not None else None)

    @staticmethod
    def conv_pads(conv: nn.Conv2d) -> list[int]:
        """ONNX pads ``[top, left, bottom, right]`` of a conv, ``padding='same'`` putting the odd pixel at the end
        as torch does, ``'valid'`` none."""
        if not isinstance(conv.padding, str):
            return _pair(conv.padding) * 2
        if conv.padding == "valid":
            return [0, 0, 0, 0]
        total = [d * (k - 1) for d, k in zip(_pair(conv.dilation), _pair(conv.kernel_size), strict=True)]
        return [t // 2 for t in total] + [t - t // 2 for t in total]

    # ------------------------------------------------------------------------------------------ other ops
    def maxpool(self, module: nn.MaxPool2d, x: str, out: str, name: str) -> str:
        """MaxPool with the module's kernel, stride, padding, dilation and ceil mode."""
        if getattr(module, "return_indices", False):
            raise UnsupportedLayerError(f"cannot export maxpool '{name}' with return_indices")
        kernel = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        pad = _pair(module.padding)
        return self.e.op("MaxPool", [x], out, name=name, kernel_shape=kernel, strides=stride, pads=pad + pad,
                         dilations=_pair(module.dilation), ceil_mode=int(module.ceil_mode))

    def avgpool(self, node: Node, module: nn.AvgPool2d, x: str, name: str) -> str:
        """AveragePool with the module's geometry and ``count_include_pad``."""
        if getattr(module, "divisor_override", None):
            raise UnsupportedLayerError(f"cannot export avgpool '{name}' with divisor_override")
        kernel = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        pad = _pair(module.padding)
        return self.e.op("AveragePool", [x], node.name, name=name, kernel_shape=kernel, strides=stride,
                         pads=pad + pad, ceil_mode=int(module.ceil_mode),
                         count_include_pad=int(module.count_include_pad))

    def adaptive_avgpool(self, node: Node, x: str, name: str) -> str:
        """GlobalAveragePool for a 1x1 output, else an AveragePool whose windows tile the traced input exactly."""
        (height, width), (out_h, out_w) = node.in_shapes[0][-2:], node.out_shape[-2:]
        if (out_h, out_w) == (1, 1):
            return self.e.op("GlobalAveragePool", [x], node.name, name=name)
        if height % out_h or width % out_w:
            raise UnsupportedLayerError(f"cannot export adaptive_avgpool '{name}': input {height}x{width} is not a "
                                        f"multiple of the output {out_h}x{out_w}")
        kernel = [height // out_h, width // out_w]
        return self.e.op("AveragePool", [x], node.name, name=name, kernel_shape=kernel, strides=kernel)

    def add(self, node: Node, inputs: list[str], name: str) -> str:
        """A chain of Add nodes over the distinct inputs (a tensor added to itself or a constant is refused)."""
        if len(inputs) < 2:
            raise UnsupportedLayerError(f"cannot export add '{name}': it adds a tensor to itself or to a constant")
        y = inputs[0]
        for i, other in enumerate(inputs[1:], start=1):
            y = self.e.op("Add", [y, other], node.name if i == len(inputs) - 1 else f"{node.name}.{i}", name=name)
        return y

    def concat(self, node: Node, inputs: list[str], name: str) -> str:
        """Concat along the traced dim (a list that repeats a tensor is refused: the trace keeps distinct inputs)."""
        rank = len(node.out_shape)
        axis = int(node.attrs.get("dim", 0)) % rank
        if sum(shape[axis] for shape in node.in_shapes) != node.out_shape[axis]:
            raise UnsupportedLayerError(f"cannot export concat '{name}': it repeats an input tensor")
        return self.e.op("Concat", inputs, node.name, name=name, axis=axis)

    def reshape(self, node: Node, x: str, name: str) -> str:
        """Flatten from axis 1, or a Reshape to the traced shape with the batch axis copied from the input."""
        in_shape, out_shape = node.in_shapes[0], node.out_shape
        if node.kind == "flatten":
            start = int(node.attrs.get("start_dim", 1)) % len(in_shape)
            end = int(node.attrs.get("end_dim", -1)) % len(in_shape)
            if start == 1 and end == len(in_shape) - 1:
                return self.e.op("Flatten", [x], node.name, name=name, axis=1)
        if out_shape[0] != in_shape[0]:
            raise UnsupportedLayerError(f"cannot export {node.kind} '{name}': it changes the batch axis")
        shape = self.e.const(f"{name}.shape", np.array([0, *out_shape[1:]], dtype=np.int64))
        return self.e.op("Reshape", [x, shape], node.name, name=name)

    def mean(self, node: Node, x: str, name: str) -> str:
        """ReduceMean over the traced dims (axes an attribute before opset 18, an input from 18 on)."""
        rank = len(node.in_shapes[0])
        dims = node.attrs.get("dim")
        if dims is None:
            raise UnsupportedLayerError(f"cannot export mean '{name}' over all axes (it reduces the batch axis)")
        axes = sorted({int(d) % rank for d in (dims if isinstance(dims, list) else [dims])})
        if 0 in axes:
            raise UnsupportedLayerError(f"cannot export mean '{name}' over the batch axis")
        keep = int(len(node.out_shape) == rank)
        if self.e.opset >= 18:
            a = self.e.const(f"{name}.axes", np.array(axes, dtype=np.int64))
            return self.e.op("ReduceMean", [x, a], node.name, name=name, keepdims=keep)
        return self.e.op("ReduceMean", [x], node.name, name=name, axes=axes, keepdims=keep)

    def quant_act(self, node: Node, module: nn.Module, x: str, name: str) -> str:
        """QuantizeLinear/DequantizeLinear of a stand-alone activation quantizer (nothing at 32 bits)."""
        quantizer = module.quant if isinstance(module, QuantAct) else module
        params = quantizer_params(quantizer, name)
        if params is None:
            return x
        return self.qdq(x, quantizer, params, name, f"activation '{name}' ({_bits_text(params)} bits)")

    def batchnorm(self, node: Node, module: nn.Module, x: str, name: str) -> str:
        """A BatchNorm that is not folded, as BatchNormalization with its running statistics."""
        if not isinstance(module, nn.BatchNorm2d) or module.running_var is None:
            raise UnsupportedLayerError(f"cannot export bn '{name}' ({type(module).__name__}): only BatchNorm2d with "
                                        "running statistics")
        e = self.e
        ones = torch.ones_like(module.running_var)
        gamma = module.weight if module.weight is not None else ones
        beta = module.bias if module.bias is not None else torch.zeros_like(ones)
        return e.op("BatchNormalization", [x, e.floats(f"{name}.weight", gamma), e.floats(f"{name}.bias", beta),
                                           e.floats(f"{name}.running_mean", module.running_mean),
                                           e.floats(f"{name}.running_var", module.running_var)],
                    node.name, name=name, epsilon=float(module.eps))


def _model_input_shape(model: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    shape = zoo_input_shape(model, input_shape)
    if shape is None:
        raise ConfigError("ONNX export needs the model's input shape: pass input_shape=(C, H, W)")
    shape = tuple(int(d) for d in shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3:
        raise ConfigError(f"input_shape must be (C, H, W), got {tuple(input_shape or ())!r}")
    return shape


def _check_opset(opset: int) -> int:
    onnx = require("onnx", "ONNX export")
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ConfigError(f"opset {opset!r} is not supported: accepted {MIN_OPSET}..{newest} (13 is the first with "
                          f"per-channel QuantizeLinear/DequantizeLinear; the installed onnx knows up to {newest})")
    return opset


def build_onnx(qmodel: nn.Module, input_shape: Sequence[int] | None = None, *, opset: int = DEFAULT_OPSET,
               fold_bn: bool = True, allow_float: bool = False) -> tuple[Any, list[str], list[str]]:
    """The QDQ ONNX model of ``qmodel`` in eval mode, checked by ``onnx.checker``; returns ``(ModelProto, BN modules
    folded into their conv, BN modules kept as float BatchNormalization)``.

    ``fold_bn=False`` keeps every BatchNorm that the model applies after a quantized conv as a float op (exactly the
    model's arithmetic; folding rounds its shift into the int32 bias). ``allow_float`` exports a model without
    quantized layers as a plain float graph (a baseline).
    """
    onnx = require("onnx", "ONNX export")
    opset = _check_opset(opset)
    shape = _model_input_shape(qmodel, input_shape)
    if not allow_float and not is_quantized(qmodel):
        raise ConfigError("the model has no quantized conv/linear layer; quantize it first (bitsmith.quantize, or "
                          "`bitsmith quantize --from RUN`)")
    model = copy.deepcopy(qmodel).eval()
    graph = trace(model, (_TRACE_BATCH, *shape))
    _check_supported(graph)
    emitter = _Emitter(opset)
    emitter.names.add("input")
    writer = _GraphWriter(graph, emitter, fold_bn)
    with torch.no_grad():
        outputs = writer.write()
    if len(outputs) != 1:
        raise UnsupportedLayerError(f"cannot export a model with {len(outputs)} outputs; one tensor is supported")
    final = emitter.op("Identity", outputs, "output", name="output")
    helper = onnx.helper
    tensor = onnx.TensorProto.FLOAT
    graph_proto = helper.make_graph(
        emitter.nodes, type(qmodel).__name__,
        [helper.make_tensor_value_info("input", tensor, ["batch", *shape])],
        [helper.make_tensor_value_info(final, tensor, ["batch", *graph.nodes[-1].out_shape[1:]])],
        emitter.initializers,
    )
    opset_id = helper.make_opsetid("", opset)
    proto = helper.make_model(graph_proto, opset_imports=[opset_id], producer_name="bitsmith",
                              producer_version=__version__)
    proto.ir_version = helper.find_min_ir_version_for([opset_id])
    helper.set_model_props(proto, {LAYERS_KEY: json.dumps(writer.compare)})
    onnx.checker.check_model(proto, full_check=True)
    return proto, writer.folded, writer.unfolded


def to_onnx(qmodel: nn.Module, path: str | Path, input_shape: Sequence[int] | None = None, *,
            opset: int = DEFAULT_OPSET, fold_bn: bool = True, check: bool = True, data: Any = None,
            allow_float: bool = False, threads: int | None = None) -> OnnxExport:
    """Export a quantized model to ONNX at ``path``: QDQ form, BatchNorm folded (see :func:`build_onnx`), opset
    ``opset`` (default 13, the first with per-channel QuantizeLinear/DequantizeLinear).

    With ``check`` (default) onnxruntime must reproduce the model first (:func:`bitsmith.export.check_parity` on
    ``data``: inputs or ``(inputs, labels)``; seeded random inputs of the model's shape when None): a mismatch raises
    ParityError naming the first diverging layer, and nothing is written.
    """
    from bitsmith.export.parity import check_parity, random_inputs

    require("onnx", "ONNX export")
    if check:
        require("onnxruntime", "the parity check of ONNX export (check=False / --no-check skips it)")
    proto, folded, unfolded = build_onnx(qmodel, input_shape, opset=opset, fold_bn=fold_bn, allow_float=allow_float)
    payload = proto.SerializeToString()
    report = None
    if check:
        if data is None:
            data = random_inputs(_model_input_shape(qmodel, input_shape))
        try:
            report = check_parity(qmodel, payload, data, threads=threads)
        except ParityError as exc:
            if not folded:
                raise
            raise ParityError(f"{exc}; {len(folded)} BatchNorm(s) that the model applies in float after a quantized "
                              "conv were folded into int32 biases, which rounds their shift: export with "
                              "fold_bn=False (--keep-bn) to keep them as float BatchNormalization, or quantize with "
                              "fold_bn=True (--fold-bn) so the model itself is folded") from None
    written = _io.write_bytes(path, payload)
    return OnnxExport(path=written, opset=opset, size_bytes=len(payload), folded_bn=folded, unfolded_bn=unfolded,
                      parity=report)
