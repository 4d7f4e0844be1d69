"""GHNConfig (the hypernetwork's shape and the data it serves) and GHNTrainConfig (how it is trained)."""

from __future__ import annotations

from dataclasses import dataclass

from bitsmith import _config
from bitsmith.errors import ConfigError

ENCODERS = ("gatedgnn", "graphormer")


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"GHN {name} must be a positive integer, got {value!r}")


@dataclass
class GHNConfig(_config.JsonConfig):
    """The hypernetwork: encoder ("gatedgnn": GHN-2 message passing in forward then backward order;
    "graphormer": GHN-3-style attention with shortest-path biases), node embedding size ``hidden``, ``layers``
    rounds/blocks, decoder width and CP rank, the block it decodes (``max_channels`` x ``max_channels`` x
    ``max_kernel``^2, tiled for larger layers), the virtual-edge ``cutoff``, and the data its predictions serve.
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

    def __post_init__(self) -> None:
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
    """

    meta_batch: int = 8
    pool: int = 0
    eval_archs: int = 8
    eval_every: int = 10
    bn_batches: int = 10

    def __post_init__(self) -> None:
        _positive("meta_batch", self.meta_batch)
        if isinstance(self.pool, bool) or not isinstance(self.pool, int) or self.pool < 0:
            raise ConfigError(f"GHN pool must be >= 0 (0: a new architecture every draw), got {self.pool!r}")
        for name in ("eval_archs", "eval_every", "bn_batches"):
            _positive(name, getattr(self, name))
