"""DirectQConfig: the settings of :func:`bitsmith.methods.directq.prepare`, a dataclass that round-trips JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bitsmith import _config
from bitsmith.errors import ConfigError
from bitsmith.methods.directq.quantizers import ACT_GRAD_SCALES, ROUNDINGS
from bitsmith.quant import QConfig

#: Which layers' inputs the channel-aware activation quantizer serves: every quantized layer's, or only convs'
#: (a linear layer's input features then keep the core's LSQ quantizer).
ACT_LAYERS = ("all", "conv")

#: Ablation names -> (direct weights, channel-aware activations).
IDEAS = {"both": (True, True), "weights": (True, False), "acts": (False, True), "none": (False, False)}


@dataclass
class DirectQConfig(_config.JsonConfig):
    """DirectQ settings.

    weight_bits/act_bits: 2..8 (16; 32 = float). per_channel: one set of weight levels per output channel
    (False: per layer). first_last_bits: bit width of the first and last layers, as in the quantization core
    (None: like the rest). direct_weights: idea 1 (False: the core's LSQ weights). channel_aware_acts: idea 2
    (False: the core's LSQ activations). step_gain: multiplies each proposed weight step before it is rounded
    onto the level grid. rounding: how ("stochastic": unbiased per weight; "greedy": per layer, the weights
    with the largest proposed steps move, as many as the steps add up to; "residual": nearest code, and what
    rounding cut off, under half a level, is carried to the next step). act_loss_weight, act_trim,
    act_sample: weight of the channel-aware objective, fraction of worst channels it ignores, examples of each
    batch it is measured on. act_grad_scale: "lsq" gives the objective's step-size gradient LSQ's gradient
    scale, as the task loss's has ("none": unscaled, the rule before 2026-12-07). act_layers: whose inputs get
    the channel-aware quantizer ("all" quantized layers, or "conv" only: linear inputs keep the core's LSQ).
    seed: stochastic rounding seed. overrides: per-layer settings passed to the core QConfig (bit widths, keep
    masks).
    """

    weight_bits: int = 4
    act_bits: int = 4
    per_channel: bool = True
    first_last_bits: int | None = 8
    direct_weights: bool = True
    channel_aware_acts: bool = True
    step_gain: float = 1.0
    rounding: str = "residual"
    act_loss_weight: float = 0.1
    act_trim: float = 0.25
    act_sample: int = 8
    act_grad_scale: str = "lsq"
    act_layers: str = "all"
    seed: int = 0
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.qconfig()  # validates bit widths and overrides with the core's messages
        if not self.step_gain > 0:
            raise ConfigError(f"DirectQConfig.step_gain must be positive, got {self.step_gain!r}")
        if self.rounding not in ROUNDINGS:
            raise ConfigError(f"DirectQConfig.rounding {self.rounding!r} is not known; accepted: "
                              f"{', '.join(ROUNDINGS)}")
        if not self.act_loss_weight >= 0:
            raise ConfigError(f"DirectQConfig.act_loss_weight must be >= 0, got {self.act_loss_weight!r}")
        if not 0.0 <= self.act_trim < 1.0:
            raise ConfigError(f"DirectQConfig.act_trim must be in [0, 1), got {self.act_trim!r}")
        if self.act_grad_scale not in ACT_GRAD_SCALES:
            raise ConfigError(f"DirectQConfig.act_grad_scale {self.act_grad_scale!r} is not known; accepted: "
                              f"{', '.join(ACT_GRAD_SCALES)}")
        if self.act_layers not in ACT_LAYERS:
            raise ConfigError(f"DirectQConfig.act_layers {self.act_layers!r} is not known; accepted: "
                              f"{', '.join(ACT_LAYERS)}")
        if self.act_sample < 1:
            raise ConfigError(f"DirectQConfig.act_sample must be >= 1, got {self.act_sample!r}")

    @classmethod
    def ablation(cls, ideas: str, **kwargs: Any) -> DirectQConfig:
        """A config with the ideas named by ``ideas``: "both", "weights", "acts" or "none" (plain LSQ)."""
        if ideas not in IDEAS:
            raise ConfigError(f"unknown DirectQ ablation {ideas!r}; accepted: {', '.join(IDEAS)}")
        weights, acts = IDEAS[ideas]
        return cls(direct_weights=weights, channel_aware_acts=acts, **kwargs)

    def qconfig(self) -> QConfig:
        """The core QConfig DirectQ starts from (LSQ quantizers, which DirectQ's then replace)."""
        return QConfig(weight_bits=self.weight_bits, act_bits=self.act_bits, per_channel=self.per_channel,
                       method="lsq", first_last_bits=self.first_last_bits, overrides=self.overrides)
