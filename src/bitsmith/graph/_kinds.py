"""Op kinds: which modules are graph leaves, what kind each leaf or functional op is, and its plain-data attributes."""

from __future__ import annotations

from typing import Any

from torch import nn

from bitsmith.errors import UnsupportedLayerError

WEIGHT_KINDS = frozenset({"conv", "dwconv", "linear"})

# Ops that act on every channel independently (a channel that is zero on input stays irrelevant on output).
CHANNELWISE_KINDS = frozenset({
    "bn", "relu", "relu6", "act", "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool", "dropout",
    "identity", "quant_act", "upsample", "pad", "mean",
})

_ACTIVATIONS = (
    nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.LeakyReLU, nn.ELU,
    nn.PReLU, nn.Mish, nn.SELU, nn.CELU, nn.Softplus,
)
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
_PADS = (nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.ReflectionPad1d,
         nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d)
_UNSUPPORTED_CONV = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

SUPPORTED_MODULES = (
    "Conv1d/2d/3d (incl. grouped, depthwise), Linear, BatchNorm, LayerNorm/GroupNorm, ReLU, ReLU6, other "
    "activations, Max/Avg/Adaptive pooling, Flatten, Dropout, Identity, Upsample, padding, Softmax"
)


def _conv_kind(m: nn.Module) -> str:
    depthwise = m.groups > 1 and m.groups == m.in_channels
    return "dwconv" if depthwise else "conv"


def module_kind(m: nn.Module) -> str | None:
    """The kind of a leaf module (isinstance, so subclasses such as QuantConv2d count), or None if not a leaf."""
    if isinstance(m, _UNSUPPORTED_CONV):
        return None
    checks: tuple[tuple[Any, Any], ...] = (
        (nn.modules.conv._ConvNd, _conv_kind),
        (nn.Linear, "linear"),
        (nn.modules.batchnorm._BatchNorm, "bn"),
        (nn.modules.instancenorm._InstanceNorm, "norm"),
        (_NORMS, "norm"),
        (nn.ReLU6, "relu6"),
        (nn.ReLU, "relu"),
        (_ACTIVATIONS, "act"),
        ((nn.Softmax, nn.LogSoftmax), "softmax"),
        ((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d), "maxpool"),
        ((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), "avgpool"),
        ((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), "adaptive_avgpool"),
        ((nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d), "adaptive_maxpool"),
        (nn.Flatten, "flatten"),
        (nn.modules.dropout._DropoutNd, "dropout"),
        (nn.Identity, "identity"),
        (nn.Upsample, "upsample"),
        (_PADS, "pad"),
    )
    for types, kind in checks:
        if isinstance(m, types):
            return kind(m) if callable(kind) else kind
    explicit = getattr(m, "bitsmith_kind", None)
    if isinstance(explicit, str):
        return explicit
    if getattr(m, "bitsmith_leaf", False):
        return "custom"
    return None


def is_leaf(m: nn.Module, qualname: str) -> bool:
    """True for modules the tracer keeps whole; raises UnsupportedLayerError for torch layers it cannot cost."""
    if module_kind(m) is not None:
        return True
    if isinstance(m, _CONTAINERS):
        return False
    if type(m).__module__.startswith("torch.nn"):
        raise UnsupportedLayerError(
            f"unsupported layer '{qualname or '<model>'}' of type {type(m).__name__}; supported: {SUPPORTED_MODULES}"
        )
    return False


