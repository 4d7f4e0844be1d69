"""``mnist`` and ``fashion-mnist``: the four IDX files from a folder the user has (nothing is downloaded).

Fashion-MNIST is found by default where Debian's ``dataset-fashion-mnist`` package installs it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import torch

from bitsmith.data._idx import read_idx
from bitsmith.data._registry import RawDataset, register_dataset
from bitsmith.errors import DataError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
VAL_LAST = 5000
NUM_CLASSES = 10
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN_PACKAGE = "dataset-fashion-mnist"
FASHION_SYSTEM_DIRS = (
    "/usr/share/datasets/fashion-mnist",
    "/usr/share/dataset-fashion-mnist",
    "/usr/share/fashion-mnist",
    "/usr/local/share/datasets/fashion-mnist",
)
ENV_VAR = "BITSMITH_DATA"
_SUBFOLDERS = {"mnist": ("MNIST",), "fashion-mnist": ("FashionMNIST", "fashion_mnist")}

_EXPECTED = ", ".join(FILES.values())


def _file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _missing(folder: Path) -> list[str]:
    return [stem for stem in FILES.values() if _file(folder, stem) is None]


def _candidates(name: str, base: Path) -> list[Path]:
    """Folders under ``base`` that may hold the files: itself, ``raw/``, and per-dataset sub-folders."""
    out = [base, base / "raw"]
    for sub in (name, *_SUBFOLDERS[name]):
        out += [base / sub, base / sub / "raw"]
    return out


def debian_dirs() -> list[Path]:
    """Folders holding Fashion-MNIST per ``dpkg -L dataset-fashion-mnist``; empty if dpkg or it is absent."""
    try:
        listing = subprocess.run(["dpkg", "-L", DEBIAN_PACKAGE], capture_output=True, text=True, timeout=20,
                                 check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if listing.returncode != 0:
        return []
    dirs: list[Path] = []
    for line in listing.stdout.splitlines():
        path = Path(line.strip())
        if path.name.startswith(FILES["train_images"]) and path.parent not in dirs:
            dirs.append(path.parent)
    return dirs


def find_folder(name: str, root: Path | None) -> Path:
    """The folder holding all four IDX files for ``name``, searched from ``root`` or the default places."""
    if root is not None:
        if not root.is_dir():
            raise DataError(f"{name}: folder '{root}' does not exist; expected {_EXPECTED} (raw or .gz) "
                            f"in it or in its raw/ sub-folder")
        searched = _candidates(name, root)
    else:
        searched = []
        if os.environ.get(ENV_VAR):
            searched += _candidates(name, Path(os.environ[ENV_VAR]).expanduser())[2:]
        if name == "fashion-mnist":
            searched += debian_dirs() + [Path(p) for p in FASHION_SYSTEM_DIRS]
    for folder in searched:
        if folder.is_dir() and not _missing(folder):
            return folder
    if root is not None:
        closest = min((f for f in searched if f.is_dir()), key=lambda f: len(_missing(f)))
        raise DataError(f"{name}: folder '{closest}' lacks {', '.join(_missing(closest))}; "
                        f"expected {_EXPECTED} (raw or .gz) in it or in its raw/ sub-folder")
    hint = f"; or install Debian's {DEBIAN_PACKAGE}" if name == "fashion-mnist" else ""
    looked = ", ".join(f"'{p}'" for p in searched) or f"nowhere (no root given and {ENV_VAR} unset)"
    raise DataError(f"{name}: no dataset found (looked in {looked}); pass root=<folder with {_EXPECTED}> "
                    f"or set {ENV_VAR} to a folder holding {name}/{hint}")


def _split(name: str, folder: Path, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    image_path = _file(folder, FILES[f"{part}_images"])
    label_path = _file(folder, FILES[f"{part}_labels"])
    images = read_idx(image_path, 3)
    labels = read_idx(label_path, 1)
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{name}: '{label_path}' holds {labels.shape[0]} labels but '{image_path}' holds "
                        f"{images.shape[0]} images")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise DataError(f"{name}: '{image_path}' holds no image data (shape {images.shape})")
    if int(labels.max()) >= NUM_CLASSES:
        bad = int(np.flatnonzero(labels >= NUM_CLASSES)[0])
        raise DataError(f"{name}: '{label_path}' has label {int(labels[bad])} at index {bad}; "
                        f"labels must lie in 0..{NUM_CLASSES - 1}")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _load(name: str, root: Path | None, classes: list[str]) -> RawDataset:
    folder = find_folder(name, root)
    train_x, train_y = _split(name, folder, "train")
    test_x, test_y = _split(name, folder, "test")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"{name}: train images in '{folder}' are {train_x.shape[2]}x{train_x.shape[3]} but "
                        f"test images are {test_x.shape[2]}x{test_x.shape[3]}; both must share one size")
    return RawDataset(train_x, train_y, test_x, test_y, classes=classes, val_size=VAL_LAST)


@register_dataset("mnist", "MNIST handwritten digits from the four IDX files (raw or .gz) in root: "
                           "28x28 grey, 10 classes, 60000 train / 10000 test; validation = last 5000 "
                           "training images")
def load_mnist(root: Path | None, image_size: int | None) -> RawDataset:
    """MNIST from ``root`` (or ``$BITSMITH_DATA/mnist``); pixels / 255."""
    return _load("mnist", root, [str(d) for d in range(NUM_CLASSES)])


@register_dataset("fashion-mnist", "Zalando Fashion-MNIST from the four IDX files (default: Debian package "
                                   "dataset-fashion-mnist): 28x28 grey, 10 classes, 60000 train / 10000 test")
def load_fashion_mnist(root: Path | None, image_size: int | None) -> RawDataset:
    """Fashion-MNIST from ``root``, ``$BITSMITH_DATA/fashion-mnist`` or the Debian package; pixels / 255."""
    return _load("fashion-mnist", root, list(FASHION_CLASSES))
