"""The cost model shared by every method: MACs, BOPs, weight memory, activation peak, parameters and DoF,
exact per layer (``model_cost``) and differentiable (``DifferentiableCost``) from one formula.

    report = bitsmith.cost.model_cost(model, (3, 32, 32), weight_bits=4, act_bits=4)
    print(report.summary())
"""

from __future__ import annotations

from bitsmith.cost.bits import BitsAssignment, LayerBits, check_bits
from bitsmith.cost.differentiable import DifferentiableCost
from bitsmith.cost.exact import model_cost
from bitsmith.cost.report import CostReport, LayerCost

__all__ = ["BitsAssignment", "CostReport", "DifferentiableCost", "LayerBits", "LayerCost", "check_bits",
           "model_cost"]
