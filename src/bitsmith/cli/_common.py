"""Helpers shared by CLI sub-commands: output-folder checks, printing results."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rich.console import Console

from bitsmith.errors import BitsmithError

console = Console(soft_wrap=True, highlight=False)


def check_writable_out(out: Path) -> Path:
    """Make sure ``out`` can be created and written before any long work starts."""
    if out.exists() and not out.is_dir():
        raise BitsmithError(f"--out {out} exists and is not a folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BitsmithError(f"--out {out} is not writable (no write permission on {existing})")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe."):
            pass
    except OSError as exc:
        raise BitsmithError(f"--out {out} is not writable ({exc.strerror})") from None
    return out


def percent(x: float) -> str:
    return f"{100 * x:.2f} %"
