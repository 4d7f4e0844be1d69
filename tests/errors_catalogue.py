"""The catalogue of user errors: every kind of bad input the CLI detects, with the exact one-line message it prints.

Each row says how to make the bad input (files written into an empty working folder), the command to run there,
and a fragment its message must hold. ``tests/test_errors_catalogue.py`` runs every row and checks exit code 2,
one line on stderr, no traceback and no output left behind; ``docs/ERRORS.md`` is generated from the rows and
the messages they print, and a test fails when it is stale. Regenerate it with::

    .venv/bin/python tests/errors_catalogue.py --write docs/ERRORS.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REGENERATE = ".venv/bin/python tests/errors_catalogue.py --write docs/ERRORS.md"
DOC = Path(__file__).resolve().parent.parent / "docs" / "ERRORS.md"
MARKER = "pwned"  # the file a malicious pickle would create in the working folder if it were ever unpickled
FAST = ("--epochs", "1", "--threads", "1", "--quiet")


# ---------------------------------------------------------------------------------------------- bad-input makers
class Payload:
    """An object whose unpickling runs a shell command: what a malicious "checkpoint" or dataset file holds."""

    def __init__(self, marker: str | os.PathLike = MARKER) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Callable[..., int], tuple[str]]:
        return os.system, (f"touch '{self.marker}'",)


def evil_pickle(path: Path, marker: str | os.PathLike = MARKER) -> Path:
    """Write a plain pickle that would run ``touch marker`` when loaded with ``pickle.load``."""
    path.write_bytes(pickle.dumps({"model": Payload(marker)}))
    return path


def evil_torch_file(path: Path, marker: str | os.PathLike = MARKER) -> Path:
    """Write a ``torch.save`` zip archive whose pickle would run ``touch marker`` under ``torch.load``."""
    import torch

    torch.save({"model": Payload(marker)}, path)
    return path


def idx_file(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """Write ``array`` (uint8) as an IDX file, with the right magic number unless ``magic`` is given."""
    magic = (0x08 << 8) | array.ndim if magic is None else magic
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())
    return path


def mnist_folder(folder: Path, n: int = 20) -> Path:
    """A valid MNIST folder (the four IDX files) of ``n`` blank 28x28 images per split."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.arange(n, dtype=np.uint8) % 10
    for prefix in ("train", "t10k"):
        idx_file(folder / f"{prefix}-images-idx3-ubyte", np.zeros((n, 28, 28), np.uint8))
        idx_file(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


def cifar_batch(n: int = 10) -> bytes:
    """A valid CIFAR-10 python batch of ``n`` blank images, pickled as the official files are."""
    return pickle.dumps({b"data": np.zeros((n, 3 * 32 * 32), np.uint8), b"labels": [i % 10 for i in range(n)]},
                        protocol=2)


def cifar_folder(folder: Path, first: bytes | None = None) -> Path:
    """A CIFAR-10 batch folder of valid batches, with ``data_batch_1`` replaced by ``first`` when given."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        (folder / name).write_bytes(cifar_batch())
    if first is not None:
        (folder / "data_batch_1").write_bytes(first)
    return folder


def image_folder(folder: Path, size: int = 8, per_class: int = 5) -> Path:
    """An image folder of two classes (a, b) of random RGB PNGs, ``size`` x ``size``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / cls / f"{i}.png")
    return folder


def copy_run(cwd: Path, name: str, source: str = "fp") -> Path:
    """A private copy of the shared run ``runs/<source>`` that a row may damage."""
    return Path(shutil.copytree(cwd / "runs" / source, cwd / name))


def edit_config(run: Path, edit: Callable[[dict], None]) -> None:
    """Change a run's config.json in place."""
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to the first ``keep`` fraction of its bytes, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda cwd: (cwd / name).write_text(text)


def _bits(layer: str) -> Callable[[Path], None]:
    return _write("bits.json", json.dumps({"version": 1, "layers": {layer: {"weight_bits": 4, "act_bits": 4}}}))


def _truncated_checkpoint(cwd: Path) -> None:
    truncate(copy_run(cwd, "trunc") / "checkpoint.safetensors")


def _pickled_checkpoint(cwd: Path) -> None:
    evil_pickle(copy_run(cwd, "evil") / "checkpoint.safetensors")


def _smaller_images(cwd: Path) -> None:
    edit_config(copy_run(cwd, "resized"), lambda c: c["train"].update(image_size=8))


