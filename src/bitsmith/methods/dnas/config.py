"""DNASConfig: the search space and the search settings of the DNAS bit-width / filter-pruning search."""

from __future__ import annotations

from dataclasses import dataclass, field

from bitsmith import _config
from bitsmith.cost.differentiable import RELATIVE_TO
from bitsmith.errors import ConfigError

ESTIMATORS = ("gumbel", "score")
PENALTIES = ("target", "square")
#: Bit widths a search option may take: the core quantizers' widths without 32 (a per-channel weight quantizer
#: cannot mix full precision with quantized channels).
SEARCH_BITS = (2, 3, 4, 5, 6, 7, 8, 16)


def _check_widths(values: list[int], what: str) -> list[int]:
    widths = list(values)
    if not widths or any(isinstance(b, bool) or b not in SEARCH_BITS for b in widths) or len(set(widths)) != len(
            widths):
        raise ConfigError(f"DNAS {what} must be distinct widths from {', '.join(map(str, SEARCH_BITS))}, got "
                          f"{values!r}")
    return sorted(widths)


@dataclass
class DNASConfig(_config.JsonConfig):
    """DNAS search settings.

    budget_bops: the BOPs budget, a fraction of the model's BOPs at ``relative_to`` ("w8a8" or "fp32", every layer
    at 8/8 or 32/32 bits) or, with "absolute", BOPs per sample. weight_bits: the options each filter chooses
    from; act_bits: the options each layer's input activation chooses from; prune: add a "pruned" option per
    filter (the classifier's outputs are never pruned). estimator: how the architecture gradient is estimated:
    "score" (score function on sampled filter splits, as the reference code; the default: as accurate as
    "gumbel" in our benchmarks and its search is ~35 % cheaper) or "gumbel" (straight-through Gumbel-softmax).
    penalty: the cost term, "target" = cost_weight * (E[BOPs]/budget - 1)^2, pulling the expected cost onto the
    budget, or "square" = cost_weight * (E[BOPs]/budget)^2 (the reference code's). arch_lr: Adam learning rate of
    the architecture logits. warmup_fraction: share of the epochs that train the weights only (on sampled
    configurations) before architecture updates start. tau_start/tau_end: Gumbel temperature, annealed
    geometrically over the architecture epochs. seed: order of the validation batches.
    """

    budget_bops: float = 0.25
    relative_to: str = "w8a8"
    weight_bits: list[int] = field(default_factory=lambda: [2, 4, 8])
    act_bits: list[int] = field(default_factory=lambda: [2, 4, 8])
    prune: bool = False
    estimator: str = "score"
    penalty: str = "target"
    cost_weight: float = 1.0
    arch_lr: float = 0.1
    warmup_fraction: float = 0.2
    tau_start: float = 5.0
    tau_end: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.budget_bops, bool) or not self.budget_bops > 0:
            raise ConfigError(f"DNAS budget_bops must be positive, got {self.budget_bops!r}")
        if self.relative_to not in RELATIVE_TO:
            raise ConfigError(f"DNAS relative_to {self.relative_to!r} is not known; accepted: "
                              f"{', '.join(RELATIVE_TO)}")
        self.weight_bits = _check_widths(self.weight_bits, "weight_bits")
        self.act_bits = _check_widths(self.act_bits, "act_bits")
        if not isinstance(self.prune, bool):
            raise ConfigError(f"DNAS prune must be true or false, got {self.prune!r}")
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"DNAS estimator {self.estimator!r} is not known; accepted: {', '.join(ESTIMATORS)}")
        if self.penalty not in PENALTIES:
            raise ConfigError(f"DNAS penalty {self.penalty!r} is not known; accepted: {', '.join(PENALTIES)}")
        if not self.cost_weight >= 0 or not self.arch_lr > 0:
            raise ConfigError(f"DNAS cost_weight must be >= 0 and arch_lr > 0, got {self.cost_weight!r}, "
                              f"{self.arch_lr!r}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"DNAS warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        if not (self.tau_start > 0 and self.tau_end > 0):
            raise ConfigError(f"DNAS Gumbel temperatures must be positive, got {self.tau_start!r}, {self.tau_end!r}")
