"""Seeding and RNG state capture, so CPU runs are bit-reproducible and a resumed run continues the same stream."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (CPU and CUDA) and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        deterministic_kernels()


def deterministic_kernels() -> None:
    """Ask torch for deterministic kernels, without its NaN-filling of every new tensor.

    ``use_deterministic_algorithms`` also makes every ``torch.empty`` fill its memory: a pass over each activation
    and gradient buffer, 5-8 % of the CPU time of a ResNet-20 training step at 28x28 (docs/BENCHMARKS.md,
    engine-determinism). The fill only guards kernels that read memory they never wrote, which ours do not (the
    bit-exact resume and reproducibility tests check it).
    """
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The current RNG state of python, numpy and torch, split into tensors and JSON-able values."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    tensors = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
    }
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = state
    meta = {
        "numpy": [np_kind, int(np_pos), int(np_has_gauss), float(np_gauss)],
        "python": [py_version, list(py_state), py_gauss],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore a state captured by :func:`rng_state`."""
    torch.set_rng_state(tensors["torch"].to(torch.uint8))
    kind, pos, has_gauss, gauss = meta["numpy"]
    keys = tensors["numpy"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, int(pos), int(has_gauss), float(gauss)))
    version, state, py_gauss = meta["python"]
    random.setstate((version, tuple(state), py_gauss))
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
        if states:
            torch.cuda.set_rng_state_all(states)
