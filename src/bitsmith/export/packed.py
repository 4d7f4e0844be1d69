"""Compact storage: a quantized model as a safetensors file with bit-packed integer weights.

Layout (format ``bitsmith.packed``, version 1; docs/EXPORT.md):

* ``<layer>.weight.codes<b>``: uint8, the codes of the layer's output channels that have ``b`` bits, in channel
  order, each stored as ``code - qmin`` in ``b`` bits, least significant bit first, one bit stream per width
  (2..8 and 16 bits; per-channel widths of CGMQ / DNAS make several streams per layer);
* every other state-dict entry as it is: scales and zero points (the quantizers' own parameters), biases, BatchNorm
  parameters and statistics, keep masks, the weights of 32-bit layers;
* metadata ``bitsmith.packed``: JSON with the format and version, each packed layer's shape, bit widths and
  ``qmin``, the zoo spec of the model and the run's config (its ``model_transforms``), so that the model is
  rebuilt by code in bitsmith (loading executes none) and restored bit for bit.

A restored weight is ``(code - zero) * scale``, which its quantizer maps back to exactly the same codes, so the
loaded model's eval-mode outputs equal the original's bit for bit; :func:`save_packed` checks this before writing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bitsmith import _io
from bitsmith.errors import CheckpointError, ConfigError
from bitsmith.export._qparams import dequantize, is_quantized, quantizer_params, weight_codes
from bitsmith.quant.layers import _QuantLayer

FORMAT = "bitsmith.packed"
VERSION = 1
#: Widths that pack into bit streams (32-bit weights are floats and stay as they are).
PACKED_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
_INTEGER_DTYPES = {"int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16, "int32": torch.int32,
                   "int64": torch.int64}


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Non-negative integers below ``2**bits`` as one bit stream of ``bits`` bits each, least significant bit
    first, padded to whole bytes (uint8, ``ceil(n * bits / 8)`` bytes)."""
    if bits not in PACKED_BITS:
        raise ConfigError(f"cannot pack {bits}-bit codes; accepted widths: {', '.join(map(str, PACKED_BITS))}")
    flat = values.detach().reshape(-1).cpu().long().numpy()
    if flat.size and (flat.min() < 0 or flat.max() >= 1 << bits):
        raise ConfigError(f"codes must lie in [0, {(1 << bits) - 1}] to pack at {bits} bits, got "
                          f"[{flat.min()}, {flat.max()}]")
    stream = ((flat[:, None] >> np.arange(bits)) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(stream.reshape(-1), bitorder="little"))


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The ``count`` integers (int64) that :func:`pack_bits` stored at ``bits`` bits each in ``packed``."""
    if bits not in PACKED_BITS:
        raise CheckpointError(f"packed codes of width {bits} are not supported; accepted: "
                              f"{', '.join(map(str, PACKED_BITS))}")
    data = packed.detach().cpu().numpy().astype(np.uint8, copy=False).reshape(-1)
    if data.size * 8 < count * bits:
        raise CheckpointError(f"a packed stream holds {data.size} bytes, too few for {count} codes of {bits} bits")
    stream = np.unpackbits(data, count=count * bits, bitorder="little").reshape(count, bits).astype(np.int64)
    return torch.from_numpy(stream @ (np.int64(1) << np.arange(bits, dtype=np.int64)))


@dataclass
class PackedSummary:
    """Sizes of a packed file: the file, its bit-packed weight codes, everything else (scales, biases, BatchNorm,
    metadata), and the float32 size of the same model's parameters (weights, biases, BatchNorm with statistics)."""

    path: Path
    size_bytes: int
    code_bytes: int
    fp32_bytes: int
    layers: int

    @property
    def ratio(self) -> float:
        """File size over the FP32 size."""
        return self.size_bytes / max(self.fp32_bytes, 1)

    def summary(self) -> str:
        """One line with the sizes and the ratio to FP32."""
        other = self.size_bytes - self.code_bytes
        return (f"{self.size_bytes / 1000:.1f} kB ({self.code_bytes / 1000:.1f} kB bit-packed weights of "
                f"{self.layers} layers, {other / 1000:.1f} kB scales, biases and metadata); FP32 "
                f"{self.fp32_bytes / 1000:.1f} kB; ratio {self.ratio:.3f} (1/{1 / max(self.ratio, 1e-12):.1f})")


def _widths(bits: int | list[int], channels: int) -> list[int]:
    return list(bits) if isinstance(bits, list) else [bits] * channels


