"""``bits.json``: per-layer / per-output-channel bit widths and filter-keep masks, the one format every method
reads and writes (see docs/COST_MODEL.md)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bitsmith import _io
from bitsmith.errors import ConfigError
from bitsmith.graph import Graph, Node
from bitsmith.graph._graph import _short_list

MIN_BITS = 1
FULL_PRECISION = 32


def check_bits(value: Any, where: str) -> int:
    """Return ``value`` if it is an integer bit width in 1..32 (32 = full precision), else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_BITS <= value <= FULL_PRECISION:
        raise ConfigError(
            f"{where}: bit width must be an integer from {MIN_BITS} to {FULL_PRECISION} "
            f"({FULL_PRECISION} = full precision), got {value!r}"
        )
    return value


def _check_keep(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: keep must be a non-empty list of 0/1 per output channel, got {value!r}")
    for i, v in enumerate(value):
        if isinstance(v, bool) or v not in (0, 1) or not isinstance(v, int):
            raise ConfigError(f"{where}[{i}]: keep entries must be 0 or 1, got {v!r}")
    return list(value)


def _check_layer(weight_bits: Any, act_bits: Any, keep: Any, where: str) -> None:
    if isinstance(weight_bits, list):
        if not weight_bits:
            raise ConfigError(f"{where}.weight_bits: per-channel list must not be empty")
        for i, b in enumerate(weight_bits):
            check_bits(b, f"{where}.weight_bits[{i}]")
    else:
        check_bits(weight_bits, f"{where}.weight_bits")
    check_bits(act_bits, f"{where}.act_bits")
    if keep is not None:
        _check_keep(keep, f"{where}.keep")


@dataclass
class LayerBits:
    """Bit widths of one weight layer: weights (one int, or one per output channel), its input activation,
    and an optional per-output-channel keep mask (0 = pruned filter)."""

    weight_bits: int | list[int]
    act_bits: int
    keep: list[int] | None = None

    def __post_init__(self) -> None:
        _check_layer(self.weight_bits, self.act_bits, self.keep, "LayerBits")

    def channel_bits(self, out_channels: int) -> list[int]:
        """Weight bit width of each output channel."""
        if isinstance(self.weight_bits, list):
            return list(self.weight_bits)
        return [self.weight_bits] * out_channels

    def channel_keep(self, out_channels: int) -> list[int]:
        """Keep flag (1 kept, 0 pruned) of each output channel."""
        return list(self.keep) if self.keep is not None else [1] * out_channels

    def to_dict(self) -> dict[str, Any]:
        """This layer's entry of bits.json."""
        entry: dict[str, Any] = {"weight_bits": self.weight_bits, "act_bits": self.act_bits}
        if self.keep is not None:
            entry["keep"] = list(self.keep)
        return entry


def _layer_names(graph_or_layers: Graph | Iterable[str | Node]) -> list[str]:
    if isinstance(graph_or_layers, Graph):
        return graph_or_layers.layer_names()
    names = [item.module_name if isinstance(item, Node) else item for item in graph_or_layers]
    if not all(isinstance(n, str) for n in names):
        raise ConfigError("layer names must be strings (module names of conv/linear layers)")
    return list(dict.fromkeys(names))


@dataclass
class BitsAssignment:
    """Bit widths and keep masks of every weight layer of a model, keyed by module name (bits.json)."""

    layers: dict[str, LayerBits]
    VERSION: ClassVar[int] = 1

    @classmethod
    def uniform(cls, graph_or_layers: Graph | Iterable[str | Node], weight_bits: int,
                act_bits: int) -> BitsAssignment:
        """The same ``weight_bits``/``act_bits`` for every weight layer of a graph (or list of layer names)."""
        check_bits(weight_bits, "weight_bits")
        check_bits(act_bits, "act_bits")
        return cls({name: LayerBits(weight_bits, act_bits) for name in _layer_names(graph_or_layers)})

    @classmethod
    def from_dict(cls, data: Any, where: str = "bits") -> BitsAssignment:
        """Parse bits.json data; any malformed entry raises ConfigError naming where it is."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a JSON object with 'version' and 'layers'")
        unknown = sorted(set(data) - {"version", "layers"})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; accepted: version, layers")
        if data.get("version", cls.VERSION) != cls.VERSION:
            raise ConfigError(f"{where}: unsupported version {data['version']!r}; accepted: {cls.VERSION}")
        layers = data.get("layers")
        if not isinstance(layers, dict):
            raise ConfigError(f"{where}: 'layers' must be an object mapping layer names to bit widths")
        parsed: dict[str, LayerBits] = {}
        for name, entry in layers.items():
            at = f"{where}: layer {name!r}"
            if not isinstance(entry, dict):
                raise ConfigError(f"{at}: expected an object with weight_bits, act_bits and optional keep")
            extra = sorted(set(entry) - {"weight_bits", "act_bits", "keep"})
            missing = [k for k in ("weight_bits", "act_bits") if k not in entry]
            if extra or missing:
                problem = f"unknown key(s) {', '.join(extra)}" if extra else f"missing {', '.join(missing)}"
                raise ConfigError(f"{at}: {problem}; accepted: weight_bits, act_bits, keep")
            _check_layer(entry["weight_bits"], entry["act_bits"], entry.get("keep"), at)
            parsed[name] = LayerBits(entry["weight_bits"], entry["act_bits"], entry.get("keep"))
        return cls(parsed)

    def to_dict(self) -> dict[str, Any]:
        """bits.json content."""
        return {"version": self.VERSION, "layers": {name: lb.to_dict() for name, lb in self.layers.items()}}

    @classmethod
    def load(cls, path: str | os.PathLike) -> BitsAssignment:
        """Read a bits.json file (one-line ConfigError if missing, not JSON, or malformed)."""
        data = _io.read_json(path, "bits file", ConfigError)
        return cls.from_dict(data, where=str(path))

    def save(self, path: str | os.PathLike) -> Path:
        """Write bits.json atomically."""
        return _io.write_json(path, self.to_dict())

    def validate(self, graph: Graph) -> None:
        """Check this assignment against a graph: exactly its weight layers, list lengths = output channels."""
        names = graph.layer_names()
        for name in self.layers:
            if name not in names:
                raise ConfigError(f"bits: {name!r} is not a conv/linear layer of this model; "
                                  f"weight layers: {_short_list(names)}")
        missing = [n for n in names if n not in self.layers]
        if missing:
            raise ConfigError(f"bits: weight layer(s) {_short_list(missing, 6)} missing; every conv/linear "
                              "layer needs an entry")
        for name in names:
            node = graph.by_module(name)
            out = out_channels(node)
            lb = self.layers[name]
            for key, value in (("weight_bits", lb.weight_bits), ("keep", lb.keep)):
                if isinstance(value, list) and len(value) != out:
                    raise ConfigError(f"bits: layer {name!r} {key} has {len(value)} entries; "
                                      f"it has {out} output channels")


def out_channels(node: Node) -> int:
    """Number of output channels (conv) or features (linear) of a weight layer node."""
    return int(node.attrs.get("out_channels", node.attrs.get("out_features", 0)))

