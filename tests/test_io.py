"""Atomic writes: whole files or nothing, ordinary permissions, no temporary files left behind."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from bitsmith import _io


def test_atomic_writes_have_ordinary_permissions_and_leave_no_temp(tmp_path):
    old = os.umask(0o022)
    try:
        paths = [_io.write_text(tmp_path / "a.txt", "x"), _io.write_json(tmp_path / "b.json", {"k": 1}),
                 _io.save_tensors(tmp_path / "c.safetensors", {"t": torch.ones(2)})]
    finally:
        os.umask(old)
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json", "c.safetensors"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = _io.write_text(tmp_path / "keep.txt", "old")

    def broken(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _io._atomic(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_append_jsonl(tmp_path):
    path = tmp_path / "m.jsonl"
    _io.append_jsonl(path, {"a": 1})
    _io.append_jsonl(path, {"b": 2})
    assert path.read_text().splitlines() == ['{"a": 1}', '{"b": 2}']