def _transforms_text(cwd: Path) -> None:
    edit_config(copy_run(cwd, "broken"), lambda c: c.update(model_transforms="quantize"))


def _bad_magic(cwd: Path) -> None:
    folder = mnist_folder(cwd / "mnist")
    idx_file(folder / "train-images-idx3-ubyte", np.zeros((20, 28, 28), np.uint8), magic=0x00000801)


def _truncated_cifar(cwd: Path) -> None:
    batch = cifar_batch()
    cifar_folder(cwd / "cifar", first=batch[:len(batch) // 2])


def _malicious_cifar(cwd: Path) -> None:
    cifar_folder(cwd / "cifar")
    evil_pickle(cwd / "cifar" / "data_batch_1")


def _not_an_image(cwd: Path) -> None:
    image_folder(cwd / "images")
    (cwd / "images" / "a" / "notes.png").write_text("these are notes, not an image")


# --------------------------------------------------------------------------------------------------- the rows
@dataclass(frozen=True)
class Row:
    """One user error: ``setup`` writes the bad input into an empty folder holding ``runs/`` (see
    :func:`prepare_runs`), ``argv`` runs there, its message holds ``expect``; ``out`` is what the command would
    have written, which must not exist afterwards (or be an empty folder)."""

    id: str
    kind: str
    what: str
    argv: tuple[str, ...]
    expect: str
    setup: Callable[[Path], None] | None = None
    out: str | None = None


def _row(id: str, kind: str, what: str, argv: str, expect: str, setup: Callable[[Path], None] | None = None,
         out: str | None = "out") -> Row:
    """A row from a command line; ``out`` (the output path to check) only counts when the command names it."""
    args = tuple(argv.split())
    return Row(id, kind, what, args, expect, setup, out if out is None or out in args else None)


UNKNOWN = "unknown name"
BITS = "bit width out of range"
RANGE = "value out of range"
MALFORMED = "malformed option value"
CONFLICT = "conflicting options"
BUDGET = "infeasible budget"
MISSING = "missing file or folder"
CORRUPT = "corrupt or truncated file"
CONFIG = "malformed config file"
UNTRUSTED = "untrusted file (pickle)"
WRONG_FILE = "wrong kind of file or run"
DATA_FOLDER = "wrong data folder"
DATA_FILE = "corrupt dataset file"
SHAPE = "shape mismatch"
LAYER = "unsupported layer"
GHN = "architecture a GHN cannot serve"
OUTPUT = "unusable output path"
STATE = "run in the wrong state"

ROWS: tuple[Row, ...] = (
    _row("train-unknown-model", UNKNOWN, "a model the zoo does not have",
         "train --model alexnet --out out", "unknown model 'alexnet'; available:"),
    _row("train-unknown-optimizer", UNKNOWN, "an optimizer bitsmith does not know",
         "train --optimizer lion --out out", "unknown optimizer 'lion'; accepted: adam, adamw, sgd"),
    _row("train-unknown-precision", UNKNOWN, "a training precision bitsmith does not have",
         "train --precision fp16 --out out", "unknown precision 'fp16'; accepted: fp32, bf16"),
    _row("train-zero-epochs", RANGE, "zero training epochs",
         "train --epochs 0 --out out", "epochs must be a positive integer, got 0"),
    _row("train-not-an-integer", MALFORMED, "a word where a number belongs",
         "train --epochs ten --out out", "'ten' is not a valid integer"),
    _row("train-no-such-option", MALFORMED, "an option no command has",
         "train --no-such-flag --out out", "No such option"),
    _row("train-config-truncated", CORRUPT, "--config names a truncated JSON file",
         "train --config config.json --out out", "config.json: not valid JSON",
         _write("config.json", '{"train": {"model": "lenet5", "epochs": ')),
    _row("train-config-wrong-type", CONFIG, "--config holds a string where an integer belongs",
         "train --config config.json --out out", "config.json: train.epochs: expected an integer, got 'ten'",
         _write("config.json", json.dumps({"train": {"model": "lenet5", "dataset": "digits", "epochs": "ten"}}))),
    _row("train-config-missing", MISSING, "--config names a file that does not exist",
         "train --config none.json --out out", "none.json: --config file not found"),
    _row("train-mnist-empty-folder", DATA_FOLDER, "--data-root holds no MNIST files",
         "train --dataset mnist --data-root empty --out out", "mnist: folder 'empty' lacks train-images-idx3-ubyte",
         lambda cwd: (cwd / "empty").mkdir()),
    _row("train-imagefolder-no-classes", DATA_FOLDER, "an image folder without class sub-folders",
         "train --dataset imagefolder --data-root empty --out out", "has no class sub-folders",
         lambda cwd: (cwd / "empty").mkdir()),
    _row("train-mnist-bad-magic", DATA_FILE, "an IDX file whose magic number is not an image file's",
         "train --dataset mnist --data-root mnist --out out", "has bad IDX magic number 0x00000801", _bad_magic),
    _row("train-cifar-truncated", DATA_FILE, "a CIFAR batch cut in half",
         "train --dataset cifar10 --data-root cifar --out out", "is not a readable data pickle", _truncated_cifar),
    _row("train-cifar-malicious", UNTRUSTED, "a CIFAR batch that is a pickle running a shell command",
         "train --dataset cifar10 --data-root cifar --out out", "it references posix.system, which is not numpy",
         _malicious_cifar),
    _row("train-image-not-an-image", DATA_FILE, "a text file named .png in an image folder",
         "train --dataset imagefolder --data-root images --out out", "cannot read image 'images/a/notes.png'",
         _not_an_image),
    _row("train-resume-not-a-run", WRONG_FILE, "--resume names a folder that holds no run",
         "train --resume empty", "empty is not a bitsmith run directory (missing config.json",
         lambda cwd: (cwd / "empty").mkdir(), out=None),
    _row("train-out-is-a-file", OUTPUT, "--out names an existing file",
         "train --epochs 1 --out notes.txt", "--out notes.txt exists and is not a folder",
         _write("notes.txt", "keep me"), out=None),
    _row("eval-truncated-checkpoint", CORRUPT, "a checkpoint cut in half",
         "eval trunc", "trunc/checkpoint.safetensors: not a readable safetensors checkpoint", _truncated_checkpoint,
         out=None),
    _row("eval-pickled-checkpoint", UNTRUSTED, "checkpoint.safetensors that is a pickle running a shell command",
         "eval evil", "it is a Python pickle (e.g. torch.save), which could run code", _pickled_checkpoint,
         out=None),
    _row("eval-shape-mismatch", SHAPE, "config.json says 8x8 images, the checkpoint was trained on 16x16",
         "eval resized", "checkpoint does not match the run's model (size mismatch for classifier.0.weight",
         _smaller_images, out=None),
    _row("eval-config-transforms", CONFIG, "config.json's model_transforms is a string, not a list",
         "eval broken", "broken/config.json: model_transforms must be a list of steps, got str", _transforms_text,
         out=None),
    _row("eval-unknown-split", UNKNOWN, "a split no dataset has",
         "eval runs/fp --split holdout", "unknown split 'holdout'; accepted: train, val, test", out=None),
    _row("quantize-wbits-1", BITS, "1-bit weights",
         "quantize --from runs/fp --wbits 1 --out out", "weight bit width 1 is not supported; accepted: 2..8, 16, 32"),
    _row("quantize-abits-64", BITS, "64-bit activations",
         "quantize --from runs/fp --abits 64 --out out", "activation bit width 64 is not supported"),
    _row("quantize-unknown-method", UNKNOWN, "a quantizer method bitsmith does not have",
         "quantize --from runs/fp --method apot --out out", "unknown quantization method 'apot'; accepted: lsq"),
    _row("quantize-missing-run", MISSING, "--from names a run that does not exist",
         "quantize --from runs/none --out out", "runs/none: no such run directory"),
    _row("quantize-already-quantized", STATE, "--from names a quantized run",
         "quantize --from runs/q --out out", "runs/q is already a transformed (quantized) run; give a float run"),
    _row("quantize-bits-file-and-wbits", CONFLICT, "per-layer widths from a file and one width for all",
         "quantize --from runs/fp --bits-file bits.json --wbits 2 --out out",
         "use either --wbits or --bits-file, not both", _bits("features.0")),
    _row("quantize-bits-file-pool", LAYER, "bits.json gives bit widths to a max-pool layer",
         "quantize --from runs/fp --bits-file bits.json --out out",
         "names 'features.2' (MaxPool2d), which is not a Conv2d or Linear layer", _bits("features.2")),
    _row("cost-bits-file-pool", LAYER, "bits.json gives bit widths to a max-pool layer",
         "cost --model lenet5 --input 1x16x16 --bits-file bits.json", "'features.2' is not a conv/linear layer",
         _bits("features.2"), out=None),
    _row("directq-from-and-model", CONFLICT, "--from a run and --model for training from scratch",
         "directq --from runs/fp --model resnet20 --out out", "--model conflicts with --from runs/fp"),
    _row("directq-unknown-ablation", UNKNOWN, "an ablation DirectQ does not have",
         "directq --ideas half --out out", "unknown DirectQ ablation 'half'; accepted: both, weights, acts, none"),
    _row("cgmq-infeasible-bound", BUDGET, "a BOP bound below the cheapest reachable configuration",
         "cgmq --bop-budget 1e-6 " + " ".join(FAST) + " --out out",
         "is below the cheapest configuration the gates can reach"),
    _row("cgmq-decreasing-bits", RANGE, "gate widths that do not increase",
         "cgmq --bop-budget 0.5 --bits 8,4,2 --out out", "CGMQ bits must be at least two increasing widths"),
    _row("search-infeasible-budget", BUDGET, "an absolute BOPs budget below every configuration",
         "search --budget-bops 1000 --relative-to absolute " + " ".join(FAST) + " --out out",
         "BOPs budget 1000 is below the cheapest configuration of the search space"),
    _row("search-bits-not-integers", MALFORMED, "a bit-width list with a word in it",
         "search --budget-bops 0.5 --bits 2,four --out out", "--bits '2,four': expected comma-separated integers"),
    _row("search-resume-nothing", STATE, "--resume where no search was started",
         "search --budget-bops 0.5 --resume --out out", "--resume: out holds no search to continue"),
    _row("grid-no-configurations", RANGE, "a grid of zero configurations",
         "grid --budget-bops 0.5 --configs 0 " + " ".join(FAST) + " --out out",
         "the grid needs at least one configuration, got 0"),
    _row("rpg-dof-and-ratio", CONFLICT, "a ring size given twice, as a count and as a ratio",
         "rpg --model lenet5 --dof 10 --dof-ratio 0.1 --out out", "RPG needs exactly one of dof (ring size) or"),
    _row("rpg-ring-too-large", RANGE, "a ring larger than the weights it generates",
         "rpg --model lenet5 --dof 100000000 " + " ".join(FAST) + " --out out",
         "RPG dof 100000000 exceeds the 43200 weights it would generate"),
    _row("rpg-compress-float-run", WRONG_FILE, "rpg-compress given a run that is not an RPG run",
         "rpg-compress runs/fp", "runs/fp is not an rpg run", out=None),
    _row("predict-other-data", GHN, "a digits GHN asked for a model of 3x8x8 images in 2 classes",
         "predict --ghn digits --model lenet5 --dataset imagefolder --data-root images --out out",
         "this GHN was trained for 1x16x16 images and 10 classes; imagefolder has 3x8x8 inputs, 2 classes",
         lambda cwd: image_folder(cwd / "images")),
    _row("predict-checkpoint-as-ghn", WRONG_FILE, "--ghn names a training checkpoint, not a GHN file",
         "predict --ghn runs/fp/checkpoint.safetensors --out out", "not a bitsmith GHN file"),
    _row("predict-torch-file-as-ghn", UNTRUSTED, "--ghn names a torch.save file whose pickle runs a shell command",
         "predict --ghn model.pt --out out", "model.pt: not a readable safetensors file",
         lambda cwd: evil_torch_file(cwd / "model.pt")),
    _row("predict-abits-1", BITS, "1-bit activations for the predicted model",
         "predict --wbits 4 --abits 1 --out out", "activation bit width 1 is not supported"),
    _row("ghn-train-init-from-other-shape", GHN, "--init-from a GHN of another size than --hidden asks for",
         "ghn train --init-from digits --hidden 16 " + " ".join(FAST) + " --out out",
         "--init-from digits: its shape differs from the GHN to train (hidden 64 vs 16"),
    _row("ghn-train-quant-bits", BITS, "GHN-Q training at 9-bit activations",
         "ghn train --quant w4a9 --out out", "activation bit width 9 is not supported"),
    _row("ghn-train-resume-nothing", STATE, "--resume where no GHN training was started",
         "ghn train --resume --out out", "--resume: out holds no interrupted GHN training"),
    _row("ghn-eval-unknown-split", UNKNOWN, "a split of architectures that does not exist",
         "ghn eval --splits bogus --out out", "unknown GHN evaluation split(s) bogus"),
    _row("export-float-run", WRONG_FILE, "export given a float run",
         "export runs/fp --out model.onnx", "runs/fp holds a float model; quantize it first", out="model.onnx"),
    _row("export-unknown-format", UNKNOWN, "an export format bitsmith does not write",
         "export runs/q --format tflite --out model.tflite", "--format 'tflite' is not known; accepted: onnx, packed",
         out="model.tflite"),
    _row("export-packed-keep-bn", CONFLICT, "an ONNX-only option with the packed format",
         "export runs/q --format packed --keep-bn --out model.bin", "--opset and --keep-bn apply to --format onnx",
         out="model.bin"),
    _row("export-out-is-a-folder", OUTPUT, "--out names a folder, not a file",
         "export runs/q --out runs", "--out runs is a folder; give a file name", out=None),
    _row("cost-input-malformed", MALFORMED, "an input shape without its width",
         "cost --model lenet5 --input 1x16", "--input must be CxHxW with positive integers", out=None),
    _row("cost-wbits-33", BITS, "33-bit weights",
         "cost --model lenet5 --input 1x16x16 --wbits 33", "--wbits: bit width must be an integer from 1 to 32",
         out=None),
    _row("cost-run-and-model", CONFLICT, "a run's own model and a zoo model at once",
         "cost --run runs/fp --model lenet5", "--run costs the run's own model; leave out --model", out=None),
    _row("cost-image-too-small", SHAPE, "an input smaller than the model's downsampling",
         "cost --model lenet5 --input 1x2x2", "image_size 2x2 is too small for lenet5", out=None),
    _row("cost-bits-file-corrupt", CORRUPT, "--bits-file names a truncated JSON file",
         "cost --model lenet5 --input 1x16x16 --bits-file bits.json", "bits.json: not valid JSON",
         _write("bits.json", '{"version": 1, "layers": {'), out=None),
    _row("report-not-a-run", WRONG_FILE, "report given a folder that holds no run",
         "report empty", "empty is not a bitsmith run directory", lambda cwd: (cwd / "empty").mkdir(), out=None),
    _row("compare-missing-run", MISSING, "one of the runs to compare does not exist",
         "compare runs/fp runs/none --out out", "runs/none: no such run directory"),
)


# ----------------------------------------------------------------------------------------------- running rows
@dataclass(frozen=True)
class Outcome:
    """What one command did: exit code, stdout, stderr, and the class of the error behind the exit."""

    code: int
    stdout: str
    stderr: str
    raised: str


def invoke(argv: Sequence[str]) -> Outcome:
    """Run the ``bitsmith`` CLI in-process on ``argv`` and capture what it printed."""
    from bitsmith.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    raised = ""
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
        raised = type(exc.__context__).__name__ if exc.__context__ is not None else ""
    return Outcome(code, out.getvalue(), err.getvalue(), raised)


def prepare_runs(folder: Path) -> Path:
    """The runs rows start from: ``fp`` (LeNet-5 trained 1 epoch on digits) and ``q`` (its W8A8 PTQ)."""
    for argv in (("train", *FAST, "--out", str(folder / "fp")),
                 ("quantize", "--from", str(folder / "fp"), "--ptq", "--wbits", "8", "--abits", "8", "--threads",
                  "1", "--quiet", "--out", str(folder / "q"))):
        outcome = invoke(argv)
        if outcome.code != 0:
            raise RuntimeError(f"preparing {argv[0]} failed: {outcome.stderr}")
    return folder


def workdir(row: Row, root: Path, runs: Path) -> Path:
    """An empty folder for ``row`` with ``runs/`` linked to the shared runs, after the row's setup."""
    cwd = root / row.id
    cwd.mkdir(parents=True)
    (cwd / "runs").symlink_to(runs.resolve(), target_is_directory=True)
    if row.setup is not None:
        row.setup(cwd)
    return cwd


def run_row(row: Row, root: Path, runs: Path) -> tuple[Outcome, Path]:
    """Set ``row`` up under ``root`` and run its command in-process there; returns what it did and the folder."""
    cwd = workdir(row, root, runs)
    before = os.getcwd()
    os.chdir(cwd)
    try:
        return invoke(row.argv), cwd
    finally:
        os.chdir(before)


def normalise(text: str, cwd: Path, runs: Path) -> str:
    """``text`` with the machine's folders written as the row sees them (relative to its working folder)."""
    for folder, shown in ((runs.resolve(), "runs"), (cwd.resolve(), "."), (cwd, ".")):
        text = text.replace(f"{folder}{os.sep}", "" if shown == "." else f"{shown}{os.sep}")
        text = text.replace(str(folder), shown)
    return text


def leftovers(row: Row, cwd: Path) -> list[str]:
    """Files the failed command left at its output path (an empty folder is no output)."""
    if row.out is None:
        return []
    out = cwd / row.out
    if out.is_dir():
        return sorted(str(p.relative_to(cwd)) for p in out.rglob("*") if not p.is_dir())
    return [row.out] if out.exists() else []


def collect(rows: Iterable[Row] = ROWS, root: Path | None = None) -> dict[str, tuple[str, str]]:
    """Run ``rows``: row id -> (the message it printed, normalised; the error class)."""
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(root or tmp)
        runs = prepare_runs(base / "runs")
        found = {}
        for row in rows:
            outcome, cwd = run_row(row, base / "rows", runs)
            found[row.id] = (normalise(outcome.stderr.strip(), cwd, runs), outcome.raised)
    return found


# ------------------------------------------------------------------------------------------------ the document
_INTRO = """# Errors

Every mistake in a command's input ends the same way: one line on stderr that starts with `error:` and names what
is wrong (the file, option or value) and what is accepted, exit code 2, no traceback, and no half-written output:
files are written to a temporary name and renamed, so a failed command leaves at most an empty output folder.
Beside each row is the exception behind the message. Checks that live in the library raise it from the Python API
with the same text; all are subclasses of `bitsmith.errors.BitsmithError` (itself a `ValueError`): `ConfigError`,
`DataError`, `CheckpointError`, `UnsupportedLayerError`, ... `BadParameter` and `NoSuchOption` come from the
command line's own option parsing.

Each command below ran in an empty folder holding `runs/fp` (LeNet-5 trained for one epoch on digits:
`bitsmith train --epochs 1 --out runs/fp`) and `runs/q` (its W8A8 post-training quantization:
`bitsmith quantize --from runs/fp --ptq --wbits 8 --abits 8 --out runs/q`), plus the bad input the row describes.
The messages are the exact output.

This file is generated from `tests/errors_catalogue.py`, and `tests/test_errors_catalogue.py` runs every row and
fails when this file is stale. Regenerate it with:

```
{regenerate}
```
"""


def render(messages: dict[str, tuple[str, str]], rows: Sequence[Row] = ROWS) -> str:
    """docs/ERRORS.md: the rows grouped by kind, each with its command, exact message and error class."""
    kinds = list(dict.fromkeys(row.kind for row in rows))
    lines = [_INTRO.format(regenerate=REGENERATE), f"{len(rows)} errors of {len(kinds)} kinds:", "",
             "| kind | errors | commands |", "| --- | ---: | --- |"]
    for kind in kinds:
        members = [row for row in rows if row.kind == kind]
        commands = ", ".join(dict.fromkeys(_command(row) for row in members))
        lines.append(f"| [{kind}](#{_anchor(kind)}) | {len(members)} | {commands} |")
    for kind in kinds:
        lines += ["", f"## {kind[0].upper()}{kind[1:]}"]
        for row in (r for r in rows if r.kind == kind):
            message, raised = messages[row.id]
            lines += ["", f"`{row.id}`: {row.what}" + (f" (`{raised}`)" if raised else ""), "",
                      "```console", f"$ bitsmith {' '.join(row.argv)}", message, "```"]
    return "\n".join(lines) + "\n"


def _command(row: Row) -> str:
    return " ".join(row.argv[:2]) if row.argv[0] == "ghn" else row.argv[0]


def _anchor(kind: str) -> str:
    return "".join(c for c in kind.lower().replace(" ", "-") if c.isalnum() or c == "-")


def main(argv: Sequence[str] | None = None) -> int:
    """``--write FILE``: regenerate the document; ``--check FILE``: exit 1 if it is stale."""
    parser = argparse.ArgumentParser(description="Run the error catalogue and write or check docs/ERRORS.md.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, metavar="FILE")
    group.add_argument("--check", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    text = render(collect())
    if args.write is not None:
        args.write.write_text(text, encoding="utf-8")
        print(f"wrote {args.write} ({len(ROWS)} errors)")
        return 0
    stale = not args.check.is_file() or args.check.read_text(encoding="utf-8") != text
    print(f"{args.check} is {'stale: run ' + REGENERATE if stale else 'up to date'}")
    return int(stale)


if __name__ == "__main__":
    sys.exit(main())
