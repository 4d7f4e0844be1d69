"""GHN-Q: quantized targets for the hypernetwork, in training (bit widths drawn per architecture or per layer,
fake-quantized forward through the core's quantizers) and in prediction (a quantized model with predicted
parameters and calibrated ranges).

A quantized target is built by :func:`bitsmith.quantize` (LSQ quantizers, per-channel weights, first and last layer
at ``first_last_bits``), so the network the hypernetwork is trained through is the one a user gets. In training
every quantizer takes its range from the tensor it first sees (the predicted weight, the step's activations) by a
coarse MSE search, fixed for that step; in prediction :func:`bitsmith.calibrate` sets the ranges from a few
training batches (MSE observer) and BN statistics are recalibrated under the quantized forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bitsmith.engine import recalibrate_bn, seeded_batches
from bitsmith.errors import ConfigError
from bitsmith.methods.ghn.config import parse_quant
from bitsmith.methods.ghn.encoding import Encoding
from bitsmith.methods.ghn.model import GraphHyperNetwork
from bitsmith.methods.ghn.predict import encode_for, predict_many
from bitsmith.quant import QConfig, Quantizer, bits_assignment, calibrate, quantize

FP = 32
#: Coarse range search while training (the ranges are re-estimated every step): values per row, clipping ratios.
TRAIN_INIT_SAMPLE, TRAIN_INIT_GRID = 4096, 20


@dataclass(frozen=True)
class Widths:
    """The bit widths of one quantized target: weights and activations (32 = float), per layer when given."""

    weight: int
    act: int
    per_layer: dict[str, int] | None = None

    @property
    def label(self) -> str:
        """FP, W8A8, W4A4, ... (mixed per-layer widths: "mixed")."""
        if self.per_layer:
            return "mixed"
        return "FP" if self.weight == FP and self.act == FP else f"W{self.weight}A{self.act}"


def parse_widths(label: str) -> Widths:
    """``"FP"`` / ``"fp32"`` / ``"w4a4"`` (any case) as :class:`Widths`."""
    text = label.strip().lower()
    if text in ("fp", "fp32", "float"):
        return Widths(FP, FP)
    try:
        fixed = parse_quant(text) if text not in ("none", "mixed") else None
    except ConfigError:
        fixed = None
    if fixed is None:
        raise ConfigError(f"unknown bit widths {label!r}; accepted: FP or WnAm such as W4A4")
    return Widths(*fixed)


def target_qconfig(widths: Widths, first_last_bits: int | None = 8) -> QConfig | None:
    """The QConfig of a quantized target (LSQ, per-channel weights; first/last layer at ``first_last_bits``
    unless per-layer widths name them), or None at FP."""
    if widths.weight == FP and widths.act == FP and not widths.per_layer:
        return None
    overrides = {name: {"weight_bits": b, "act_bits": b} for name, b in (widths.per_layer or {}).items()}
    return QConfig(weight_bits=widths.weight, act_bits=widths.act, first_last_bits=first_last_bits,
                   overrides=overrides)


def quantize_target(model: nn.Module, widths: Widths, input_shape: Sequence[int],
                    first_last_bits: int | None = 8) -> nn.Module:
    """``model`` itself at FP, else its quantized copy per :func:`target_qconfig`."""
    qcfg = target_qconfig(widths, first_last_bits)
    return model if qcfg is None else quantize(model, qcfg, example_input_shape=tuple(input_shape))


def layer_widths(model: nn.Module) -> tuple[dict[str, int], dict[str, int]]:
    """Per conv/linear layer: weight and input-activation bit widths (32 for a float model; per-channel weight
    widths count as their widest)."""
    try:
        layers = bits_assignment(model).layers
    except ConfigError:
        names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        return dict.fromkeys(names, FP), dict.fromkeys(names, FP)
    weight = {n: max(lb.weight_bits) if isinstance(lb.weight_bits, list) else int(lb.weight_bits)
              for n, lb in layers.items()}
    return weight, {n: int(lb.act_bits) for n, lb in layers.items()}


def conditioned(encoding: Encoding, ghn: GraphHyperNetwork, target: nn.Module) -> Encoding:
    """``encoding`` with ``target``'s widths as node features when ``ghn`` is bit-conditioned, else unchanged."""
    return encoding.with_bits(*layer_widths(target)) if ghn.config.bit_conditioned else encoding


