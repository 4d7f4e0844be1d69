"""Quantization core: quantizers, quantized layers, model conversion, calibration (PTQ), integer reference.

A model is quantized in a few lines::

    qmodel = bitsmith.quantize(model, bitsmith.QConfig(weight_bits=4, act_bits=4))
    bitsmith.calibrate(qmodel, loader)                  # PTQ, or train qmodel (QAT)
    logits = bitsmith.quant.integer_forward(qmodel, x)  # what integer hardware computes
"""

from __future__ import annotations

from bitsmith.quant.calibrate import calibrate
from bitsmith.quant.config import QConfig
from bitsmith.quant.convert import bits_assignment, fold_batchnorm, quantize
from bitsmith.quant.integer import integer_forward
from bitsmith.quant.layers import QuantAct, QuantConv2d, QuantLinear
from bitsmith.quant.quantizers import LSQQuantizer, MinMaxQuantizer, PACTQuantizer, Quantizer, check_bits
from bitsmith.quant.ste import fake_quant, round_ste

__all__ = [
    "LSQQuantizer", "MinMaxQuantizer", "PACTQuantizer", "QConfig", "QuantAct", "QuantConv2d", "QuantLinear",
    "Quantizer", "bits_assignment", "calibrate", "check_bits", "fake_quant", "fold_batchnorm", "integer_forward",
    "quantize", "round_ste",
]
