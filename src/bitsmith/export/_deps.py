"""The optional packages of ``bitsmith[export]`` (onnx, onnxruntime), imported on first use with a one-line hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from bitsmith.errors import MissingDependencyError

HINT = "pip install bitsmith[export]"


def require(name: str, feature: str) -> ModuleType:
    """Import the optional package ``name`` that ``feature`` needs, or raise MissingDependencyError naming the extra."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise MissingDependencyError(f"{feature} needs the optional package {name}, which is not installed: "
                                     f"{HINT}") from None
