"""The in-memory dataset every loader produces, and the two transforms applied at load (resize, stats)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from bitsmith.errors import DataError

_CHUNK = 4096


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """Return ``images`` as float32 in [0, 1]: uint8 is divided by 255, float32 is returned as is."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 255.0
    return images


def resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Square bilinear resize (align_corners=False, no antialias) of an (N, C, H, W) batch.

    Images already ``size`` x ``size`` (or ``size`` None) come back unchanged, keeping their dtype; resized
    ones come back float32 in [0, 1]. Works in chunks so a large split never needs two float copies at once.
    """
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.float32)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = to_unit_float(images[start:start + _CHUNK])
        resized = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False,
                                antialias=False)
        out[start:start + _CHUNK] = resized.clamp_(0.0, 1.0)
    return out


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of an image batch on the [0, 1] scale.

    Sums are accumulated in float64 chunk by chunk; a constant channel gets std 1 so standardising never
    divides by zero.
    """
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = to_unit_float(images[start:start + _CHUNK]).to(torch.float64)
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0.0).sqrt()
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return tuple(mean.tolist()), tuple(std.tolist())


class ArrayDataset(Dataset):
    """A whole dataset split held in memory as one image tensor and one label tensor.

    ``images`` is uint8 (N, C, H, W) or float32 (N, C, H, W) in [0, 1]; items come out as float32 in [0, 1],
    standardised with ``mean``/``std`` (per channel, from the training images) when those are set.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, classes: Sequence[str],
                 name: str = "custom", split: str = "train",
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        if images.dim() != 4 or images.dtype not in (torch.uint8, torch.float32):
            raise DataError(f"dataset '{name}': images must be a uint8 or float32 (N, C, H, W) tensor; "
                            f"got {images.dtype} with shape {tuple(images.shape)}")
        if labels.dim() != 1 or labels.dtype != torch.int64 or labels.shape[0] != images.shape[0]:
            raise DataError(f"dataset '{name}': labels must be an int64 (N,) tensor with "
                            f"N = {images.shape[0]}; got {labels.dtype} with shape {tuple(labels.shape)}")
        if not classes:
            raise DataError(f"dataset '{name}': needs at least one class name")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise DataError(f"dataset '{name}': labels must lie in [0, {len(classes) - 1}]; "
                            f"got [{int(labels.min())}, {int(labels.max())}]")
        if (mean is None) != (std is None):
            raise DataError(f"dataset '{name}': give both mean and std, or neither")
        channels = images.shape[1]
        if mean is not None and (len(mean) != channels or len(std) != channels):
            raise DataError(f"dataset '{name}': mean and std need one value per channel ({channels})")
        if std is not None and any(s <= 0 for s in std):
            raise DataError(f"dataset '{name}': std values must be positive; got {tuple(std)}")
        self.images = images
        self.labels = labels
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.in_channels = int(channels)
        self.image_size = (int(images.shape[2]), int(images.shape[3]))
        self.name = name
        self.split = split
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        if self.mean is not None:
            self._mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
            self._std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        x = to_unit_float(x)
        if self.mean is not None:
            x = (x - self._mean) / self._std
        return x

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._transform(self.images[index]), int(self.labels[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split at once: float32 (N, C, H, W) transformed as by ``__getitem__``, int64 labels."""
        return self._transform(self.images), self.labels

    def __repr__(self) -> str:
        h, w = self.image_size
        norm = ", normalized" if self.mean is not None else ""
        return (f"ArrayDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"shape={self.in_channels}x{h}x{w}, classes={self.num_classes}{norm})")