def _plain(value: Any) -> Any:
    """JSON-ready copy of a module hyper-parameter (tuples become lists, anything exotic its str)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return str(value)


def module_attrs(m: nn.Module, kind: str) -> dict[str, Any]:
    """Plain-data attributes of a leaf module: geometry for weight layers, hyper-parameters for the rest."""
    attrs: dict[str, Any] = {}
    if isinstance(m, nn.modules.conv._ConvNd):
        kernel = list(m.kernel_size)
        attrs.update(
            in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=kernel, stride=_plain(m.stride),
            padding=_plain(m.padding), dilation=_plain(m.dilation), groups=m.groups, bias=m.bias is not None,
            weight_shape=[m.out_channels, m.in_channels // m.groups, *kernel],
        )
    elif isinstance(m, nn.Linear):
        attrs.update(in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None,
                     weight_shape=[m.out_features, m.in_features])
    elif kind == "bn":
        attrs.update(num_features=m.num_features, eps=m.eps, affine=m.affine)
    else:
        for key in ("kernel_size", "stride", "padding", "output_size", "start_dim", "end_dim", "p",
                    "negative_slope", "min_val", "max_val", "dim", "scale_factor", "mode"):
            if hasattr(m, key):
                attrs[key] = _plain(getattr(m, key))
    for key in ("bits", "weight_bits", "act_bits"):
        value = getattr(m, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            attrs[key] = value
    return attrs


_FUNCTION_KINDS = {
    "add": "add", "iadd": "add", "radd": "add", "sub": "sub", "isub": "sub", "rsub": "sub",
    "mul": "mul", "imul": "mul", "rmul": "mul", "div": "div", "truediv": "div", "itruediv": "div",
    "cat": "concat", "concat": "concat", "concatenate": "concat",
    "flatten": "flatten", "view": "reshape", "reshape": "reshape",
    "relu": "relu", "relu6": "relu6",
    "sigmoid": "act", "tanh": "act", "gelu": "act", "silu": "act", "hardswish": "act", "hardsigmoid": "act",
    "hardtanh": "act", "leaky_relu": "act", "elu": "act", "mish": "act", "selu": "act", "softplus": "act",
    "softmax": "softmax", "log_softmax": "softmax",
    "mean": "mean", "dropout": "dropout", "batch_norm": "bn", "layer_norm": "norm", "group_norm": "norm",
    "contiguous": "identity", "clone": "identity", "detach": "identity", "float": "identity", "to": "identity",
    "interpolate": "upsample", "pad": "pad",
}
_FUNCTION_PREFIXES = (
    ("adaptive_avg_pool", "adaptive_avgpool"), ("adaptive_max_pool", "adaptive_maxpool"),
    ("max_pool", "maxpool"), ("avg_pool", "avgpool"),
)
_HEAVY_FUNCTIONS = frozenset({
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "linear",
    "bilinear", "matmul", "mm", "bmm", "addmm", "baddbmm", "einsum",
})


def op_name(target: Any) -> str:
    """A functional op's bare name: ``operator.add``, ``Tensor.__iadd__`` and ``"add_"`` give add/iadd/add."""
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    return name.strip("_")


def function_kind(name: str, where: str) -> str:
    """The kind of a functional op; weight-carrying functions (F.conv2d, matmul) are refused as uncostable."""
    if name in _HEAVY_FUNCTIONS:
        raise UnsupportedLayerError(
            f"unsupported functional op '{name}' in {where}: weight layers must be modules ({SUPPORTED_MODULES})"
        )
    if name in _FUNCTION_KINDS:
        return _FUNCTION_KINDS[name]
    for prefix, kind in _FUNCTION_PREFIXES:
        if name.startswith(prefix):
            return kind
    return "other"


def _arg(args: tuple, kwargs: dict, position: int, key: str, default: Any) -> Any:
    if key in kwargs:
        return kwargs[key]
    return args[position] if len(args) > position else default


def function_attrs(name: str, kind: str, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Plain-data attributes of a functional op call (op name, and the dims that shape-changing ops use)."""
    attrs: dict[str, Any] = {"op": name}
    if kind == "concat":
        attrs["dim"] = _arg(args, kwargs, 1, "dim", 0)
    elif kind == "flatten":
        attrs["start_dim"] = _arg(args, kwargs, 1, "start_dim", 0)
        attrs["end_dim"] = _arg(args, kwargs, 2, "end_dim", -1)
    elif kind == "mean":
        attrs["dim"] = _arg(args, kwargs, 1, "dim", None)
    if isinstance(attrs.get("dim"), tuple):
        attrs["dim"] = list(attrs["dim"])
    return {k: v for k, v in attrs.items() if k == "op" or _is_dims(v)}


def _is_dims(value: Any) -> bool:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value)
