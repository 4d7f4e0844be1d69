"""Post-training quantization: ``calibrate`` sets every quantizer's range from a few batches of data.

Activation statistics are collected in one float pass (every quantizer passes its input through unchanged
while it records it), in eval mode without gradients; then each activation quantizer's range is set by the
observer, and each weight quantizer's from its weight tensor (MSE search with observer "mse", min/max
otherwise: per-channel weights have too few values for a useful percentile).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from bitsmith.errors import ConfigError
from bitsmith.quant.layers import _QuantLayer
from bitsmith.quant.observers import OBSERVERS, estimate_range, minmax_range, mse_range, percentile_range, rows
from bitsmith.quant.quantizers import Quantizer

#: Values kept per quantizer and batch (a seeded random subsample) for the percentile and MSE observers.
SAMPLES_PER_BATCH = 1 << 14


class _ActivationStats:
    """Running min/max of everything a quantizer sees, plus a seeded subsample of its values."""

    def __init__(self, keep_samples: bool, seed: int) -> None:
        self.keep_samples = keep_samples
        self.generator = torch.Generator().manual_seed(seed)
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None
        self.samples: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1).float()
        if flat.numel() == 0:
            return
        lo, hi = torch.aminmax(flat)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)
        if self.keep_samples:
            if flat.numel() > SAMPLES_PER_BATCH:
                index = torch.randint(flat.numel(), (SAMPLES_PER_BATCH,), generator=self.generator)
                flat = flat[index.to(flat.device)]
            self.samples.append(flat.clone())

    def range(self, quantizer: Quantizer, observer: str, percentile: float) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.lo is not None and self.hi is not None
        lo, hi = self.lo.reshape(1), self.hi.reshape(1)
        if quantizer.signed is None:
            quantizer._resolve_signed(bool(lo.item() < 0))
        if observer == "minmax":
            return lo, hi
        sample = torch.cat(self.samples).reshape(1, -1)
        if observer == "percentile":
            return percentile_range(sample, percentile)
        qmin, qmax = quantizer._bounds()
        return mse_range(sample, qmin, qmax, quantizer.symmetric, lo=lo, hi=hi)


def _inputs(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise ConfigError(f"calibrate: each batch must be a tensor or an (inputs, targets) pair, got "
                      f"{type(batch).__name__}")


def _calibrate_weights(qmodel: nn.Module, observer: str) -> None:
    for module in qmodel.modules():
        if isinstance(module, _QuantLayer) and not module.weight_quant.is_passthrough:
            quant = module.weight_quant
            x2d = rows(module.weight, quant.channels is not None)
            if observer == "mse":
                qmin, qmax = quant._bounds()
                lo, hi = estimate_range(x2d, "mse", qmin, qmax, quant.symmetric)
            else:
                lo, hi = minmax_range(x2d)
            quant.set_range(lo, hi)


def calibrate(qmodel: nn.Module, loader: Iterable[Any], num_batches: int = 8, observer: str = "minmax",
              percentile: float = 99.99, weights: bool = True, seed: int = 0) -> nn.Module:
    """Set the ranges of ``qmodel``'s quantizers from ``num_batches`` batches of ``loader`` and return it.

    ``observer``: "minmax" (the full observed range), "percentile" (``100 - p`` to ``p`` percent of the values,
    clipping rare outliers) or "mse" (the clipping of the observed range that minimises quantization MSE).
    ``weights=False`` keeps the weight scales (e.g. after QAT). Batches are tensors or (inputs, targets) pairs.
    """
    if observer not in OBSERVERS:
        raise ConfigError(f"unknown observer {observer!r}; accepted: {', '.join(OBSERVERS)}")
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ConfigError(f"num_batches must be a positive integer, got {num_batches!r}")
    if not 50.0 < percentile <= 100.0:
        raise ConfigError(f"percentile must be in (50, 100], got {percentile!r}")
    quantizers = [m for m in qmodel.modules() if isinstance(m, Quantizer)]
    if not quantizers:
        raise ConfigError("calibrate: the model has no quantizers; run bitsmith.quantize first")
    acts = [q for q in quantizers if q.role == "activation" and not q.is_passthrough]
    stats = {q: _ActivationStats(observer != "minmax", seed + i) for i, q in enumerate(acts)}
    reference = next(itertools.chain(qmodel.parameters(), qmodel.buffers()))
    flags = [(m, m.training) for m in qmodel.modules()]
    qmodel.eval()
    seen = 0
    try:
        for q in acts:
            q._calibration_hook = stats[q]
        with torch.no_grad():
            for batch in loader:
                if seen >= num_batches:
                    break
                qmodel(_inputs(batch).to(device=reference.device, dtype=reference.dtype))
                seen += 1
    finally:
        for q in acts:
            q._calibration_hook = None
        for module, training in flags:
            module.training = training
    if seen == 0:
        raise ConfigError("calibrate: the loader yielded no batches")
    for q in acts:
        if stats[q].lo is not None:
            q.set_range(*stats[q].range(q, observer, percentile))
    if weights:
        _calibrate_weights(qmodel, observer)
    return qmodel
