"""Range estimation for quantizers: min/max, percentile and MSE-optimal clipping, and range -> (scale, zero point).

Every function works on a 2-D view ``[rows, values]``: one row per output channel for per-channel weights, a
single row for a per-tensor quantizer. Used by the quantizers' data-driven initialisation and by calibrate().
"""

from __future__ import annotations

import torch

from bitsmith.errors import ConfigError
from bitsmith.quant.ste import MIN_SCALE, Bound, quant_dequant

OBSERVERS = ("minmax", "percentile", "mse")
#: Most values one batched op of the MSE search handles (candidates x rows x values).
MSE_CHUNK = 1 << 21
#: Clipping ratios the MSE search tries (r = 1, (grid-1)/grid, ..., 1/grid of the observed range).
MSE_GRID = 100


def rows(x: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """``x`` as ``[channels, values]`` (channel axis 0) or ``[1, values]``, detached and in floating point."""
    x = x.detach()
    if not x.is_floating_point():
        x = x.float()
    return x.reshape(x.shape[0], -1) if per_channel else x.reshape(1, -1)


def minmax_range(x2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row minimum and maximum."""
    lo, hi = torch.aminmax(x2d, dim=1)
    return lo, hi


def percentile_range(x2d: torch.Tensor, percentile: float = 99.99) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row ``(100 - p)``-th and ``p``-th percentiles: clips the rare outliers that min/max would keep."""
    q = torch.tensor([1.0 - percentile / 100.0, percentile / 100.0], dtype=x2d.dtype, device=x2d.device)
    bounds = torch.quantile(x2d, q, dim=1)
    return bounds[0], bounds[1]


def _column(bound: Bound, like: torch.Tensor) -> Bound:
    """A per-row bound as a ``[rows, 1]`` column (numbers pass through)."""
    if isinstance(bound, torch.Tensor) and bound.numel() > 1:
        return bound.to(like.dtype).reshape(-1, 1)
    return bound


def range_to_qparams(lo: torch.Tensor, hi: torch.Tensor, qmin: Bound, qmax: Bound,
                     symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point (an integer-valued float) mapping ``[lo, hi]`` onto the codes ``[qmin, qmax]``.

    The range is widened to contain 0 so that zero (padding, ReLU output) is exact. Symmetric: zero point 0 and
    ``s = max(|lo|, hi) / qmax`` (signed) or ``hi / qmax`` (unsigned); asymmetric: ``s = (hi - lo) / (qmax -
    qmin)`` and ``z = qmin - round(lo / s)``.
    """
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    signed = bool((qmin < 0).any()) if isinstance(qmin, torch.Tensor) else qmin < 0
    if symmetric:
        top = torch.maximum(-lo, hi) if signed else hi
        scale = (top / qmax).clamp_min(MIN_SCALE)
        return scale, torch.zeros_like(scale)
    scale = ((hi - lo) / (qmax - qmin)).clamp_min(MIN_SCALE)
    return scale, torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)


def mse_range(x2d: torch.Tensor, qmin: Bound, qmax: Bound, symmetric: bool, grid: int = MSE_GRID,
              lo: torch.Tensor | None = None, hi: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row clipping range ``r * [lo, hi]`` (r on a grid in (0, 1]) that minimises the quantization MSE.

    ``lo``/``hi`` default to the row min/max. The candidates are evaluated in a few large batched ops (at most
    ``MSE_CHUNK`` values each) rather than one small op per ratio.
    """
    if lo is None or hi is None:
        lo, hi = minmax_range(x2d)
    rows_, width = x2d.shape
    ratios = torch.arange(grid, 0, -1, dtype=x2d.dtype, device=x2d.device) / grid
    qmin_c, qmax_c = _column(qmin, x2d), _column(qmax, x2d)
    best_err = torch.full_like(lo, float("inf"))
    best_ratio = torch.ones_like(lo)
    chunk = max(1, MSE_CHUNK // max(rows_ * width, 1))
    for start in range(0, grid, chunk):
        ratio = ratios[start:start + chunk].reshape(-1, 1)  # [r, 1] against [rows]
        scale, zero = range_to_qparams(lo * ratio, hi * ratio, qmin, qmax, symmetric)  # [r, rows]
        y, _ = quant_dequant(x2d, scale.unsqueeze(-1), zero.unsqueeze(-1), qmin_c, qmax_c)  # [r, rows, width]
        err = (y - x2d).square_().mean(dim=-1)
        err_min, index = err.min(dim=0)  # first (largest) ratio on ties
        better = err_min < best_err
        best_err = torch.where(better, err_min, best_err)
        best_ratio = torch.where(better, ratio.reshape(-1)[index], best_ratio)
    return lo * best_ratio, hi * best_ratio


def estimate_range(x2d: torch.Tensor, observer: str, qmin: Bound, qmax: Bound, symmetric: bool,
                   percentile: float = 99.99, lo: torch.Tensor | None = None,
                   hi: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row range of ``x2d`` by ``observer`` ("minmax", "percentile" or "mse"); ``lo``/``hi`` (the full
    data's min/max when ``x2d`` is a subsample) bound the MSE search."""
    if observer == "minmax":
        return minmax_range(x2d)
    if observer == "percentile":
        return percentile_range(x2d, percentile)
    if observer == "mse":
        return mse_range(x2d, qmin, qmax, symmetric, lo=lo, hi=hi)
    raise ConfigError(f"unknown observer {observer!r}; accepted: {', '.join(OBSERVERS)}")
