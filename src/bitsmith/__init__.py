"""bitsmith: compact, low-bit convolutional networks under a hardware budget.

The public API is re-exported here lazily, so ``import bitsmith`` stays fast and a layer is only imported
when one of its names is used::

    model = bitsmith.create_model("lenet5", num_classes=10, in_channels=1, image_size=16)
    qmodel = bitsmith.quantize(model, bitsmith.QConfig(weight_bits=4, act_bits=4))
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors
    "BitsmithError": "bitsmith.errors",
    # zoo
    "create_model": "bitsmith.zoo",
    "list_models": "bitsmith.zoo",
    "register_model": "bitsmith.zoo",
    # data
    "list_datasets": "bitsmith.data",
    # engine
    "Trainer": "bitsmith.engine",
    "TrainConfig": "bitsmith.engine",
    "train": "bitsmith.engine",
    "evaluate": "bitsmith.engine",
    # graph / cost
    "trace": "bitsmith.graph",
    "Graph": "bitsmith.graph",
    "model_cost": "bitsmith.cost",
    "CostReport": "bitsmith.cost",
    "BitsAssignment": "bitsmith.cost",
    "DifferentiableCost": "bitsmith.cost",
    # quant
    "QConfig": "bitsmith.quant",
    "quantize": "bitsmith.quant",
    "calibrate": "bitsmith.quant",
    "integer_forward": "bitsmith.quant",
    # export
    "to_onnx": "bitsmith.export",
    "save_packed": "bitsmith.export",
    "load_packed": "bitsmith.export",
    # run directories
    "load_model": "bitsmith.runs",
    "quantize_run": "bitsmith.runs",
}

_SUBMODULES = {
    "data", "zoo", "engine", "graph", "cost", "quant", "methods", "export", "report", "cli", "errors", "runs",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"bitsmith.{name}")
    raise AttributeError(f"module 'bitsmith' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)
