"""Every row of the error catalogue (tests/errors_catalogue.py): exit code 2, one line naming the problem, no
traceback, nothing left behind; and docs/ERRORS.md is exactly what the catalogue prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import errors_catalogue as catalogue

MESSAGES: dict[str, tuple[str, str]] = {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared runs every row may start from (runs/fp, runs/q)."""
    torch.set_num_threads(1)
    return catalogue.prepare_runs(tmp_path_factory.mktemp("catalogue") / "runs")


def test_catalogue_is_broad() -> None:
    ids = [row.id for row in catalogue.ROWS]
    commands = {catalogue._command(row) for row in catalogue.ROWS}
    assert len(ids) == len(set(ids)) >= 25
    assert len({row.kind for row in catalogue.ROWS}) >= 15
    assert commands >= {"train", "eval", "quantize", "directq", "cgmq", "search", "grid", "rpg", "predict",
                        "ghn train", "ghn eval", "export", "cost", "report", "compare"}


@pytest.mark.parametrize("row", catalogue.ROWS, ids=lambda row: row.id)
def test_row(row: catalogue.Row, runs: Path, tmp_path: Path) -> None:
    outcome, cwd = catalogue.run_row(row, tmp_path, runs)
    message = outcome.stderr.strip()
    assert outcome.code == 2, (outcome.code, outcome.stderr, outcome.stdout)
    assert len(message.splitlines()) == 1 and message.startswith("error: "), message
    assert "Traceback" not in outcome.stderr + outcome.stdout
    assert row.expect in catalogue.normalise(message, cwd, runs), message
    assert catalogue.leftovers(row, cwd) == []
    assert not (cwd / catalogue.MARKER).exists()
    MESSAGES[row.id] = (catalogue.normalise(message, cwd, runs), outcome.raised)


def test_row_through_the_installed_command(runs: Path, tmp_path: Path) -> None:
    """The real entry point, in a fresh process (warnings and all): the same single line, and a malicious checkpoint
    runs nothing (tests/test_cli_train.py runs an unknown model through it too)."""
    row = next(r for r in catalogue.ROWS if r.id == "eval-pickled-checkpoint")
    cwd = catalogue.workdir(row, tmp_path, runs)
    command = Path(sys.executable).with_name("bitsmith")
    argv = [str(command)] if command.exists() else [sys.executable, "-m", "bitsmith.cli.main"]
    proc = subprocess.run([*argv, *row.argv], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and row.expect in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (cwd / catalogue.MARKER).exists()


def test_errors_md_is_generated_from_the_catalogue(runs: Path, tmp_path: Path) -> None:
    missing = [row for row in catalogue.ROWS if row.id not in MESSAGES]
    for row in missing:  # rows not run above (e.g. under -k): run them now
        outcome, cwd = catalogue.run_row(row, tmp_path, runs)
        MESSAGES[row.id] = (catalogue.normalise(outcome.stderr.strip(), cwd, runs), outcome.raised)
    expected = catalogue.render(MESSAGES)
    assert catalogue.DOC.read_text(encoding="utf-8") == expected, f"docs/ERRORS.md is stale; run {catalogue.REGENERATE}"