def training_target(model: nn.Module, widths: Widths, input_shape: Sequence[int],
                    first_last_bits: int | None) -> nn.Module:
    """The quantized copy one training step runs: quantizer ranges from the first tensors they see (coarse MSE
    search) and frozen (the hypernetwork's parameters are the only ones trained)."""
    target = quantize_target(model, widths, input_shape, first_last_bits)
    if target is model:
        return model
    for module in target.modules():
        if isinstance(module, Quantizer):
            module.init_sample, module.init_grid = TRAIN_INIT_SAMPLE, TRAIN_INIT_GRID
            for param in module.parameters(recurse=False):
                param.requires_grad_(False)
    return target


def sample_widths(mode: tuple[int, int], bits: Sequence[int], per_layer: bool, layers: Sequence[str]) -> Widths:
    """The widths of one training target (global torch RNG): fixed, one width of ``bits`` for weights and
    activations alike, or (``per_layer``) one per layer other than the first and last."""
    if mode != (0, 0):
        return Widths(*mode)
    if not per_layer:
        b = int(bits[int(torch.randint(len(bits), ()))])
        return Widths(b, b)
    inner = list(layers)[1:-1]
    if not inner:
        return Widths(FP, FP)
    draws = torch.randint(len(bits), (len(inner),)).tolist()
    return Widths(FP, FP, {name: int(bits[i]) for name, i in zip(inner, draws, strict=True)})


def predict_quantized(model: nn.Module, ghn: GraphHyperNetwork, widths: Widths | str, data: Any, *,
                      input_shape: Sequence[int] | None = None, first_last_bits: int | None = 8,
                      calib_batches: int = 8, bn_batches: int = 10, batch_size: int = 64, seed: int = 0,
                      encoding: Encoding | None = None) -> nn.Module:
    """``model`` (a float model, left untouched at widths other than FP) with predicted parameters at ``widths``:
    quantized per :func:`quantize_target`, parameters predicted (bit-conditioned when the GHN is), activation and
    weight ranges calibrated on ``calib_batches`` training batches of ``data`` (MSE observer), BN statistics
    recalibrated on ``bn_batches`` batches under the quantized forward. Returns the model ready for evaluation.
    """
    widths = parse_widths(widths) if isinstance(widths, str) else widths
    encoding = encoding if encoding is not None else encode_for(model, ghn, input_shape)
    shape = tuple(input_shape) if input_shape is not None else ghn.config.input_shape
    target = quantize_target(model, widths, shape, first_last_bits)
    predict_many([target], ghn, [conditioned(encoding, ghn, target)])
    return calibrate_target(target, data, calib_batches=calib_batches, bn_batches=bn_batches,
                            batch_size=batch_size, seed=seed)


def calibrate_target(target: nn.Module, data: Any, *, calib_batches: int = 8, bn_batches: int = 10,
                     batch_size: int = 64, seed: int = 0) -> nn.Module:
    """Make a model with set weights ready for evaluation (in place; returned in eval mode): a quantized one gets
    BN statistics from a float pass, ranges calibrated on ``calib_batches`` training batches (MSE observer) and BN
    statistics again under the quantized forward; a float one gets its BN statistics recalibrated."""
    if any(isinstance(m, Quantizer) for m in target.modules()):
        recalibrate_bn(target, data, bn_batches, batch_size, seed)  # activation ranges not set yet: a float pass
        calibrate(target, seeded_batches(data, calib_batches, batch_size, seed + 1), num_batches=calib_batches,
                  observer="mse", seed=seed)
    recalibrate_bn(target, data, bn_batches, batch_size, seed)
    return target.eval()


__all__ = ["FP", "Widths", "calibrate_target", "conditioned", "layer_widths", "parse_widths", "predict_quantized",
           "quantize_target", "sample_widths", "target_qconfig", "training_target"]
