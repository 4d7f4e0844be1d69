"""The grid-search baseline of the DNAS paper: random heterogeneous configurations at (nearly) the same BOPs, and
the statistics that say whether accuracy differs more across configurations than across training seeds."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

import torch

from bitsmith.errors import ConfigError
from bitsmith.methods.dnas.space import Choice, SearchSpace, largest_remainder

#: Share of a layer's random split the "pruned" option may take at most (before the walk onto the band).
MAX_PRUNED_SHARE = 0.5


def _random_layer(space: SearchSpace, name: str, rng: random.Random) -> Choice:
    """A random split of the layer's filters among its options (Dirichlet(1) shares, random filters) and a
    random activation width."""
    layer = space.layers[name]
    wq = layer.weight_quant
    out = wq.choice.numel()
    shares = [rng.gammavariate(1.0, 1.0) for _ in range(wq.num_options)]
    if wq.prune:
        total = sum(shares)
        shares[-1] = min(shares[-1], MAX_PRUNED_SHARE * (total - shares[-1]) / (1 - MAX_PRUNED_SHARE))
    counts = largest_remainder(torch.tensor(shares) / sum(shares), out)
    if wq.prune and counts[-1] >= out:
        counts[-1], counts[0] = out - 1, counts[0] + 1
    filters = list(range(out))
    rng.shuffle(filters)
    weight = torch.empty(out, dtype=torch.long)
    start = 0
    for option, count in enumerate(counts):
        weight[filters[start:start + count]] = option
        start += count
    return Choice(weight, rng.randrange(len(layer.act_quant.options)))


def _step(space: SearchSpace, choices: dict[str, Choice], down: bool, per_layer: dict[str, float],
          rng: random.Random) -> bool:
    """One random move of one filter (or, one time in eight, one activation) a width down or up; False if the
    picked layer cannot move that way."""
    names = list(space.layers)
    name = rng.choices(names, weights=[per_layer[n] + 1e-9 for n in names])[0] if down else rng.choice(names)
    c = choices[name]
    wq = space.layers[name].weight_quant
    top, pruned = len(wq.options) - 1, wq.pruned_index
    if rng.random() < 0.125:
        act = c.act - 1 if down else c.act + 1
        if 0 <= act < len(space.layers[name].act_quant.options):
            c.act = act
            return True
        return False
    kept = wq.kept(c.weight)
    if down:
        movable = torch.nonzero(kept & (c.weight > 0)).flatten().tolist()
        if movable:
            c.weight[rng.choice(movable)] -= 1
            return True
        if pruned is not None and int(kept.sum()) > 1:
            c.weight[rng.choice(torch.nonzero(kept).flatten().tolist())] = pruned
            return True
        return False
    movable = torch.nonzero(kept & (c.weight < top)).flatten().tolist()
    if pruned is not None:
        movable += torch.nonzero(~kept).flatten().tolist()
    if not movable:
        return False
    i = rng.choice(movable)
    c.weight[i] = 0 if pruned is not None and int(c.weight[i]) == pruned else c.weight[i] + 1
    return True


def sample_configs(space: SearchSpace, count: int, *, target: float | None = None, tolerance: float = 0.03,
                   seed: int = 0, max_moves: int = 20_000) -> list[dict[str, Choice]]:
    """``count`` distinct random configurations of ``space`` whose exact BOPs lie in ``[target * (1 - tolerance),
    target]`` (default target: the space's budget, so every one meets it): random per-layer splits, then random
    single-filter moves down (in proportion to each layer's BOPs) or up until the BOPs land in the band."""
    if count < 1:
        raise ConfigError(f"the grid needs at least one configuration, got {count}")
    if not 0 < tolerance < 1:
        raise ConfigError(f"grid tolerance must be in (0, 1), got {tolerance!r}")
    target = space.budget if target is None else target
    lo = target * (1 - tolerance)
    if target < space.min_bops:
        raise ConfigError(f"grid target {target:.6g} BOPs is below the cheapest configuration ({space.min_bops:.6g})")
    rng = random.Random(seed)
    configs: list[dict[str, Choice]] = []
    seen: set[str] = set()
    for _attempt in range(50 * count):
        if len(configs) == count:
            break
        choices = {name: _random_layer(space, name, rng) for name in space.layers}
        per_layer = space.layer_bops(choices)
        for _move in range(max_moves):
            total = sum(per_layer.values())
            if lo <= total <= target:
                key = space.assignment(choices).to_dict().__repr__()
                if key not in seen:
                    seen.add(key)
                    configs.append(choices)
                break
            if _step(space, choices, total > target, per_layer, rng):
                per_layer = space.layer_bops(choices)
    if len(configs) < count:
        raise ConfigError(f"found only {len(configs)} of {count} distinct configurations within {tolerance:.0%} "
                          f"below {target:.6g} BOPs; widen the tolerance or the bit-width options")
    return configs


def variance_study(accuracy: Sequence[Sequence[float]]) -> dict[str, Any]:
    """One-way analysis of variance of ``accuracy[config][seed]``: the spread of the configurations' mean accuracy
    against the spread across seeds of one configuration.

    Returns the per-configuration means, ``config_std`` (std of the means), ``seed_std`` (pooled within-config
    std), the F statistic and its p-value (H0: every configuration has the same expected accuracy), and the
    best, median and worst configuration.
    """
    groups = [list(map(float, g)) for g in accuracy]
    if len(groups) < 2 or any(len(g) < 2 for g in groups):
        raise ConfigError("the variance study needs at least two configurations with at least two seeds each")
    means = [statistics.fmean(g) for g in groups]
    n_total, k = sum(len(g) for g in groups), len(groups)
    grand = statistics.fmean([v for g in groups for v in g])
    ss_between = sum(len(g) * (m - grand) ** 2 for g, m in zip(groups, means, strict=True))
    ss_within = sum((v - m) ** 2 for g, m in zip(groups, means, strict=True) for v in g)
    ms_between, ms_within = ss_between / (k - 1), ss_within / (n_total - k)
    if ms_within > 0:
        f_stat = ms_between / ms_within
        from scipy.stats import f as f_dist

        p_value = float(f_dist.sf(f_stat, k - 1, n_total - k))
    else:
        f_stat, p_value = (math.inf, 0.0) if ms_between > 0 else (math.nan, math.nan)
    order = sorted(range(k), key=lambda i: means[i])
    return {"means": means, "config_std": statistics.stdev(means), "seed_std": math.sqrt(ms_within),
            "f_statistic": f_stat, "p_value": p_value, "best": order[-1], "median": order[(k - 1) // 2],
            "worst": order[0], "configs": k, "runs": n_total}
