"""Crash-safety tooling: kill points that make a process SIGKILL itself at an exact moment, and a check that every
file of a run directory is whole.

Kill points exist only for tests and the reliability benchmark: nothing is armed unless the environment variable
``BITSMITH_KILL_AT`` names one (checked once, when ``bitsmith.engine`` is imported). Its forms:

- ``step:N``: right after the N-th optimizer step of the process (any optimizer): mid-epoch.
- ``write:NAME:N``: during the N-th atomic write of a file called NAME (e.g. ``checkpoint.safetensors``,
  ``report.md``): its temporary file is cut to half its size, as a crash mid-write leaves it, and never renamed.
- ``rename:NAME:N``: right after the N-th atomic write of NAME was renamed into place, before anything else.

Example: ``BITSMITH_KILL_AT=write:checkpoint.safetensors:2 bitsmith train --epochs 4 --out RUN``.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

ENV = "BITSMITH_KILL_AT"
KINDS = ("step", "write", "rename")
PNG_HEAD = b"\x89PNG\r\n\x1a\n"
PNG_TAIL = b"IEND\xaeB`\x82"


@dataclass(frozen=True)
class KillPoint:
    """Where a process kills itself: ``kind`` (step | write | rename), the file name it watches (write and
    rename) and the occurrence ``count`` (1-based)."""

    kind: str
    count: int
    target: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.count}" if self.kind == "step" else f"{self.kind}:{self.target}:{self.count}"


def parse(spec: str) -> KillPoint:
    """A KillPoint from ``step:N``, ``write:NAME:N`` or ``rename:NAME:N``; anything else raises ValueError."""
    kind, _, rest = spec.partition(":")
    target, _, count = rest.rpartition(":")
    if kind not in KINDS or not count.isdigit() or int(count) < 1 or (kind == "step") != (target == ""):
        raise ValueError(f"{ENV}={spec!r}: expected step:N, write:NAME:N or rename:NAME:N (N >= 1)")
    return KillPoint(kind, int(count), target)


def die() -> NoReturn:
    """SIGKILL this process: no cleanup, no flushing, like a power cut or the OOM killer."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise SystemExit(137)  # unreachable: SIGKILL cannot be caught


class _KillingOs:
    """Stands in for the ``os`` module inside ``bitsmith._io`` and watches its renames of temporary files."""

    def __init__(self, real: Any, point: KillPoint) -> None:
        self._real = real
        self._point = point
        self._seen = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def replace(self, src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(dst).name == self._point.target:
            self._seen += 1
            if self._seen == self._point.count:
                if self._point.kind == "write":
                    with open(src, "rb+") as fh:
                        fh.truncate(os.path.getsize(src) // 2)
                    die()
                self._real.replace(src, dst, *args, **kwargs)
                die()
        self._real.replace(src, dst, *args, **kwargs)


def arm(point: KillPoint) -> None:
    """Make this process kill itself at ``point``."""
    if point.kind == "step":
        from torch.optim.optimizer import register_optimizer_step_post_hook

        steps = [0]

        def after_step(optimizer: Any, args: Any, kwargs: Any) -> None:
            steps[0] += 1
            if steps[0] == point.count:
                die()

        register_optimizer_step_post_hook(after_step)
        return
    from bitsmith import _io

    _io.os = _KillingOs(os, point)  # type: ignore[assignment]


def arm_from_env() -> KillPoint | None:
    """Arm the kill point ``BITSMITH_KILL_AT`` names, if it is set; returns it (None: nothing armed)."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    point = parse(spec)
    arm(point)
    return point


def _check_file(path: Path) -> str | None:
    """Why ``path`` is not a whole file of its type, or None if it is."""
    from bitsmith import _io
    from bitsmith.engine.checkpoint import load_checkpoint

    suffix = path.suffix
    try:
        if suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".jsonl":
            text = path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):
                return "last line is cut"
            for line in text.splitlines():
                json.loads(line)
        elif suffix == ".safetensors":
            if path.name == "checkpoint.safetensors":
                load_checkpoint(path)
            else:
                _io.load_tensors(path)
        elif suffix == ".png":
            data = path.read_bytes()
            if not (data.startswith(PNG_HEAD) and data.endswith(PNG_TAIL)):
                return "not a complete PNG"
        elif suffix in (".md", ".txt", ".html"):
            path.read_text(encoding="utf-8")
    except (ValueError, OSError) as exc:  # JSONDecodeError, UnicodeDecodeError and CheckpointError are ValueErrors
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def temp_files(run_dir: str | Path) -> list[Path]:
    """The temporary files of unfinished atomic writes (``.NAME.*.tmp``) anywhere under ``run_dir``."""
    return sorted(Path(run_dir).rglob(".*.tmp"))


def run_dir_problems(run_dir: str | Path) -> list[str]:
    """What is wrong with the files of a run directory (empty if nothing): every JSON, JSONL, safetensors, PNG and
    text file must parse whole, and metrics.jsonl must be a prefix of the checkpoint's history (never ahead of it).
    Temporary files of unfinished writes are not results and are not checked (see :func:`temp_files`)."""
    from bitsmith.engine.checkpoint import load_checkpoint

    root = Path(run_dir)
    problems = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            problem = _check_file(path)
            if problem is not None:
                problems.append(f"{path.relative_to(root)}: {problem}")
    metrics, checkpoint = root / "metrics.jsonl", root / "checkpoint.safetensors"
    if not problems and metrics.is_file() and checkpoint.is_file():
        records = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()]
        history = load_checkpoint(checkpoint).get("history", [])
        if records != history[:len(records)]:
            problems.append("metrics.jsonl is not a prefix of the checkpoint's history")
    return problems
