"""CGMQ (Van Baelen & Karsmakers, arXiv 2409.20138): learned mixed-precision bit widths through gates, under a
BOP bound enforced the Constraint Guided Gradient Descent way and guaranteed on the final model, in one run.

    qmodel = cgmq.prepare(model, cgmq.CGMQConfig(bop_budget=0.25, relative_to="w8a8"), input_shape)
    bitsmith.train(cfg, model=qmodel, callbacks=[cgmq.CGMQCallback(qmodel, config, input_shape)])
    core = cgmq.to_core(qmodel, input_shape)     # core layers at the learned widths

Formulation: docs/METHODS.md.
"""

from __future__ import annotations

from bitsmith.methods.cgmq.callback import CGMQCallback, write_artifacts
from bitsmith.methods.cgmq.config import GRANULARITIES, RELATIVE_TO, CGMQConfig
from bitsmith.methods.cgmq.constraint import BopConstraint, gate_parameters, gated_layers
from bitsmith.methods.cgmq.gates import GatedQuantizer
from bitsmith.methods.cgmq.prepare import prepare, to_core

__all__ = ["GRANULARITIES", "RELATIVE_TO", "BopConstraint", "CGMQCallback", "CGMQConfig", "GatedQuantizer",
           "gate_parameters", "gated_layers", "prepare", "to_core", "write_artifacts"]
