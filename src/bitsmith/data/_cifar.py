"""``cifar10`` and ``cifar100``: the official python-pickle batch folders, read by a restricted unpickler."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bitsmith.data._pickle import load_data_pickle
from bitsmith.data._registry import RawDataset, register_dataset
from bitsmith.errors import DataError

VAL_LAST = 5000
ENV_VAR = "BITSMITH_DATA"
PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class _Layout:
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str
    num_classes: int


LAYOUTS = {
    "cifar10": _Layout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                       "batches.meta", "labels", "label_names", 10),
    "cifar100": _Layout("cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names",
                        100),
}


def _lookup(batch: dict, key: str) -> Any:
    """``batch[key]`` under a bytes key (the official files) or a str key; None when absent."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    return None


def _missing(layout: _Layout, folder: Path) -> list[str]:
    return [f for f in (*layout.train, *layout.test) if not (folder / f).is_file()]


def find_folder(name: str, root: Path | None) -> Path:
    """The batch folder for ``name``: ``root`` or ``root/<official folder name>`` (or $BITSMITH_DATA)."""
    layout = LAYOUTS[name]
    expected = ", ".join((*layout.train, *layout.test, layout.meta))
    if root is None:
        base = os.environ.get(ENV_VAR)
        if not base:
            raise DataError(f"{name}: no root given and {ENV_VAR} unset; pass root=<the {layout.folder} "
                            f"folder or its parent>, holding {expected}")
        root = Path(base).expanduser()
        searched = [root / layout.folder, root / name, root / name / layout.folder]
    else:
        if not root.is_dir():
            raise DataError(f"{name}: folder '{root}' does not exist; expected the {layout.folder} folder "
                            f"(or its parent) holding {expected}")
        searched = [root, root / layout.folder]
    for folder in searched:
        if folder.is_dir() and not _missing(layout, folder):
            return folder
    existing = [f for f in searched if f.is_dir()]
    if not existing:
        raise DataError(f"{name}: none of {', '.join(repr(str(f)) for f in searched)} exists; expected the "
                        f"{layout.folder} folder holding {expected}")
    closest = min(existing, key=lambda f: len(_missing(layout, f)))
    raise DataError(f"{name}: folder '{closest}' lacks {', '.join(_missing(layout, closest))}; expected the "
                    f"{layout.folder} folder (or its parent) holding {expected}")


def _batch(name: str, layout: _Layout, path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = load_data_pickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{name}: '{path}' holds a {type(batch).__name__}, not a CIFAR batch dict")
    data, labels = _lookup(batch, "data"), _lookup(batch, layout.label_key)
    if data is None or labels is None:
        raise DataError(f"{name}: '{path}' lacks the 'data' or '{layout.label_key}' entry of a CIFAR batch")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 \
            or data.shape[1:] not in ((PIXELS,), (3, 32, 32)):
        shape = getattr(data, "shape", None)
        raise DataError(f"{name}: '{path}' has 'data' {type(data).__name__} {getattr(data, 'dtype', '')} "
                        f"shaped {shape}; expected uint8 (N, {PIXELS})")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{name}: '{path}' has '{layout.label_key}' that are not integers") from None
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{name}: '{path}' holds {labels.shape[0]} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= layout.num_classes))[0])
        raise DataError(f"{name}: '{path}' has label {int(labels[bad])} at index {bad}; labels must lie in "
                        f"0..{layout.num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def _part(name: str, layout: _Layout, folder: Path,
          files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [_batch(name, layout, folder / f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def _classes(name: str, layout: _Layout, folder: Path) -> list[str]:
    path = folder / layout.meta
    if not path.is_file():
        return [str(i) for i in range(layout.num_classes)]
    meta = load_data_pickle(path)
    names = _lookup(meta, layout.names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != layout.num_classes:
        raise DataError(f"{name}: '{path}' lacks a '{layout.names_key}' list of {layout.num_classes} "
                        f"class names")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def _load(name: str, root: Path | None) -> RawDataset:
    layout = LAYOUTS[name]
    folder = find_folder(name, root)
    classes = _classes(name, layout, folder)
    train_x, train_y = _part(name, layout, folder, layout.train)
    test_x, test_y = _part(name, layout, folder, layout.test)
    return RawDataset(train_x, train_y, test_x, test_y, classes=classes, val_size=VAL_LAST)


@register_dataset("cifar10", "CIFAR-10 python batches (cifar-10-batches-py, the folder or its parent) "
                             "in root: 32x32 RGB, 10 classes; validation = last 5000 training images")
def load_cifar10(root: Path | None, image_size: int | None) -> RawDataset:
    """CIFAR-10 from ``data_batch_1..5`` and ``test_batch``; class names from ``batches.meta`` if present."""
    return _load("cifar10", root)


@register_dataset("cifar100", "CIFAR-100 python batches (cifar-100-python, the folder or its parent) "
                              "in root: 32x32 RGB, 100 fine classes; validation = last 5000 training images")
def load_cifar100(root: Path | None, image_size: int | None) -> RawDataset:
    """CIFAR-100 from ``train`` and ``test`` with the 100 fine labels; class names from ``meta``."""
    return _load("cifar100", root)
