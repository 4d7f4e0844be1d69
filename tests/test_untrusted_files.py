"""Files from elsewhere are data, never code: a malicious pickle disguised as a checkpoint, a GHN file or a dataset
batch is refused with one clear line and runs nothing; corrupt and truncated checkpoints, configs and dataset files
(IDX, CIFAR batches, images) give one line naming the file and the problem."""

from __future__ import annotations

import gzip
import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import errors_catalogue as catalogue
from bitsmith import runs as bitsmith_runs
from bitsmith.data._pickle import load_data_pickle
from bitsmith.engine import load_checkpoint
from bitsmith.errors import CheckpointError, DataError

SRC = Path(__file__).resolve().parent.parent / "src" / "bitsmith"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/fp (LeNet-5, 1 epoch on digits) and runs/q (its W8A8 PTQ), shared by the tests here."""
    torch.set_num_threads(1)
    return catalogue.prepare_runs(tmp_path_factory.mktemp("untrusted") / "runs")


def refused(argv: list[str | Path], *needles: str | Path) -> str:
    """Run the CLI; assert exit code 2 and one line on stderr holding every needle; return that line."""
    outcome = catalogue.invoke([str(a) for a in argv])
    message = outcome.stderr.strip()
    assert outcome.code == 2, (outcome.code, outcome.stderr)
    assert len(message.splitlines()) == 1 and message.startswith("error: "), message
    assert "Traceback" not in outcome.stderr + outcome.stdout
    for needle in needles:
        assert str(needle) in message, (needle, message)
    return message


def copy_run(runs: Path, tmp_path: Path, source: str = "fp") -> Path:
    return Path(shutil.copytree(runs / source, tmp_path / f"{source}-copy"))


# -------------------------------------------------------------------------------------------- malicious pickles
def test_the_payload_would_run(tmp_path: Path) -> None:
    """The planted files are really dangerous: unpickling one the ordinary way runs its command."""
    marker = tmp_path / "ran"
    pickle.loads(catalogue.evil_pickle(tmp_path / "evil.pkl", marker).read_bytes())  # noqa: S301
    assert marker.exists()


@pytest.mark.parametrize("maker", [catalogue.evil_pickle, catalogue.evil_torch_file], ids=["pickle", "torch.save"])
def test_malicious_checkpoint_is_refused_and_runs_nothing(maker, runs: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    run = copy_run(runs, tmp_path, "q")
    checkpoint = maker(run / "checkpoint.safetensors", marker)
    kind = "Python pickle" if maker is catalogue.evil_pickle else "zip archive (as torch.save writes)"
    for argv in (["eval", run], ["quantize", "--from", run, "--ptq", "--out", tmp_path / "out"],
                 ["train", "--resume", run], ["export", run, "--format", "packed", "--out", tmp_path / "m.bin"],
                 ["cost", "--run", run]):
        if argv[0] == "quantize":  # a quantized run is refused as a source before its checkpoint is read
            argv[2] = copy_run(runs, tmp_path / "fp", "fp")
            maker(argv[2] / "checkpoint.safetensors", marker)
            refused(argv, argv[2] / "checkpoint.safetensors", kind, "could run code")
        else:
            refused(argv, checkpoint, "not a readable safetensors checkpoint", kind, "could run code")
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(checkpoint)
    assert not marker.exists() and not (tmp_path / "out" / "checkpoint.safetensors").exists()
    assert not (tmp_path / "m.bin").exists()


def test_malicious_ghn_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    ghn = catalogue.evil_torch_file(tmp_path / "ghn.pt", marker)
    refused(["predict", "--ghn", ghn, "--out", tmp_path / "out"], ghn, "not a readable safetensors file", "zip")
    refused(["ghn", "train", "--init-from", ghn, *catalogue.FAST, "--out", tmp_path / "g"], ghn, "could run code")
    assert not marker.exists()


def test_malicious_cifar_batch_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    folder = catalogue.cifar_folder(tmp_path / "cifar")
    catalogue.evil_pickle(folder / "data_batch_3", marker)
    refused(["train", "--dataset", "cifar10", "--data-root", folder, "--out", tmp_path / "out"],
            f"refusing to load '{folder / 'data_batch_3'}'", "posix.system", "only plain data pickles")
    catalogue.evil_pickle(folder / "batches.meta", marker)
    with pytest.raises(DataError, match="batches.meta"):
        load_data_pickle(folder / "batches.meta")
    assert not marker.exists() and not (tmp_path / "out" / "config.json").exists()


def test_no_code_loading_in_the_package() -> None:
    """Nothing in bitsmith unpickles except the allow-list unpickler of dataset files; torch.load is absent or
    weights-only."""
    loaders = re.compile(r"\b(pickle\.loads?|pickle\.Unpickler|torch\.load|np\.load|numpy\.load|marshal\.loads?|"
                         r"dill|cloudpickle|joblib\.load)\b")
    found = []
    for path in SRC.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if loaders.search(line) and not ("torch.load" in line and "weights_only=True" in line):
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert found == ["data/_pickle.py:35: class _RestrictedUnpickler(pickle.Unpickler):"], found


# ------------------------------------------------------------------------------------ corrupt and truncated files
@pytest.mark.parametrize("keep", [0.0, 0.003, 0.5, 0.999])
def test_truncated_checkpoint(keep: float, runs: Path, tmp_path: Path) -> None:
    run = copy_run(runs, tmp_path)
    checkpoint = run / "checkpoint.safetensors"
    catalogue.truncate(checkpoint, keep)
    refused(["eval", run], checkpoint, "not a readable safetensors checkpoint")
    refused(["train", "--resume", run], checkpoint)


def test_checkpoint_of_another_format_or_with_corrupt_state(runs: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from bitsmith.engine import checkpoint as ck

    run = copy_run(runs, tmp_path)
    path = run / "checkpoint.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    refused(["eval", run], path, "not a bitsmith checkpoint")
    for state, problem in (("[1, 2]", "checkpoint state is corrupt (a JSON list, not an object)"),
                           ('{"model": {"__tensor__": "gone"}}', "checkpoint state is corrupt"),
                           ("{not json", "checkpoint state is corrupt"),
                           ('{"epoch": 3}', "checkpoint holds no model state")):
        save_file({"w": torch.zeros(2)}, str(path), metadata={"format": ck.FORMAT, ck.STATE_KEY: state})
        refused(["eval", run], path, problem)


def test_corrupt_run_config(runs: Path, tmp_path: Path) -> None:
    run = copy_run(runs, tmp_path)
    config = run / "config.json"
    good = json.loads(config.read_text())
    config.write_text(json.dumps(good)[:40])
    refused(["eval", run], config, "not valid JSON")
    for broken, problem in (({**good, "train": {**good["train"], "epochs": "ten"}},
                             "train.epochs: expected an integer, got 'ten'"),
                            ({**good, "train": 5}, "train: expected an object, got 5"),
                            ({**good, "train": {**good["train"], "wings": 2}}, "train: unknown key(s) wings"),
                            ({"model": "lenet5"}, "not a bitsmith run config (no 'train' section)"),
                            ({**good, "model_transforms": {"name": "quantize"}}, "model_transforms must be a list"),
                            ({**good, "model_transforms": [{"config": {}}]}, "model_transforms[0] has no \"name\""),
                            ({**good, "model_transforms": [{"name": "quantize", "config": {"weight_bits": "x"}}]},
                             "model_transforms[0] (quantize): QConfig.weight_bits: expected an integer")):
        config.write_text(json.dumps(broken))
        for argv in (["eval", run], ["train", "--resume", run], ["cost", "--run", run]):
            refused(argv, config, problem)
    config.write_text(json.dumps({"train": {**good["train"], "epochs": 0}}))
    refused(["train", "--config", config, "--out", tmp_path / "out"], f"{config}: train: epochs must be a positive")
    config.write_text(json.dumps(good)[:40])
    refused(["train", "--config", config, "--out", tmp_path / "out"], config, "not valid JSON")
    assert not (tmp_path / "out").exists()


def test_corrupt_metrics_log(runs: Path, tmp_path: Path) -> None:
    run = copy_run(runs, tmp_path)
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"type": "epoch", "epo\n')
    lines = len((run / "metrics.jsonl").read_text().splitlines())
    with pytest.raises(CheckpointError, match=re.escape(f"{run / 'metrics.jsonl'}:{lines}: not a JSON line")):
        bitsmith_runs.read_metrics(run)


def test_corrupt_ghn_file(tmp_path: Path) -> None:
    from bitsmith.methods.ghn.io import PRETRAINED_DIR

    ghn = tmp_path / "ghn.safetensors"
    ghn.write_bytes((PRETRAINED_DIR / "digits.safetensors").read_bytes()[:5000])
    refused(["predict", "--ghn", ghn, "--out", tmp_path / "out"], ghn, "not a readable safetensors file")
    assert not (tmp_path / "out").exists()


def mnist(tmp_path: Path) -> Path:
    return catalogue.mnist_folder(tmp_path / "mnist")


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda f: catalogue.idx_file(f, np.zeros((20, 28, 28), np.uint8), magic=0x00000D03), "bad IDX magic number"),
    (lambda f: f.write_bytes(b"\x00\x00"), "is truncated: 2 bytes"),
    (lambda f: f.write_bytes(f.read_bytes()[:10]), "is truncated: 10 bytes, its IDX header needs 16"),
    (lambda f: catalogue.truncate(f, 0.6), "has a size mismatch: its header says 20 x 28 x 28"),
    (lambda f: f.write_bytes(f.read_bytes() + b"\x00"), "has a size mismatch"),
], ids=["magic", "no-header", "short-header", "truncated", "trailing-byte"])
def test_corrupt_idx_file(damage, problem: str, tmp_path: Path) -> None:
    images = mnist(tmp_path) / "train-images-idx3-ubyte"
    damage(images)
    refused(["train", "--dataset", "mnist", "--data-root", images.parent, "--out", tmp_path / "out"],
            f"'{images}'", problem)
    assert not (tmp_path / "out" / "config.json").exists()


def test_bad_gzip_idx_file(tmp_path: Path) -> None:
    folder = mnist(tmp_path)
    labels = folder / "t10k-labels-idx1-ubyte"
    gz = labels.with_name(labels.name + ".gz")
    gz.write_bytes(gzip.compress(labels.read_bytes())[:-8])
    labels.unlink()
    refused(["train", "--dataset", "mnist", "--data-root", folder, "--out", tmp_path / "out"],
            f"'{gz}' is not a valid gzip file")


@pytest.mark.parametrize(("batch", "problem"), [
    (lambda: catalogue.cifar_batch()[:300], "is not a readable data pickle"),
    (lambda: b"", "is not a readable data pickle"),
    (lambda: pickle.dumps({b"data": np.zeros((4, 3072), np.uint8)}), "lacks the 'data' or 'labels' entry"),
    (lambda: pickle.dumps([1, 2, 3]), "holds a list, not a CIFAR batch dict"),
    (lambda: pickle.dumps({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}), "expected uint8"),
    (lambda: pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1]}), "holds 2 labels for 4"),
    (lambda: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "has label 10 at index 1"),
], ids=["truncated", "empty", "missing-labels", "not-a-dict", "float-data", "label-count", "label-range"])
def test_corrupt_cifar_batch(batch, problem: str, tmp_path: Path) -> None:
    folder = catalogue.cifar_folder(tmp_path / "cifar", first=batch())
    refused(["train", "--dataset", "cifar10", "--data-root", folder, "--out", tmp_path / "out"],
            f"'{folder / 'data_batch_1'}'", problem)
    assert not (tmp_path / "out" / "config.json").exists()


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda f: f.write_text("not an image"), "cannot identify image file"),
    (lambda f: catalogue.truncate(f, 0.5), "cannot read image"),
    (lambda f: f.write_bytes(b""), "cannot identify image file"),
], ids=["text", "truncated", "empty"])
def test_corrupt_image(damage, problem: str, tmp_path: Path) -> None:
    folder = catalogue.image_folder(tmp_path / "images", size=32)
    image = folder / "b" / "3.png"
    damage(image)
    refused(["train", "--dataset", "imagefolder", "--data-root", folder, "--out", tmp_path / "out"],
            f"cannot read image '{image}'", problem)
    assert not (tmp_path / "out" / "config.json").exists()
