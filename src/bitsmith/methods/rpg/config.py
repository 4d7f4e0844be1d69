"""RPGConfig: how many degrees of freedom the ring has, which layers it generates, and its seed."""

from __future__ import annotations

from dataclasses import dataclass

from bitsmith import _config
from bitsmith.errors import ConfigError

INCLUDE = ("inner", "all")


@dataclass
class RPGConfig(_config.JsonConfig):
    """RPG settings.

    dof: ring size (free scalars generating the weights); or dof_ratio: ring size as a fraction of the generated
    weights (exactly one of the two; dof_ratio 1.0 gives every generated weight its own ring entry). include:
    "inner" (every conv/linear weight but the first layer's and the last layer's, as in the reference code),
    "all", or the module names to generate. seed: the permutation and signs (stored as seed + checksum, never as
    arrays). ring_lr_gain: the ring trains at ``ring_lr_gain`` times the run's lr divided by the RMS of the
    per-layer scales (1.0: generated weights move about as fast as a plain model's weights under Adam; 0: the
    ring trains at the run's lr unscaled).
    """

    dof: int | None = None
    dof_ratio: float | None = None
    include: str | list[str] = "inner"
    seed: int = 0
    ring_lr_gain: float = 1.0

    def __post_init__(self) -> None:
        if (self.dof is None) == (self.dof_ratio is None):
            raise ConfigError("RPG needs exactly one of dof (ring size) or dof_ratio (ring size / generated "
                              f"weights), got dof={self.dof!r}, dof_ratio={self.dof_ratio!r}")
        if self.dof is not None and (isinstance(self.dof, bool) or not isinstance(self.dof, int) or self.dof < 1):
            raise ConfigError(f"RPG dof must be a positive integer, got {self.dof!r}")
        if self.dof_ratio is not None and not 0 < self.dof_ratio <= 1:
            raise ConfigError(f"RPG dof_ratio must be in (0, 1], got {self.dof_ratio!r}")
        if isinstance(self.ring_lr_gain, bool) or not self.ring_lr_gain >= 0:
            raise ConfigError(f"RPG ring_lr_gain must be >= 0, got {self.ring_lr_gain!r}")
        if isinstance(self.include, str) and self.include not in INCLUDE:
            raise ConfigError(f"RPG include {self.include!r} is not known; accepted: {', '.join(INCLUDE)}, or a "
                              "list of module names")
        if isinstance(self.include, list) and (not self.include or not all(isinstance(n, str) for n in self.include)):
            raise ConfigError(f"RPG include must name at least one module, got {self.include!r}")
