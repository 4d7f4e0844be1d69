"""QConfig: how :func:`bitsmith.quantize` converts a model (bit widths, method, granularity, per-layer overrides).

A plain dataclass that round-trips JSON (``QConfig.load``/``save``) and accepts the bits.json format
(``QConfig.from_bits`` or ``bits_file``) for per-layer and per-output-channel weight bit widths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from bitsmith import _config
from bitsmith.cost.bits import BitsAssignment
from bitsmith.errors import ConfigError
from bitsmith.quant.quantizers import INITS, METHODS, check_bits

OVERRIDE_KEYS = ("weight_bits", "act_bits", "method", "per_channel", "keep")


def check_override(name: str, entry: Any) -> dict[str, Any]:
    """Validate one per-layer override (keys weight_bits, act_bits, method, per_channel, keep) and return it."""
    if not isinstance(entry, dict):
        raise ConfigError(f"override for '{name}' must be an object with keys {', '.join(OVERRIDE_KEYS)}, "
                          f"got {entry!r}")
    unknown = sorted(set(entry) - set(OVERRIDE_KEYS))
    if unknown:
        raise ConfigError(f"override for '{name}': unknown key(s) {', '.join(unknown)}; accepted: "
                          f"{', '.join(OVERRIDE_KEYS)}")
    bits = entry.get("weight_bits")
    if isinstance(bits, list) and bits:  # per output channel: lengths are checked against the layer at conversion
        for b in bits:
            check_bits(b, "weight", name)
    elif "weight_bits" in entry:
        check_bits(bits, "weight", name)
    if "act_bits" in entry:
        check_bits(entry["act_bits"], "activation", name)
    if "method" in entry and entry["method"] not in METHODS:
        raise ConfigError(f"override for '{name}': unknown method {entry['method']!r}; accepted: "
                          f"{', '.join(METHODS)}")
    if "per_channel" in entry and not isinstance(entry["per_channel"], bool):
        raise ConfigError(f"override for '{name}': per_channel must be true or false, got {entry['per_channel']!r}")
    keep = entry.get("keep")
    if keep is not None and (not isinstance(keep, list) or not keep
                             or any(isinstance(v, bool) or v not in (0, 1) for v in keep)):
        raise ConfigError(f"override for '{name}': keep must be a list of 0/1 per output channel, got {keep!r}")
    return dict(entry)


@dataclass
class QConfig(_config.JsonConfig):
    """Quantization settings for :func:`bitsmith.quantize`.

    weight_bits/act_bits: default bit widths (2..8, 16; 32 = float). per_channel: one weight scale per output
    channel. method: "lsq" (learned scales), "pact" (learned activation clipping; LSQ weights) or "minmax"
    (observers, for PTQ). first_last_bits: bit width of the first and last weight layers (weights and input
    activations; None = like the rest). fold_bn: fold each BatchNorm into the preceding conv (frozen statistics).
    weight_symmetric/act_symmetric: zero point 0. init: scale initialisation from the first batch ("mse" or
    "minmax"). overrides: per module name, any of weight_bits (int or one per output channel), act_bits,
    method, per_channel, keep. bits_file: a bits.json applied before the overrides. residual_bits: also quantize
    every input of each residual add (a QuantAct at that width, signedness from data), and quantize each tensor once
    (layers reading one tensor at one width share their input quantizer; an add input a layer also reads at this
    width uses that layer's), so that integer runtimes run the convs and the residual sums in integer arithmetic
    (None: residual sums stay float).
    """

    weight_bits: int = 8
    act_bits: int = 8
    per_channel: bool = True
    method: Literal["lsq", "pact", "minmax"] = "lsq"
    first_last_bits: int | None = 8
    fold_bn: bool = False
    weight_symmetric: bool = True
    act_symmetric: bool = True
    init: Literal["mse", "minmax"] = "mse"
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    bits_file: str | None = None
    residual_bits: int | None = None

    def __post_init__(self) -> None:
        check_bits(self.weight_bits, "weight")
        check_bits(self.act_bits, "activation")
        if self.first_last_bits is not None:
            check_bits(self.first_last_bits, "first/last layer")
        if self.method not in METHODS:
            raise ConfigError(f"unknown quantization method {self.method!r}; accepted: {', '.join(METHODS)}")
        if self.init not in INITS:
            raise ConfigError(f"unknown scale initialisation {self.init!r}; accepted: {', '.join(INITS)}")
        for key in ("per_channel", "fold_bn", "weight_symmetric", "act_symmetric"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"QConfig.{key} must be true or false, got {getattr(self, key)!r}")
        if not isinstance(self.overrides, dict):
            raise ConfigError(f"QConfig.overrides must map module names to settings, got {self.overrides!r}")
        self.overrides = {name: check_override(name, entry) for name, entry in self.overrides.items()}
        if self.residual_bits is not None:
            check_bits(self.residual_bits, "residual activation")
        if self.bits_file is not None and not isinstance(self.bits_file, (str, os.PathLike)):
            raise ConfigError(f"QConfig.bits_file must be a path to a bits.json, got {self.bits_file!r}")
        if self.bits_file is not None:
            self.bits_file = os.fspath(self.bits_file)

    @classmethod
    def from_bits(cls, bits: BitsAssignment | str | os.PathLike | dict[str, Any], **kwargs: Any) -> QConfig:
        """A QConfig whose overrides are the layers of a ``BitsAssignment`` (or a bits.json path / dict);
        ``kwargs`` set the other fields. ``first_last_bits`` defaults to None so the file's widths win."""
        if isinstance(bits, (str, os.PathLike)):
            bits = BitsAssignment.load(bits)
        elif isinstance(bits, dict):
            bits = BitsAssignment.from_dict(bits)
        if not isinstance(bits, BitsAssignment):
            raise ConfigError(f"QConfig.from_bits expects a BitsAssignment, a bits.json path or its dict, got "
                              f"{type(bits).__name__}")
        overrides = {name: lb.to_dict() for name, lb in bits.layers.items()}
        overrides.update(kwargs.pop("overrides", {}))
        kwargs.setdefault("first_last_bits", None)
        return cls(overrides=overrides, **kwargs)
