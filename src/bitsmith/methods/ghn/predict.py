"""Prediction: fill a model's parameters from the hypernetwork, for one model or many at once."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bitsmith import zoo
from bitsmith.errors import BitsmithError
from bitsmith.methods.ghn.encoding import Encoding, encode
from bitsmith.methods.ghn.model import GraphHyperNetwork


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(v) for v in shape)


def check_data(ghn: GraphHyperNetwork, what: str, shape: Sequence[int] | None, classes: int | None) -> None:
    """Refuse ``what`` (a model or a dataset) whose (C, H, W) input ``shape`` or number of ``classes`` differs from
    what ``ghn`` was trained for; None skips that check."""
    cfg = ghn.config
    if (shape is not None and tuple(shape) != cfg.input_shape) or (classes is not None and classes != cfg.num_classes):
        has = ", ".join(part for part in (f"{_shape_text(shape)} inputs" if shape is not None else "",
                                          f"{classes} classes" if classes is not None else "") if part)
        raise BitsmithError(f"this GHN was trained for {_shape_text(cfg.input_shape)} images and {cfg.num_classes} "
                            f"classes; {what} has {has} (use a GHN trained on that data)")


def check_compatible(model: nn.Module, ghn: GraphHyperNetwork, input_shape: Sequence[int] | None = None) -> None:
    """Refuse a model whose input shape or number of classes differs from what ``ghn`` was trained for."""
    outputs = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    check_data(ghn, "the model", zoo.input_shape(model, input_shape), outputs[-1] if outputs else None)


def encode_for(model: nn.Module, ghn: GraphHyperNetwork, input_shape: Sequence[int] | None = None) -> Encoding:
    """The model's encoding for ``ghn`` after checking that the GHN serves its input shape and classes; a
    bit-conditioned GHN gets 32-bit (float) widths, which :func:`~bitsmith.methods.ghn.predict_quantized` replaces
    by the quantized model's."""
    check_compatible(model, ghn, input_shape)
    encoding = encode(model, ghn.config.input_shape, cutoff=ghn.config.cutoff)
    return encoding.with_bits(32, 32) if ghn.config.bit_conditioned else encoding


@torch.no_grad()
def predict_many(models: Sequence[nn.Module], ghn: GraphHyperNetwork,
                 encodings: Sequence[Encoding] | None = None) -> list[nn.Module]:
    """Fill the parameters of every model in one batched hypernetwork pass (in place); returns the models."""
    encodings = list(encodings) if encodings is not None else [encode_for(m, ghn) for m in models]
    was_training = ghn.training
    ghn.eval()
    try:
        predicted = ghn(encodings)
    finally:
        ghn.train(was_training)
    for model, params in zip(models, predicted, strict=True):
        named = dict(model.named_parameters())
        for name, value in params.items():
            named[name].copy_(value.to(named[name].device, named[name].dtype))
    return list(models)


def predict(model: nn.Module, ghn: GraphHyperNetwork, input_shape: Sequence[int] | None = None) -> nn.Module:
    """Fill all of ``model``'s parameters with the hypernetwork's prediction (in place) and return the model.

    BatchNorm running statistics are not predicted: recalibrate them on training batches before evaluating
    (``bitsmith.engine.recalibrate_bn``), the evaluation protocol of every GHN figure.
    """
    return predict_many([model], ghn, [encode_for(model, ghn, input_shape)])[0]


__all__ = ["check_compatible", "check_data", "encode_for", "predict", "predict_many"]
