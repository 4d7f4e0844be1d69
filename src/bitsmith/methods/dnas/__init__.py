"""DNAS bit-width and filter-pruning search (Zur et al., arXiv 1904.09872, on DARTS, Liu et al. arXiv 1806.09055):
per-filter weight widths (and optionally pruned filters) and per-layer activation widths searched under a BOPs
budget, then derived, checked with the exact cost, repaired if over, and retrained.

    smodel = dnas.prepare(model, dnas.DNASConfig(budget_bops=0.25, prune=True), input_shape)
    bitsmith.train(TrainConfig(val=True, ...), model=smodel, callbacks=[dnas.DNASCallback(smodel, config, shape)])
    result = dnas.derive(dnas.SearchSpace(smodel, input_shape, config))   # result.bits is the bits.json

``bitsmith search`` runs the three phases; ``bitsmith grid`` is the random-configuration baseline and its variance
study (:mod:`bitsmith.methods.dnas.grid`). Formulation: docs/METHODS.md.
"""

from __future__ import annotations

from bitsmith.methods.dnas import grid
from bitsmith.methods.dnas.callback import DNASCallback, write_trajectory
from bitsmith.methods.dnas.config import ESTIMATORS, PENALTIES, RELATIVE_TO, SEARCH_BITS, DNASConfig
from bitsmith.methods.dnas.derive import Derivation, derive, repair
from bitsmith.methods.dnas.space import (
    Choice,
    SearchSpace,
    arch_parameters,
    has_batchnorm,
    prepare,
    search_layers,
)

__all__ = ["ESTIMATORS", "PENALTIES", "RELATIVE_TO", "SEARCH_BITS", "Choice", "DNASCallback", "DNASConfig",
           "Derivation", "SearchSpace", "arch_parameters", "derive", "grid", "has_batchnorm", "prepare", "repair",
           "search_layers", "write_trajectory"]
