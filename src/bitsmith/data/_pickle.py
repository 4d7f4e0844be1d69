"""A restricted unpickler for dataset files: numpy arrays, lists, dicts, strings and numbers only.

Unpickling can call any importable function, so a pickle from the internet is code. This reader refuses
every global except the few numpy needs to rebuild arrays: a malicious file fails with a DataError.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from bitsmith.errors import DataError

# (module, name) pairs numpy arrays and scalars pickle to, under numpy 1.x ("core") and 2.x ("_core"),
# plus the latin-1 bytes helper Python 3 uses for bytes in protocol-2 pickles.
ALLOWED_GLOBALS = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
})


class _Refused(Exception):
    """Raised inside the unpickler when a file references a global outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise _Refused(f"{module}.{name}")
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            swapped = module.replace("numpy._core", "numpy.core") if "._core" in module else \
                module.replace("numpy.core", "numpy._core")
            return super().find_class(swapped, name)


def load_data_pickle(path: Path) -> Any:
    """Unpickle ``path`` (``encoding="bytes"``, as the official CIFAR batches need), allowing data only."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read '{path}': {exc.strerror or exc}") from None
    try:
        return _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as exc:
        raise DataError(f"refusing to load '{path}': it references {exc}, which is not numpy array data "
                        f"(only plain data pickles are accepted)") from None
    except Exception as exc:  # any unpickling failure of a corrupt file: report it as one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"'{path}' is not a readable data pickle ({type(exc).__name__}: {reason})") from None
