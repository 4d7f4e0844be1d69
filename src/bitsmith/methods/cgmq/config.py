"""CGMQConfig: the settings of CGMQ, a dataclass that round-trips JSON."""

from __future__ import annotations

from dataclasses import dataclass, field

from bitsmith import _config
from bitsmith.cost.differentiable import RELATIVE_TO
from bitsmith.errors import ConfigError
from bitsmith.quant.quantizers import SUPPORTED_BITS

GRANULARITIES = ("layer", "channel", "weight")
GATE_STEPS = ("rms", "max")


@dataclass
class CGMQConfig(_config.JsonConfig):
    """CGMQ settings.

    bop_budget: the BOP bound, as a fraction of the model's BOPs at ``relative_to`` ("w8a8": every layer at 8/8
    bits; "fp32": 32/32) or, with "absolute", in BOPs per sample. granularity: weight gates per "layer", per
    output "channel" or per "weight" (activation gates are per layer). bits: the nested bit widths the gates
    choose from, increasing (32 = full precision). gate_init: starting gate value (> 0: every refinement on).
    gate_lr: learning rate of the gates. factor: CGGD's ratio (> 1) of the constraint direction's norm to the
    loss gradient's norm on the gates while the bound is violated. ref_bits: the width whose MSE-optimal range
    initialises the step sizes. gate_step: "rms" scales the gates' momentum so the root-mean-square move is
    ``gate_lr`` (one gate at most 5x that), "max" so the largest move is ``gate_lr`` (the rule before 2026-12-02;
    most gates then barely move). active_only: the constraint direction pushes only gates that are on (False: also
    those already off, the rule before 2026-12-02, which dilutes the push). fill: when the gates freeze below
    the bound, switch on the off gates nearest to on while the bound holds (the budget is spent, not left).
    """

    bop_budget: float = 1.0
    relative_to: str = "w8a8"
    granularity: str = "channel"
    bits: list[int] = field(default_factory=lambda: [2, 4, 8, 16, 32])
    gate_init: float = 0.5
    gate_lr: float = 1e-2
    factor: float = 2.0
    ref_bits: int = 4
    gate_momentum: float = 0.9
    freeze_fraction: float = 0.3
    gate_step: str = "rms"
    active_only: bool = True
    fill: bool = True

    def __post_init__(self) -> None:
        if not self.bop_budget > 0:
            raise ConfigError(f"CGMQ bop_budget must be positive, got {self.bop_budget!r}")
        if self.relative_to not in RELATIVE_TO:
            raise ConfigError(f"CGMQ relative_to {self.relative_to!r} is not known; accepted: {', '.join(RELATIVE_TO)}")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"CGMQ granularity {self.granularity!r} is not known; accepted: "
                              f"{', '.join(GRANULARITIES)}")
        bits = list(self.bits)
        if (len(bits) < 2 or any(isinstance(b, bool) or b not in SUPPORTED_BITS for b in bits)
                or bits != sorted(set(bits))):
            raise ConfigError(f"CGMQ bits must be at least two increasing widths from 2..8, 16, 32, got {bits!r}")
        self.bits = bits
        if not self.gate_init > 0 or not self.gate_lr > 0:
            raise ConfigError(f"CGMQ gate_init and gate_lr must be positive, got {self.gate_init!r}, "
                              f"{self.gate_lr!r}")
        if not 0.0 <= self.freeze_fraction < 1.0:
            raise ConfigError(f"CGMQ freeze_fraction must be in [0, 1), got {self.freeze_fraction!r}")
        if not 0.0 <= self.gate_momentum < 1.0:
            raise ConfigError(f"CGMQ gate_momentum must be in [0, 1), got {self.gate_momentum!r}")
        if self.gate_step not in GATE_STEPS:
            raise ConfigError(f"CGMQ gate_step {self.gate_step!r} is not known; accepted: {', '.join(GATE_STEPS)}")
        if not self.factor > 1:
            raise ConfigError(f"CGMQ factor must be greater than 1 (CGGD), got {self.factor!r}")
