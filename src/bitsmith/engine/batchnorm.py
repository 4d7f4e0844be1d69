"""BatchNorm running statistics recalibrated on training batches: the evaluation protocol for predicted or freshly
edited parameters, whose stored statistics do not match them (never use test batches for this)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from bitsmith.errors import BitsmithError


def _norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def seeded_batches(data: Dataset | tuple[torch.Tensor, torch.Tensor], batches: int, batch_size: int = 64,
                   seed: int = 0) -> list[torch.Tensor]:
    """``batches`` image batches of ``batch_size`` drawn from ``data`` in one seeded permutation (wrapping around
    when more are asked than it holds): the training batches that calibration steps read."""
    from bitsmith.engine.trainer import dataset_tensors

    x_all, _ = data if isinstance(data, tuple) else dataset_tensors(data)
    order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(seed))
    return [x_all[order[(i * batch_size) % len(order):][:batch_size]] for i in range(batches)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: Dataset | tuple[torch.Tensor, torch.Tensor], batches: int = 10,
                   batch_size: int = 64, seed: int = 0) -> int:
    """Reset every BatchNorm's running mean/var and re-estimate them as the exact average over ``batches`` batches
    of ``batch_size`` images drawn (seeded) from ``data``; other layers stay in eval mode. Returns the images used.
    The model's train/eval flags are restored after."""
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
        raise BitsmithError(f"BN recalibration needs at least one batch, got {batches!r}")
    norms = _norms(model)
    if not norms:
        return 0
    device = next(model.parameters()).device
    flags = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in norms]
    model.eval()
    used = 0
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: the exact mean over the batches seen
            m.train()
        for x in seeded_batches(data, batches, batch_size, seed):
            model(x.to(device))
            used += len(x)
    finally:
        for m, momentum in momenta:
            m.momentum = momentum
        for m, training in flags:
            m.training = training
    return used
