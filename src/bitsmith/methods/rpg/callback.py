"""RPG's training hook: the ring's own learning rate."""

from __future__ import annotations

from typing import Any

from torch import nn

from bitsmith.engine import Callback
from bitsmith.methods.rpg.config import RPGConfig
from bitsmith.methods.rpg.ring import get_ring


class RPGCallback(Callback):
    """Puts the ring in its own optimizer group at ``ring_lr_gain`` times the run's lr divided by the RMS of the
    per-layer scales: under Adam a ring entry moves by about lr per step, and a generated weight by that times its
    layer's scale (~0.06 for a 3x3x64 conv), so without this the generated layers would learn ~20x slower than a
    plain model's."""

    def __init__(self, model: nn.Module, config: RPGConfig) -> None:
        self.ring = get_ring(model)
        self.config = config

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]] | None:
        if self.config.ring_lr_gain == 0:
            return None
        return [{"params": [self.ring.ring], "lr_scale": self.config.ring_lr_gain / self.ring.rms_scale()}]
