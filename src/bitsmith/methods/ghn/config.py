"""GHNConfig (the hypernetwork's shape and the data it serves) and GHNTrainConfig (how it is trained)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bitsmith import _config
from bitsmith.errors import ConfigError

ENCODERS = ("gatedgnn", "graphormer")
QUANT_MODES = ("none", "mixed", "wNaM (fixed widths, e.g. w8a8)")
_FIXED = re.compile(r"^w(\d+)a(\d+)$")


def parse_quant(mode: str) -> tuple[int, int] | None:
    """``"none"`` -> None, ``"w8a8"`` -> (8, 8), ``"mixed"`` -> (0, 0) (widths drawn from a set); else an error."""
    from bitsmith.quant import check_bits

    if mode == "none":
        return None
    if mode == "mixed":
        return (0, 0)
    match = _FIXED.match(mode) if isinstance(mode, str) else None
    if match is None:
        raise ConfigError(f"unknown GHN quantization {mode!r}; accepted: {', '.join(QUANT_MODES)}")
    w, a = int(match.group(1)), int(match.group(2))
    check_bits(w, "weight")
    check_bits(a, "activation")
    return (w, a)


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"GHN {name} must be a positive integer, got {value!r}")


@dataclass
class GHNConfig(_config.JsonConfig):
    """The hypernetwork: encoder ("gatedgnn": GHN-2 message passing in forward then backward order;
    "graphormer": GHN-3-style attention with shortest-path biases), node embedding size ``hidden``, ``layers``
    rounds/blocks, decoder width and CP rank, the block it decodes (``max_channels`` x ``max_channels`` x
    ``max_kernel``^2, tiled for larger layers), the virtual-edge ``cutoff``, and the data its predictions serve.
    ``bit_conditioned``: the weight and activation bit width of every layer are node features (GHN-Q training with
    ``quant="mixed"``), so one hypernetwork predicts for every width.
    """

    encoder: str = "gatedgnn"
    hidden: int = 64
    layers: int = 1
    heads: int = 4
    decoder_hidden: int = 128
    rank: int = 32
    max_channels: int = 64
    max_kernel: int = 5
    cutoff: int = 50
    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 16
    bit_conditioned: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.bit_conditioned, bool):
            raise ConfigError(f"GHN bit_conditioned must be true or false, got {self.bit_conditioned!r}")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"unknown GHN encoder {self.encoder!r}; accepted: {', '.join(ENCODERS)}")
        for name in ("hidden", "layers", "heads", "decoder_hidden", "rank", "max_channels", "max_kernel", "cutoff",
                     "num_classes", "in_channels", "image_size"):
            _positive(name, getattr(self, name))
        if self.encoder == "graphormer" and self.hidden % self.heads:
            raise ConfigError(f"GHN hidden ({self.hidden}) must be a multiple of heads ({self.heads})")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the predicted networks classify."""
        return (self.in_channels, self.image_size, self.image_size)


@dataclass
class GHNTrainConfig(_config.JsonConfig):
    """GHN training: ``meta_batch`` architectures per step (each sees the same image batch), a pool of
    ``pool`` training architectures sampled on the fly from the search space (0: a new one every draw), the
    ``eval_archs`` first validation architectures scored every ``eval_every`` epochs (and after the last) with BN
    statistics recalibrated on ``bn_batches`` training batches.

    GHN-Q: ``quant`` "none" (float targets), "wNaM" (every target quantized at those widths, e.g. "w8a8") or
    "mixed" (each target's width drawn from ``bits``, 32 = float, for weights and activations alike; with
    ``per_layer`` one draw per layer); the first and last layers stay at ``first_last_bits``. "mixed" makes the
    hypernetwork bit-conditioned. ``init_from``: a GHN (file, run folder or shipped name) whose weights start
    the training. ``space``: the search space the training architectures come from.
    """

    meta_batch: int = 8
    pool: int = 0
    eval_archs: int = 8
    eval_every: int = 10
    bn_batches: int = 10
    quant: str = "none"
    bits: list[int] = field(default_factory=lambda: [32, 8, 4, 2])
    per_layer: bool = False
    first_last_bits: int | None = 8
    init_from: str | None = None
    space: str = "darts"

    def __post_init__(self) -> None:
        from bitsmith.quant import check_bits
        from bitsmith.zoo import space

        _positive("meta_batch", self.meta_batch)
        if isinstance(self.pool, bool) or not isinstance(self.pool, int) or self.pool < 0:
            raise ConfigError(f"GHN pool must be >= 0 (0: a new architecture every draw), got {self.pool!r}")
        for name in ("eval_archs", "eval_every", "bn_batches"):
            _positive(name, getattr(self, name))
        parse_quant(self.quant)
        if not isinstance(self.bits, (list, tuple)) or not self.bits:
            raise ConfigError(f"GHN bits must be a non-empty list of widths such as [32, 8, 4, 2], got {self.bits!r}")
        self.bits = [int(check_bits(b, "weight")) for b in self.bits]  # type: ignore[arg-type]
        if not isinstance(self.per_layer, bool):
            raise ConfigError(f"GHN per_layer must be true or false, got {self.per_layer!r}")
        if self.first_last_bits is not None:
            check_bits(self.first_last_bits, "first/last layer")
        space.check_space(self.space)

    @property
    def bit_conditioned(self) -> bool:
        """Whether the trained hypernetwork reads bit widths (``quant="mixed"``)."""
        return self.quant == "mixed"

    def eval_widths(self) -> list[str]:
        """The widths the evaluation architectures are scored at: FP, plus each trained width."""
        mode = parse_quant(self.quant)
        if mode is None:
            return ["FP"]
        widths = self.bits if mode == (0, 0) else [mode]
        labels = ["FP"] + [f"W{w[0]}A{w[1]}" if isinstance(w, tuple) else f"W{w}A{w}" for w in widths if w != 32]
        return list(dict.fromkeys(labels))
