"""Tests for bitsmith.data: the digits protocol splits, the IDX / CIFAR / image-folder loaders."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import bitsmith.data as data
from bitsmith.data import _mnist
from bitsmith.errors import DataError

IDX_NAMES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)


# ---------------------------------------------------------------- helpers that write real dataset files


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzip-compressed when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def write_mnist(folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for name, array in zip(IDX_NAMES, (*train, *test), strict=True):
        write_idx(folder / (name + suffix), array)
    return folder


def random_split(rng: np.random.Generator, n: int, h: int = 5, w: int = 4) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 256, (n, h, w), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def cifar_folder(base: Path, name: str, rng: np.random.Generator, *, str_keys: bool = False,
                 protocol: int = pickle.HIGHEST_PROTOCOL) -> tuple[Path, dict[str, np.ndarray]]:
    """Write a tiny CIFAR-10 or CIFAR-100 batch folder the way the official files are laid out."""
    ten = name == "cifar10"
    folder = base / ("cifar-10-batches-py" if ten else "cifar-100-python")
    folder.mkdir(parents=True)
    label_key, num = ("labels", 10) if ten else ("fine_labels", 100)
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if ten else ["train", "test"]
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    parts: dict[str, list] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for f in files:
        n = 3 if ten else 7
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, num, n)]
        part = "test" if "test" in f else "train"
        parts[f"{part}_x"].append(x)
        parts[f"{part}_y"].append(y)
        batch = {key("data"): x, key(label_key): y, key("batch_label"): key("batch"),
                 key("filenames"): [b"a.png"] * n}
        if not ten:
            batch[key("coarse_labels")] = [v // 5 for v in y]
        (folder / f).write_bytes(pickle.dumps(batch, protocol=protocol))
    names_key = "label_names" if ten else "fine_label_names"
    meta = {key(names_key): [f"class{i}".encode() for i in range(num)]}
    (folder / ("batches.meta" if ten else "meta")).write_bytes(pickle.dumps(meta, protocol=protocol))
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    return folder, arrays


def save_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


def make_imagefolder(root: Path, rng: np.random.Generator, per_class: int = 5, size: int = 6,
                     classes: tuple[str, ...] = ("cat", "ant")) -> dict[str, list[np.ndarray]]:
    images: dict[str, list[np.ndarray]] = {}
    for c in classes:
        images[c] = []
        for i in range(per_class):
            array = rng.integers(0, 256, (size, size), dtype=np.uint8)
            save_png(root / c / f"img{i:02d}.png", array)
            images[c].append(array)
    return images


def message(exc_info: pytest.ExceptionInfo) -> str:
    text = str(exc_info.value)
    assert "\n" not in text, "user-facing errors must be one line"
    return text


# ---------------------------------------------------------------- registry


def test_registry_lists_sorted_names_with_one_line_descriptions():
    names = data.list_datasets()
    assert names == sorted(names)
    assert {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder"} <= set(names)
    for name in names:
        assert data.describe(name) and "\n" not in data.describe(name)


def test_unknown_name_and_split_and_size_are_data_errors():
    with pytest.raises(DataError) as exc:
        data.get("foo")
    assert "'foo'" in message(exc) and "digits" in message(exc) and "fashion-mnist" in message(exc)
    with pytest.raises(DataError) as exc:
        data.describe("nope")
    assert "available" in message(exc)
    with pytest.raises(DataError) as exc:
        data.get("digits", split="dev")
    assert "'dev'" in message(exc) and "train, val, test" in message(exc)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(DataError):
            data.get("digits", image_size=bad)


def test_register_dataset_refuses_a_duplicate_name():
    with pytest.raises(DataError, match="already registered"):
        data.register_dataset("digits", "again")(lambda root, size: None)


def test_a_registered_loader_goes_through_get(tmp_path):
    name = "tiny-test-set"

    @data.register_dataset(name, "two classes of constant images")
    def _tiny(root, image_size):
        x = torch.arange(40, dtype=torch.uint8).repeat_interleave(4).reshape(40, 1, 2, 2)
        y = torch.arange(40) % 2
        return data.RawDataset(x[:30], y[:30], x[30:], y[30:], classes=["a", "b"], val_size=10)

    try:
        train = data.get(name, split="train", val=True)
        val = data.get(name, split="val")
        assert len(train) == 20 and len(val) == 10
        assert torch.equal(val.images[:, 0, 0, 0], torch.arange(20, 30, dtype=torch.uint8))
        assert data.get(name, split="test", image_size=4).image_size == (4, 4)
    finally:
        data._registry._REGISTRY.pop(name)


# ---------------------------------------------------------------- digits (protocol data)


def test_digits_protocol_counts_and_split_match_sklearn():
    train = data.get("digits", image_size=8)
    test = data.get("digits", split="test", image_size=8)
    assert (len(train), len(test)) == (1437, 360)
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    assert torch.equal(train.images, torch.from_numpy((x_tr / 16).astype(np.float32)).reshape(-1, 1, 8, 8))
    assert torch.equal(test.labels, torch.from_numpy(y_te))
    assert torch.equal(train.labels, torch.from_numpy(y_tr))
    assert train.num_classes == 10 and train.in_channels == 1 and train.classes == [str(d) for d in range(10)]


def test_digits_validation_is_carved_from_train_and_stratified():
    full = data.get("digits", image_size=8)
    train = data.get("digits", split="train", val=True, image_size=8)
    val = data.get("digits", split="val", image_size=8)
    test = data.get("digits", split="test", image_size=8)
    assert (len(train), len(val)) == (1293, 144)
    rows = lambda ds: Counter(bytes(r) for r in ds.images.numpy().reshape(len(ds), -1))  # noqa: E731
    assert rows(train) + rows(val) == rows(full)
    for ds in (train, val, test):
        assert set(ds.labels.tolist()) == set(range(10)), f"{ds.split} misses a class"
    _, held = train_test_split(np.arange(1437), test_size=0.1, stratify=full.labels.numpy(), random_state=0)
    assert torch.equal(val.labels, full.labels[torch.from_numpy(held)])
    assert torch.equal(data.get("digits", split="test", val=True, image_size=8).images, test.images)


@pytest.mark.parametrize("size", [8, 16, 32])
def test_digits_image_sizes_and_value_range(size):
    ds = data.get("digits", split="test", image_size=size)
    x, y = ds.tensors()
    assert x.shape == (360, 1, size, size) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert ds.image_size == (size, size)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.9


def test_digits_default_is_16_and_is_the_bilinear_resize_of_8():
    native = data.get("digits", split="test", image_size=8).images
    default = data.get("digits", split="test")
    assert default.image_size == (16, 16)
    expected = F.interpolate(native, size=(16, 16), mode="bilinear", align_corners=False, antialias=False)
    assert torch.allclose(default.images, expected.clamp(0, 1), atol=0, rtol=0)


def test_digits_loads_are_deterministic():
    a, b = data.get("digits", split="val"), data.get("digits", split="val")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_normalize_uses_training_statistics_only():
    full_train = data.get("digits", split="train").tensors()[0].double()
    train = data.get("digits", split="train", normalize=True)
    carved = data.get("digits", split="train", val=True, normalize=True)
    val = data.get("digits", split="val", normalize=True)
    test = data.get("digits", split="test", normalize=True)
    assert train.mean == pytest.approx((float(full_train.mean()),), abs=1e-9)
    assert train.std == pytest.approx((float(full_train.std(unbiased=False)),), abs=1e-9)
    for ds in (carved, val, test):
        assert ds.mean == train.mean and ds.std == train.std
    xn = train.tensors()[0].double()
    assert float(xn.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(xn.std()) == pytest.approx(1.0, abs=1e-3)
    raw_test = data.get("digits", split="test").tensors()[0]
    assert torch.allclose(test.tensors()[0], (raw_test - train.mean[0]) / train.std[0], atol=1e-6)
    test_only_mean = float(raw_test.double().mean())
    assert abs(test_only_mean - train.mean[0]) > 1e-4, "statistics must not come from the test split"


@pytest.mark.parametrize("normalize", [False, True])
def test_tensors_equals_stacked_items(normalize):
    ds = data.get("digits", split="test", normalize=normalize)
    x, y = ds.tensors()
    items = [ds[i] for i in range(len(ds))]
    assert torch.equal(x, torch.stack([item[0] for item in items]))
    assert y.tolist() == [item[1] for item in items] and all(isinstance(item[1], int) for item in items)


def test_array_dataset_checks_its_inputs():
    x = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(DataError, match="labels must lie"):
        data.ArrayDataset(x, torch.tensor([0, 1, 2, 5]), classes=["a", "b", "c"])
    with pytest.raises(DataError, match="int64"):
        data.ArrayDataset(x, torch.zeros(3, dtype=torch.int64), classes=["a"])
    with pytest.raises(DataError, match="uint8 or float32"):
        data.ArrayDataset(torch.zeros(4, 2, 2), torch.zeros(4, dtype=torch.int64), classes=["a"])


# ---------------------------------------------------------------- MNIST / Fashion-MNIST (IDX)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_loads_exactly(tmp_path, gz):
    rng = np.random.default_rng(0)
    train, test = random_split(rng, 12), random_split(rng, 4)
    write_mnist(tmp_path / "m", train, test, gz=gz)
    ds = data.get("mnist", tmp_path / "m")
    assert ds.images.dtype == torch.uint8 and ds.image_size == (5, 4) and ds.in_channels == 1
    assert torch.equal(ds.images[:, 0], torch.from_numpy(train[0]))
    assert ds.labels.tolist() == train[1].tolist()
    x, _ = data.get("mnist", str(tmp_path / "m"), split="test").tensors()
    assert torch.equal(x[:, 0], torch.from_numpy(test[0]).float() / 255)


def test_idx_raw_subfolder_and_env_base(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    write_mnist(tmp_path / "a" / "raw", random_split(rng, 6), random_split(rng, 2), gz=True)
    assert len(data.get("mnist", tmp_path / "a")) == 6
    write_mnist(tmp_path / "base" / "fashion-mnist", random_split(rng, 7), random_split(rng, 3))
    monkeypatch.setenv("BITSMITH_DATA", str(tmp_path / "base"))
    ds = data.get("fashion-mnist", split="test")
    assert len(ds) == 3 and ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"


def test_fashion_mnist_found_through_dpkg(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    folder = write_mnist(tmp_path / "pkg" / "fm", random_split(rng, 5), random_split(rng, 2), gz=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    listing = "\n".join(["/.", str(folder)] + [str(folder / (n + ".gz")) for n in IDX_NAMES])
    fake = bin_dir / "dpkg"
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{listing}\nEOF\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("BITSMITH_DATA", raising=False)
    assert _mnist.debian_dirs() == [folder]
    assert len(data.get("fashion-mnist", split="test")) == 2


def test_fashion_mnist_not_found_names_places_and_files(tmp_path, monkeypatch):
    monkeypatch.delenv("BITSMITH_DATA", raising=False)
    monkeypatch.setattr(_mnist, "FASHION_SYSTEM_DIRS", (str(tmp_path / "nowhere"),))
    monkeypatch.setattr(_mnist, "debian_dirs", lambda: [])
    with pytest.raises(DataError) as exc:
        data.get("fashion-mnist")
    text = message(exc)
    assert str(tmp_path / "nowhere") in text and all(n in text for n in IDX_NAMES)
    assert "dataset-fashion-mnist" in text


def test_missing_folder_and_missing_files_list_what_is_expected(tmp_path):
    with pytest.raises(DataError) as exc:
        data.get("mnist", tmp_path / "absent")
    assert str(tmp_path / "absent") in message(exc) and all(n in message(exc) for n in IDX_NAMES)
    rng = np.random.default_rng(3)
    write_mnist(tmp_path / "m", random_split(rng, 4), random_split(rng, 2))
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as exc:
        data.get("mnist", tmp_path / "m")
    assert "lacks t10k-labels-idx1-ubyte;" in message(exc) and str(tmp_path / "m") in message(exc)


def _corrupt_truncate(folder: Path) -> str:
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    return "size mismatch"


def _corrupt_header(folder: Path) -> str:
    path = folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:10])
    return "truncated"


def _corrupt_magic(folder: Path) -> str:
    path = folder / "train-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">I", 0x0803) + path.read_bytes()[4:])
    return "magic"


def _corrupt_count(folder: Path) -> str:
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    return "labels"


def _corrupt_range(folder: Path) -> str:
    write_idx(folder / "t10k-labels-idx1-ubyte", np.array([1, 10, 2, 3], np.uint8))
    return "label 10"


@pytest.mark.parametrize("corrupt,culprit", [
    (_corrupt_truncate, "train-images-idx3-ubyte"),
    (_corrupt_header, "t10k-images-idx3-ubyte"),
    (_corrupt_magic, "train-labels-idx1-ubyte"),
    (_corrupt_count, "train-labels-idx1-ubyte"),
    (_corrupt_range, "t10k-labels-idx1-ubyte"),
])
def test_corrupt_idx_files_give_one_line_errors_naming_the_file(tmp_path, corrupt, culprit):
    rng = np.random.default_rng(4)
    write_mnist(tmp_path, random_split(rng, 8), random_split(rng, 4))
    problem = corrupt(tmp_path)
    with pytest.raises(DataError) as exc:
        data.get("mnist", tmp_path)
    assert culprit in message(exc) and problem in message(exc)


def test_garbage_and_truncated_gzip_are_data_errors(tmp_path):
    rng = np.random.default_rng(5)
    write_mnist(tmp_path, random_split(rng, 8), random_split(rng, 4), gz=True)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError) as exc:
        data.get("mnist", tmp_path)
    assert "train-images-idx3-ubyte.gz" in message(exc) and "gzip" in message(exc)
    good = gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 4) + bytes(4))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(good[: len(good) // 2])
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", random_split(rng, 8)[0])
    with pytest.raises(DataError) as exc:
        data.get("mnist", tmp_path, split="test")
    assert "t10k-labels-idx1-ubyte.gz" in message(exc)


def test_mnist_validation_is_the_last_5000_training_images(tmp_path):
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, (5012, 2, 2), dtype=np.uint8)
    labels = (np.arange(5012) % 10).astype(np.uint8)
    write_mnist(tmp_path, (images, labels), random_split(rng, 3, 2, 2))
    train, val = data.get("mnist", tmp_path, val=True), data.get("mnist", tmp_path, split="val")
    assert (len(train), len(val)) == (12, 5000)
    assert torch.equal(val.images[:, 0], torch.from_numpy(images[12:]))
    assert torch.equal(train.images[:, 0], torch.from_numpy(images[:12]))
    assert len(data.get("mnist", tmp_path)) == 5012
    write_mnist(tmp_path, random_split(rng, 100, 2, 2), random_split(rng, 3, 2, 2))
    with pytest.raises(DataError, match="last 5000"):
        data.get("mnist", tmp_path, split="val")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 12), m=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9), gz=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_idx_round_trip(n, m, h, w, gz, seed):
    rng = np.random.default_rng(seed)
    train, test = random_split(rng, n, h, w), random_split(rng, m, h, w)
    with tempfile.TemporaryDirectory() as tmp:
        write_mnist(Path(tmp), train, test, gz=gz)
        ds_train, ds_test = data.get("mnist", tmp), data.get("mnist", tmp, split="test")
    assert torch.equal(ds_train.images[:, 0], torch.from_numpy(train[0]))
    assert torch.equal(ds_test.images[:, 0], torch.from_numpy(test[0]))
    assert ds_train.labels.tolist() == train[1].tolist() and ds_test.labels.tolist() == test[1].tolist()


# ---------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_batches_load_from_folder_or_parent(tmp_path, name, protocol):
    folder, arrays = cifar_folder(tmp_path, name, np.random.default_rng(7), protocol=protocol)
    for root in (tmp_path, folder):
        train = data.get(name, root)
        test = data.get(name, root, split="test")
        assert train.images.shape == (arrays["train_x"].shape[0], 3, 32, 32) and train.in_channels == 3
        assert torch.equal(train.images, torch.from_numpy(arrays["train_x"]).reshape(-1, 3, 32, 32))
        assert torch.equal(test.labels, torch.from_numpy(arrays["test_y"]))
        assert train.num_classes == (10 if name == "cifar10" else 100) and train.classes[1] == "class1"


def test_cifar_accepts_str_keys(tmp_path):
    _, arrays = cifar_folder(tmp_path, "cifar10", np.random.default_rng(8), str_keys=True)
    ds = data.get("cifar10", tmp_path)
    assert ds.labels.tolist() == arrays["train_y"].tolist()


def test_cifar_missing_batch_is_named(tmp_path):
    folder, _ = cifar_folder(tmp_path, "cifar10", np.random.default_rng(9))
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError) as exc:
        data.get("cifar10", tmp_path)
    assert "data_batch_3" in message(exc)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_cifar_pickle_is_refused_and_not_executed(tmp_path):
    folder, _ = cifar_folder(tmp_path, "cifar10", np.random.default_rng(10))
    marker = tmp_path / "pwned"
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": [0]}))
    with pytest.raises(DataError) as exc:
        data.get("cifar10", tmp_path)
    assert "data_batch_2" in message(exc) and "system" in message(exc)
    assert not marker.exists()


def test_cifar_refuses_other_globals_and_corrupt_pickles(tmp_path):
    folder, _ = cifar_folder(tmp_path, "cifar100", np.random.default_rng(11))
    (folder / "train").write_bytes(pickle.dumps({b"data": Path("x"), b"fine_labels": [0]}))
    with pytest.raises(DataError, match="refusing") as exc:
        data.get("cifar100", folder)
    assert "train" in message(exc)
    (folder / "train").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:40])
    with pytest.raises(DataError, match="not a readable data pickle"):
        data.get("cifar100", folder)
    bad_labels = {b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [1, 100]}
    (folder / "train").write_bytes(pickle.dumps(bad_labels))
    with pytest.raises(DataError, match="label 100"):
        data.get("cifar100", folder)


# ---------------------------------------------------------------- image folders


def test_imagefolder_grey_pngs_with_stratified_test_split(tmp_path):
    images = make_imagefolder(tmp_path, np.random.default_rng(12))
    train = data.get("imagefolder", tmp_path)
    test = data.get("imagefolder", tmp_path, split="test")
    assert train.classes == ["ant", "cat"] and (len(train), len(test)) == (8, 2)
    assert train.in_channels == 1 and train.image_size == (6, 6) and train.images.dtype == torch.uint8
    assert sorted(test.labels.tolist()) == [0, 1]
    known = {bytes(a) for arrays in images.values() for a in arrays}
    assert {bytes(x[0].numpy()) for x in torch.cat([train.images, test.images])} == known
    ant0 = train.images[train.labels == 0]
    assert {bytes(x[0].numpy()) for x in ant0} <= {bytes(a) for a in images["ant"]}


def test_imagefolder_rgb_when_any_image_is_colour_and_train_test_folders(tmp_path):
    rng = np.random.default_rng(13)
    make_imagefolder(tmp_path / "train", rng, per_class=3)
    make_imagefolder(tmp_path / "test", rng, per_class=1, classes=("cat",))
    colour = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    save_png(tmp_path / "test" / "cat" / "colour.png", colour)
    train = data.get("imagefolder", tmp_path)
    test = data.get("imagefolder", tmp_path, split="test")
    assert (len(train), len(test)) == (6, 2) and train.in_channels == 3 and test.in_channels == 3
    assert test.labels.tolist() == [1, 1]
    assert torch.equal(test.images[0], torch.from_numpy(colour).permute(2, 0, 1)), "files load in name order"
    grey = test.images[1]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_imagefolder_size_mismatch_and_image_size(tmp_path):
    rng = np.random.default_rng(14)
    make_imagefolder(tmp_path, rng)
    save_png(tmp_path / "cat" / "big.png", rng.integers(0, 256, (9, 7), dtype=np.uint8))
    with pytest.raises(DataError) as exc:
        data.get("imagefolder", tmp_path)
    assert "big.png" in message(exc) and "image_size" in message(exc)
    ds = data.get("imagefolder", tmp_path, image_size=8)
    assert ds.image_size == (8, 8) and ds.images.dtype == torch.float32
    assert float(ds.images.min()) >= 0 and float(ds.images.max()) <= 1


def test_imagefolder_empty_class_unreadable_image_and_no_root(tmp_path):
    make_imagefolder(tmp_path, np.random.default_rng(15))
    (tmp_path / "dog").mkdir()
    with pytest.raises(DataError) as exc:
        data.get("imagefolder", tmp_path)
    assert str(tmp_path / "dog") in message(exc)
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError) as exc:
        data.get("imagefolder", tmp_path)
    assert "broken.png" in message(exc)
    with pytest.raises(DataError, match="needs root"):
        data.get("imagefolder")
    with pytest.raises(DataError, match="does not exist"):
        data.get("imagefolder", tmp_path / "absent")


def test_imagefolder_needs_two_images_per_class_for_the_split(tmp_path):
    make_imagefolder(tmp_path, np.random.default_rng(16), per_class=4)
    save_png(tmp_path / "zebra" / "only.png", np.zeros((6, 6), np.uint8))
    with pytest.raises(DataError) as exc:
        data.get("imagefolder", tmp_path)
    assert "'zebra'" in message(exc)
