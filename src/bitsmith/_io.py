"""Atomic file writes: every file bitsmith writes appears whole or not at all (temp name, fsync, rename)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch


def _default_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file (0o666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_json(path: str | os.PathLike, what: str = "file", error: type[Exception] = ValueError) -> Any:
    """Parse a JSON file; a missing file or bad JSON raises ``error`` with one line naming the file and problem."""
    return read_parsed(path, json.loads, (json.JSONDecodeError,), "JSON", what, error)


def read_parsed(path: str | os.PathLike, parse: Callable[[str], Any], bad: tuple[type[Exception], ...], fmt: str,
                what: str = "file", error: type[Exception] = ValueError) -> Any:
    """``parse`` the UTF-8 text of ``path`` (a JSON or TOML reader, ...); a missing file, bad encoding or any of the
    ``bad`` parse errors raises ``error`` with one line naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found")
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (*bad, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid {fmt} ({exc})") from None


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return _atomic(path, write)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return _atomic(path, write)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Append one JSON line by rewriting the file atomically, so a crash never leaves half a line."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    return write_text(path, old + json.dumps(dict(record)) + "\n")


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Save tensors as safetensors atomically (contiguous CPU copies; shared storage is cloned)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}

    def write(tmp: str) -> None:
        save_file(flat, tmp, metadata=dict(metadata) if metadata else None)

    return _atomic(path, write)


def load_tensors(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                 what: str = "safetensors file") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file (data only, never code); unreadable files raise CheckpointError."""
    from safetensors import SafetensorError, safe_open

    from bitsmith.errors import CheckpointError

    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable {what} ({first}){_pickle_hint(path)}") from None
    return tensors, meta


def _pickle_hint(path: str | os.PathLike) -> str:
    """Why a pickle or ``torch.save`` file is refused rather than loaded (empty for any other file)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return ""
    if head.startswith(b"PK\x03\x04"):
        return "; it is a zip archive (as torch.save writes) whose pickle could run code: only safetensors are read"
    if head[:1] == b"\x80":
        return "; it is a Python pickle (e.g. torch.save), which could run code: only safetensors are read"
    return ""


def savefig(path: str | os.PathLike, fig: Any, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically (format taken from ``path``'s suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return _atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs))
