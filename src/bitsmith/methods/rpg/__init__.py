"""RPG (Wang et al., Recurrent Parameter Generators, arXiv 2107.07110): every chosen weight of any CNN read from
one small ring of free parameters through a fixed random permutation and signs, so the degrees of freedom are
decoupled from the parameter count.

    net = rpg.wrap(model, dof_ratio=0.003)            # the ring holds 0.3 % as many scalars as it generates
    bitsmith.train(cfg, model=net, callbacks=[rpg.RPGCallback(net, rpg.RPGConfig(dof_ratio=0.003))])
    plain = rpg.materialize(net)                      # ordinary layers holding the generated weights

Formulation: docs/METHODS.md.
"""

from __future__ import annotations

from bitsmith.methods.rpg.callback import RPGCallback
from bitsmith.methods.rpg.compress import (
    compression_study,
    prune_ring,
    prune_weights,
    quantize_ring,
    storage_bits,
    to_core,
)
from bitsmith.methods.rpg.config import INCLUDE, RPGConfig
from bitsmith.methods.rpg.ring import Ring, generated_layers, get_ring, map_checksum, materialize, ring_map, wrap
from bitsmith.methods.rpg.sweep import loglinear_fit

__all__ = ["INCLUDE", "RPGCallback", "RPGConfig", "Ring", "compression_study", "generated_layers", "get_ring",
           "loglinear_fit", "map_checksum", "materialize", "prune_ring", "prune_weights", "quantize_ring", "ring_map",
           "storage_bits", "to_core", "wrap"]
