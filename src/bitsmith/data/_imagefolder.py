"""``imagefolder``: a user's own images, one sub-folder per class (optionally under train/ and test/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bitsmith.data._dataset import resize, to_unit_float
from bitsmith.data._registry import RawDataset, register_dataset
from bitsmith.data._split import stratified_split
from bitsmith.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg")
GREY_MODES = ("1", "L")
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1
_WHAT = "imagefolder"


def _class_dirs(folder: Path) -> list[Path]:
    dirs = (d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    return sorted(dirs, key=lambda d: d.name)


def _images_in(folder: Path) -> list[Path]:
    files = sorted(f for f in folder.iterdir()
                   if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in EXTENSIONS)
    if not files:
        raise DataError(f"{_WHAT}: class folder '{folder}' holds no {'/'.join(EXTENSIONS)} images")
    return files


def _scan(folder: Path, classes: list[str] | None) -> tuple[list[str], list[Path], list[int]]:
    """Class names (sorted folder names, or the given ones) and every image file with its label."""
    dirs = _class_dirs(folder)
    if not dirs:
        raise DataError(f"{_WHAT}: '{folder}' has no class sub-folders; "
                        f"expected {folder}/<class name>/*.png|jpg|jpeg")
    names = [d.name for d in dirs]
    if classes is None:
        classes = names
    else:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise DataError(f"{_WHAT}: test class folder(s) {', '.join(unknown)} in '{folder}' are not "
                            f"training classes; training classes: {', '.join(classes)}")
    files: list[Path] = []
    labels: list[int] = []
    for d in dirs:
        found = _images_in(d)
        files += found
        labels += [classes.index(d.name)] * len(found)
    return classes, files, labels


_IMAGE_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


def _unreadable(path: Path, exc: BaseException) -> DataError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DataError(f"{_WHAT}: cannot read image '{path}' ({reason})")


def _open(path: Path, *, decode: bool) -> Image.Image:
    """Open an image (header only unless ``decode``); any failure is a DataError naming the file."""
    try:
        img = Image.open(path)
    except _IMAGE_ERRORS as exc:
        raise _unreadable(path, exc) from None
    if decode:
        try:
            img.load()
        except _IMAGE_ERRORS as exc:
            img.close()
            raise _unreadable(path, exc) from None
    return img


def _read(files: list[Path], mode: str, image_size: int | None) -> torch.Tensor:
    """Decode ``files`` into one (N, C, H, W) tensor: uint8 when all share a size, else resized float32."""
    arrays: list[torch.Tensor] = []
    for path in files:
        with _open(path, decode=True) as img:
            array = np.asarray(img.convert(mode), dtype=np.uint8)
        tensor = torch.from_numpy(array.copy())
        arrays.append(tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous())
    if image_size is None:
        first = arrays[0].shape[1:]
        for path, array in zip(files, arrays, strict=True):
            if array.shape[1:] != first:
                raise DataError(f"{_WHAT}: '{path}' is {array.shape[2]}x{array.shape[1]} (WxH) but "
                                f"'{files[0]}' is {first[1]}x{first[0]}; pass image_size to resize all")
        return torch.stack(arrays)
    if all(tuple(a.shape[1:]) == (image_size, image_size) for a in arrays):
        return torch.stack(arrays)
    return torch.cat([to_unit_float(resize(a.unsqueeze(0), image_size)) for a in arrays])


def _mode(files: list[Path]) -> str:
    """Mode "L" when every image is greyscale, else "RGB" (read from headers only)."""
    for path in files:
        with _open(path, decode=False) as img:
            if img.mode not in GREY_MODES:
                return "RGB"
    return "L"


@register_dataset("imagefolder", "your own images in root/<class>/*.png|jpg|jpeg (or root/train/ and "
                                 "root/test/ with class folders), grey or RGB; test = stratified 20 % "
                                 "when no test/ folder")
def load_imagefolder(root: Path | None, image_size: int | None) -> RawDataset:
    """Images from ``root``: classes are sorted sub-folder names; grey if every image is, else RGB.

    With ``root/train`` and ``root/test`` those are the splits; otherwise the test split is a stratified 20 %
    (``random_state=0``). Images of different sizes need ``image_size``; all are then resized to it.
    """
    if root is None:
        raise DataError(f"{_WHAT}: needs root=<folder with one sub-folder of .png/.jpg images per class>")
    if not root.is_dir():
        raise DataError(f"{_WHAT}: folder '{root}' does not exist; "
                        f"expected {root}/<class name>/*.png|jpg|jpeg")
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes, train_files, train_labels = _scan(root / "train", None)
        _, test_files, test_labels = _scan(root / "test", classes)
        mode = _mode(train_files + test_files)
        train_x = _read(train_files, mode, image_size)
        test_x = _read(test_files, mode, image_size)
        if train_x.shape[1:] != test_x.shape[1:]:
            raise DataError(f"{_WHAT}: train images are {train_x.shape[3]}x{train_x.shape[2]} (WxH) but "
                            f"test images are {test_x.shape[3]}x{test_x.shape[2]}; pass image_size")
        train_y = torch.tensor(train_labels, dtype=torch.int64)
        test_y = torch.tensor(test_labels, dtype=torch.int64)
    else:
        classes, files, labels = _scan(root, None)
        images = _read(files, _mode(files), image_size)
        targets = torch.tensor(labels, dtype=torch.int64)
        train_idx, test_idx = stratified_split(np.asarray(labels), TEST_FRACTION,
                                               what=f"{_WHAT} '{root}' test", classes=classes)
        train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
        train_x, train_y = images[train_idx], targets[train_idx]
        test_x, test_y = images[test_idx], targets[test_idx]
    return RawDataset(train_x, train_y, test_x, test_y, classes=classes, val_size=VAL_FRACTION)
