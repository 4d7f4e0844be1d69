"""The model registry: builders by name, validated arguments, and a rebuildable spec on each model."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from bitsmith.errors import BitsmithError, ConfigError

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    description: str
    min_image_size: int
    defaults: dict[str, Any]


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, description: str, *, min_image_size: int = 1) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(num_classes, in_channels, image_size, *, **options)`` as ``name``.

    Options are the builder's keyword-only parameters; each needs a JSON-able default, whose type is enforced.
    ``min_image_size`` is the smallest height/width the network's downsampling accepts.
    """

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise BitsmithError(f"model {name!r} is already registered")
        defaults: dict[str, Any] = {}
        for param in inspect.signature(builder).parameters.values():
            if param.kind is inspect.Parameter.KEYWORD_ONLY:
                if param.default is inspect.Parameter.empty:
                    raise TypeError(f"option {param.name!r} of model {name!r} needs a default")
                defaults[param.name] = param.default
        _REGISTRY[name] = _Entry(builder, description, min_image_size, defaults)
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise BitsmithError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _REGISTRY[name]


def _options_text(defaults: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in defaults.items()) or "none"


def describe(name: str) -> str:
    """One line naming the model, what it is and its options with their defaults (for ``bitsmith models``)."""
    entry = _entry(name)
    return f"{name}: {entry.description} (options: {_options_text(entry.defaults)})"


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def _image_hw(value: Any, name: str, min_size: int) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigError(f"image_size must be an integer or a pair [height, width], got {value!r}")
        hw = (_positive_int(value[0], "image_size height"), _positive_int(value[1], "image_size width"))
    else:
        side = _positive_int(value, "image_size")
        hw = (side, side)
    if min(hw) < min_size:
        raise ConfigError(
            f"image_size {hw[0]}x{hw[1]} is too small for {name}, which downsamples by {min_size}: "
            f"height and width must be >= {min_size}"
        )
    return hw


def _check_option(name: str, key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"option {key} of {name} must be {type(default).__name__}, got {value!r}")
    return value


def input_shape(model: nn.Module, shape: Sequence[int] | None = None) -> tuple[int, ...] | None:
    """``shape`` as a tuple if given, else the (C, H, W) input a zoo model records in ``bitsmith_spec``, else None
    (a model of the user's own)."""
    if shape is not None:
        return tuple(shape)
    spec = getattr(model, "bitsmith_spec", None)
    if isinstance(spec, dict) and "in_channels" in spec and "image_size" in spec:
        size = spec["image_size"]
        hw = list(size) if isinstance(size, (list, tuple)) else [size, size]
        return (int(spec["in_channels"]), *(int(v) for v in hw))
    return None


def create_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int | tuple[int, int] = 32,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model for ``in_channels`` x ``image_size`` inputs and ``num_classes`` outputs.

    The model carries ``bitsmith_spec``, a JSON-able dict such that ``create_model(**model.bitsmith_spec)``
    rebuilds the same architecture.
    """
    entry = _entry(name)
    num_classes = _positive_int(num_classes, "num_classes")
    in_channels = _positive_int(in_channels, "in_channels")
    hw = _image_hw(image_size, name, entry.min_image_size)
    unknown = sorted(set(kwargs) - set(entry.defaults))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for {name}; accepted: {_options_text(entry.defaults)}"
        )
    options = {key: _check_option(name, key, kwargs.get(key, d), d) for key, d in entry.defaults.items()}
    model = entry.builder(num_classes, in_channels, hw, **options)
    model.bitsmith_spec = {
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "image_size": [hw[0], hw[1]],
        **options,
    }
    return model
