"""``digits``: scikit-learn's 8x8 handwritten digits, shipped inside scikit-learn, so always there offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bitsmith.data._registry import RawDataset, register_dataset
from bitsmith.data._split import stratified_split

TEST_FRACTION = 0.2
VAL_FRACTION = 0.1
DEFAULT_SIZE = 16


@register_dataset("digits", "scikit-learn's handwritten digits (embedded, no files needed): 1797 grey "
                            "images, 10 classes, 8x8 resized to 16x16 by default; 1437 train / 360 test")
def load_digits(root: Path | None, image_size: int | None) -> RawDataset:
    """All 1797 digits, pixels / 16 in [0, 1], with the protocol's stratified 20 % test split (seed 0).

    ``root`` is ignored: the data comes from ``sklearn.datasets.load_digits``.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    pixels, labels = sklearn_digits(return_X_y=True)
    images = torch.from_numpy((pixels / 16.0).astype(np.float32)).reshape(-1, 1, 8, 8)
    targets = torch.from_numpy(labels.astype(np.int64))
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, what="dataset 'digits' test")
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return RawDataset(images[train_idx], targets[train_idx], images[test_idx], targets[test_idx],
                      classes=[str(d) for d in range(10)], val_size=VAL_FRACTION,
                      default_image_size=DEFAULT_SIZE)
