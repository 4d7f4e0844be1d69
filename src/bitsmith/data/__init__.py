"""Datasets behind one registry: the embedded default ``digits`` and loaders for files a user already has.

Nothing is ever downloaded. ``get(name, root, split)`` returns an in-memory :class:`ArrayDataset`::

    train = bitsmith.data.get("digits", split="train", val=True)   # 16x16, validation carved out
    x, y = bitsmith.data.get("digits", split="test").tensors()
"""

from __future__ import annotations

from bitsmith.data import _cifar, _digits, _imagefolder, _mnist  # noqa: F401  (each registers its datasets)
from bitsmith.data._dataset import ArrayDataset
from bitsmith.data._registry import SPLITS, RawDataset, describe, get, list_datasets, register_dataset

__all__ = ["SPLITS", "ArrayDataset", "RawDataset", "describe", "get", "list_datasets", "register_dataset"]