def _is_quantizer(module: nn.Module) -> bool:
    return hasattr(module, "scale_tensor") and hasattr(module, "bits")


def fp32_bytes(model: nn.Module) -> int:
    """Bytes of the model's float parameters and BatchNorm statistics at 4 bytes each (quantizer parameters and
    masks, which a float model does not have, left out)."""
    skip = {id(p) for m in model.modules() if _is_quantizer(m) for p in m.parameters()}
    count = sum(p.numel() for p in model.parameters() if id(p) not in skip)
    count += sum(m.running_mean.numel() + m.running_var.numel() for m in model.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None)
    return 4 * count


def _pack_layer(name: str, codes: torch.Tensor, bits: int | list[int], qmin: torch.Tensor,
                tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Bit streams of one layer's codes (one per width) into ``tensors``; returns its metadata entry."""
    widths = _widths(bits, codes.shape[0])
    low = qmin.expand(codes.shape[0]) if qmin.numel() == 1 else qmin
    offset = codes - low.view(-1, *[1] * (codes.dim() - 1))
    for b in widths:
        if b not in PACKED_BITS:
            raise ConfigError(f"cannot pack the {b}-bit weights of '{name}'; accepted widths: "
                              f"{', '.join(map(str, PACKED_BITS))}")
    groups: dict[str, str] = {}
    for b in sorted(set(widths)):
        rows = [c for c, w in enumerate(widths) if w == b]
        key = f"{name}.weight.codes{b}"
        tensors[key] = pack_bits(offset[rows], b)
        groups[str(b)] = key
    qmins = [int(v) for v in low.tolist()]
    return {"shape": list(codes.shape), "bits": bits, "qmin": qmins[0] if len(set(qmins)) == 1 else qmins,
            "groups": groups}


def _unpack_layer(name: str, entry: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The int64 weight codes of one layer from its bit streams."""
    shape = [int(d) for d in entry["shape"]]
    widths = _widths(entry["bits"], shape[0])
    per_row = int(np.prod(shape[1:], dtype=np.int64))
    offset = torch.empty((shape[0], per_row), dtype=torch.long)
    for b_text, key in entry["groups"].items():
        b = int(b_text)
        rows = [c for c, w in enumerate(widths) if w == b]
        if key not in tensors:
            raise CheckpointError(f"packed file: codes '{key}' of layer '{name}' are missing")
        offset[rows] = unpack_bits(tensors[key], b, len(rows) * per_row).view(len(rows), per_row)
    return (offset + torch.tensor(entry["qmin"], dtype=torch.long).reshape(-1, 1)).view(shape)


def _contents(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor]]:
    """(tensors to store, per-layer metadata and references, the unpacked codes of each layer) of ``model``."""
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, Any] = {}
    references: dict[str, str] = {}
    codes_of: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, _QuantLayer):
                got = weight_codes(module, name, masked=False)
                if got is not None:
                    codes, params = got
                    layers[name] = _pack_layer(name, codes, params.bits, params.qmin, tensors)
                    codes_of[name] = codes
    state = model.state_dict()
    for key, value in state.items():
        owner = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and owner in layers:
            continue
        layer = next((n for n in layers if key.startswith(f"{n}.weight_quant.")), None)
        if (layer is not None and not value.is_floating_point() and value.shape == codes_of[layer].shape
                and torch.equal(value.long(), codes_of[layer])):
            references[key] = layer  # e.g. DirectQ's code buffer: the same integers, stored once
            continue
        tensors[key] = value
    meta = {"layers": layers, "references": references,
            "reference_dtypes": {k: str(state[k].dtype).replace("torch.", "") for k in references}}
    return tensors, meta, codes_of


def _fill(model: nn.Module, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> nn.Module:
    """Load a packed file's contents into ``model`` (same architecture): every stored entry as it is, each packed
    weight as ``(code - zero) * scale`` of its (just loaded) quantizer."""
    layers = meta["layers"]
    codes = {name: _unpack_layer(name, entry, tensors) for name, entry in layers.items()}
    streams = {key for entry in layers.values() for key in entry["groups"].values()}
    state = {k: v for k, v in tensors.items() if k not in streams}
    for name, entry in layers.items():
        state[f"{name}.weight"] = torch.zeros(entry["shape"])
    for key, layer in meta["references"].items():
        dtype = meta["reference_dtypes"][key]
        if dtype not in _INTEGER_DTYPES:
            raise CheckpointError(f"packed file: entry '{key}' has dtype {dtype!r}; accepted: "
                                  f"{', '.join(_INTEGER_DTYPES)}")
        state[key] = codes[layer].to(_INTEGER_DTYPES[dtype])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"packed file does not match the model's architecture ({first})") from None
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in layers:
            layer = modules.get(name)
            if not isinstance(layer, _QuantLayer):
                raise CheckpointError(f"packed file: layer '{name}' is not a quantized conv/linear in the model")
            params = quantizer_params(layer.weight_quant, name)
            layer.weight.copy_(dequantize(codes[name], params).to(layer.weight.dtype))
    return model.eval()


def _check_restores(model: nn.Module, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Refuse to write a file whose contents would not restore each layer's quantized weight bit for bit."""
    restored = _fill(copy.deepcopy(model), tensors, meta)
    originals = dict(model.named_modules())
    with torch.no_grad():
        for name, layer in restored.named_modules():
            if name in meta["layers"] and not torch.equal(layer.quantized_weight(), originals[name].quantized_weight()):
                quantizer = type(originals[name].weight_quant).__name__
                raise ConfigError(f"packing '{name}' would not restore its quantized weights exactly (its "
                                  f"{quantizer} does not compute code * scale); it cannot be packed")


def save_packed(qmodel: nn.Module, path: str | Path, config: Mapping[str, Any] | None = None) -> PackedSummary:
    """Write ``qmodel`` (quantized) as a packed safetensors file (see the module docstring) and return its sizes.

    ``config`` is the run's config (``config.json``: its ``model_transforms`` let :func:`load_packed` rebuild the
    model from the file alone); without it, loading needs a model of the same architecture.
    """
    if not is_quantized(qmodel):
        raise ConfigError("save_packed: the model has no quantized conv/linear layer, so there is nothing to pack; "
                          "quantize it first (bitsmith.quantize, or `bitsmith quantize --from RUN`)")
    model = copy.deepcopy(qmodel).eval()
    tensors, meta, _ = _contents(model)
    if not meta["layers"]:
        raise ConfigError("save_packed: no layer has integer weights (every weight quantizer is a 32-bit "
                          "pass-through), so there is nothing to pack")
    _check_restores(model, tensors, meta)
    spec = getattr(model, "bitsmith_spec", None)
    header = {"format": FORMAT, "version": VERSION, "model": spec if isinstance(spec, dict) else None,
              "config": dict(config) if config is not None else None, **meta}
    written = _io.save_tensors(path, tensors, metadata={FORMAT: json.dumps(header)})
    code_bytes = sum(tensors[key].numel() for entry in meta["layers"].values() for key in entry["groups"].values())
    return PackedSummary(path=written, size_bytes=written.stat().st_size, code_bytes=code_bytes,
                         fp32_bytes=fp32_bytes(model), layers=len(meta["layers"]))


def read_packed(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and parsed metadata of a packed file (CheckpointError if it is not one, or a newer version)."""
    tensors, raw = _io.load_tensors(path, what="packed model file")
    if FORMAT not in raw:
        raise CheckpointError(f"{path}: not a bitsmith packed model (no '{FORMAT}' metadata)")
    try:
        meta = json.loads(raw[FORMAT])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt packed metadata ({exc})") from None
    if meta.get("format") != FORMAT or not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise CheckpointError(f"{path}: packed format version {meta.get('version')!r} is not supported (this "
                              f"bitsmith reads {FORMAT} up to version {VERSION})")
    return tensors, meta


def load_packed(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """The fake-quant model stored in a packed file, in eval mode, with outputs equal to the saved model's.

    Without ``model`` it is rebuilt from the file's zoo spec and the run's recorded transforms; pass ``model`` (a
    fresh one of the same architecture and quantization) for a file saved without a run config.
    """
    tensors, meta = read_packed(path)
    if model is None:
        model = _rebuild(meta, path)
    return _fill(model, tensors, meta)


def _rebuild(meta: Mapping[str, Any], path: str | Path) -> nn.Module:
    """The untrained model a packed file describes: its zoo spec plus the run's ``model_transforms``. The transform
    table lives with the run directories (``bitsmith.runs``), the one place that knows every method."""
    from bitsmith import runs, zoo

    spec, config = meta.get("model"), meta.get("config") or {}
    if not isinstance(spec, dict) or "model_transforms" not in config:
        raise CheckpointError(f"{path}: the file records no zoo model and run config to rebuild the model from; "
                              "pass model= (a quantized model of the same architecture) to load_packed")
    model = zoo.create_model(**spec)
    return runs.apply_transforms(model, config["model_transforms"], zoo.input_shape(model))
