"""Reading IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed, with one-line errors."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from bitsmith.errors import DataError

UBYTE = 0x08


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when its name ends in ``.gz``; unreadable or bad gzip is a DataError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read '{path}': {exc.strerror or _first_line(exc)}") from None
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"'{path}' is not a valid gzip file ({_first_line(exc)})") from None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file of ``ndim`` dimensions into a uint8 array.

    The magic number is 0x000008NN (NN = ``ndim``) and the dimensions are big-endian uint32; a wrong magic,
    a short header or a payload that does not match the dimensions is a DataError naming the file.
    """
    data = read_bytes(path)
    expected = (UBYTE << 8) | ndim
    if len(data) < 4:
        raise DataError(f"'{path}' is truncated: {len(data)} bytes, an IDX header needs {4 + 4 * ndim}")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected:
        raise DataError(f"'{path}' has bad IDX magic number 0x{magic:08x}; expected 0x{expected:08x} "
                        f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"'{path}' is truncated: {len(data)} bytes, its IDX header needs {header}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    payload = len(data) - header
    need = math.prod(dims)
    if payload != need:
        shape = " x ".join(str(d) for d in dims)
        raise DataError(f"'{path}' has a size mismatch: its header says {shape} = {need} bytes of data, "
                        f"the file holds {payload}{' (truncated)' if payload < need else ''}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()
