"""The dataset registry and ``get``: one entry point that loads, splits, resizes and standardises data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bitsmith.data._dataset import ArrayDataset, channel_stats, resize
from bitsmith.data._split import stratified_split
from bitsmith.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RawDataset:
    """What a loader returns: the official train and test parts, before validation carving and transforms.

    Images are uint8 or float32 in [0, 1], shaped (N, C, H, W); labels int64 (N,). ``val_size`` says how
    the validation part is carved from the training part: a float is a stratified fraction
    (``random_state=0``), an int the fixed number of last training images. ``default_image_size`` is used
    when the caller gives none.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: Sequence[str]
    val_size: float | int
    default_image_size: int | None = None


Loader = Callable[[Path | None, int | None], RawDataset]


@dataclass(frozen=True)
class _Entry:
    loader: Loader
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_dataset(name: str, description: str) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader(root, image_size) -> RawDataset`` as ``name``, with a description.

    ``root`` is the user's folder (or None); ``image_size`` is the requested square size (or None), which a
    loader may use to bring images of different sizes to one size; ``get`` resizes whatever is still off-size.
    """
    if not name or name != name.strip().lower():
        raise DataError(f"dataset name must be non-empty lowercase without surrounding spaces; got {name!r}")
    if "\n" in description:
        raise DataError(f"dataset '{name}': the description must be one line")

    def decorate(loader: Loader) -> Loader:
        if name in _REGISTRY:
            raise DataError(f"dataset '{name}' is already registered; "
                            f"registered: {', '.join(list_datasets())}")
        _REGISTRY[name] = _Entry(loader, description)
        return loader

    return decorate


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> tuple[str, _Entry]:
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(list_datasets())}")
    return key, _REGISTRY[key]


def describe(name: str) -> str:
    """One-line description of a registered dataset (what it is and where its files come from)."""
    return _entry(name)[1].description


def _check_raw(key: str, raw: RawDataset) -> None:
    for part in ("train", "test"):
        images, labels = getattr(raw, f"{part}_images"), getattr(raw, f"{part}_labels")
        if images.dim() != 4 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(f"dataset '{key}': the loader returned {part} images {tuple(images.shape)} and "
                            f"labels {tuple(labels.shape)}; expected (N, C, H, W) and (N,)")
        if images.shape[0] == 0:
            raise DataError(f"dataset '{key}': the {part} split holds no images")
    train_shape, test_shape = tuple(raw.train_images.shape[1:]), tuple(raw.test_images.shape[1:])
    if train_shape != test_shape:
        raise DataError(f"dataset '{key}': train images are {train_shape} (C, H, W) but test images are "
                        f"{test_shape}; both splits must share one shape")


def _carve_val(key: str, raw: RawDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept for training, validation) into the training part, as the dataset's ``val_size`` says."""
    n = raw.train_labels.shape[0]
    if isinstance(raw.val_size, int):
        if n <= raw.val_size:
            raise DataError(f"dataset '{key}': the validation split is the last {raw.val_size} training "
                            f"images, but the training split holds only {n}; use val=False")
        return torch.arange(n - raw.val_size), torch.arange(n - raw.val_size, n)
    kept, held = stratified_split(raw.train_labels.numpy(), raw.val_size, what=f"dataset '{key}' validation",
                                  classes=raw.classes)
    return torch.from_numpy(kept), torch.from_numpy(held)


def get(name: str, root: str | Path | None = None, split: str = "train", *, image_size: int | None = None,
        normalize: bool = False, val: bool = False) -> ArrayDataset:
    """Load one split of a registered dataset into memory.

    ``split`` is "train", "val" or "test". With ``val`` (implied by split="val") the validation part is carved
    from the training set and "train" is the remainder; the test split is never used for validation.
    ``image_size`` resizes to a square (bilinear) once at load. ``normalize`` standardises every split with
    the per-channel mean/std of the whole training set (before any validation carve, so every split and
    ``val`` setting shares them; the test split never contributes), kept as ``mean``/``std`` on the result.
    """
    key, entry = _entry(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or not 1 <= image_size <= 4096):
        raise DataError(f"image_size must be an integer from 1 to 4096 (or None for the dataset default); "
                        f"got {image_size!r}")
    root_path = None if root is None else Path(root).expanduser()
    raw = entry.loader(root_path, image_size)
    _check_raw(key, raw)
    size = image_size if image_size is not None else raw.default_image_size
    use_val = val or split == "val"

    train_x, train_y = raw.train_images, raw.train_labels
    if use_val:
        kept, held = _carve_val(key, raw)
        if split == "val":
            x, y = train_x[held], train_y[held]
        train_x, train_y = train_x[kept], train_y[kept]
    if split == "train":
        x, y = train_x, train_y
    elif split == "test":
        x, y = raw.test_images, raw.test_labels

    x = resize(x, size)
    mean = std = None
    if normalize:
        whole_train = split == "train" and not use_val
        mean, std = channel_stats(x if whole_train else resize(raw.train_images, size))
    return ArrayDataset(x, y, classes=raw.classes, name=key, split=split, mean=mean, std=std)
