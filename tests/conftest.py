"""Shared test helpers."""

from __future__ import annotations

import pytest

from bitsmith.cli.main import main


def invoke(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the ``bitsmith`` CLI in-process: (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """``cli(*args) -> (exit code, stdout, stderr)`` of the ``bitsmith`` command run in-process."""
    return lambda *args: invoke(capsys, *args)
