"""The paper's log-linear law: accuracy against log10(DoF ratio), fitted by least squares."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bitsmith.errors import ConfigError


def loglinear_fit(ratios: Sequence[float], accuracy: Sequence[float]) -> dict[str, Any]:
    """Least-squares line ``accuracy = slope * log10(ratio) + intercept`` and its R² (1 - residual / total sum of
    squares; 1.0 when every accuracy is the same and the line fits exactly)."""
    if len(ratios) != len(accuracy) or len(ratios) < 2:
        raise ConfigError("the log-linear fit needs at least two (ratio, accuracy) points")
    if any(not r > 0 for r in ratios):
        raise ConfigError(f"DoF ratios must be positive, got {list(ratios)!r}")
    xs = [math.log10(r) for r in ratios]
    if len(set(xs)) < 2:
        raise ConfigError("the log-linear fit needs at least two different DoF ratios")
    n = len(xs)
    mx, my = sum(xs) / n, sum(accuracy) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, accuracy, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, accuracy, strict=True))
    ss_tot = sum((y - my) ** 2 for y in accuracy)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    return {"slope": slope, "intercept": intercept, "r2": r2, "points": n}
