"""Dataclass configs that round-trip through JSON, with unknown keys and bad types refused clearly."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from bitsmith import _io
from bitsmith.errors import ConfigError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (possibly nested) dataclass config; tuples become lists."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"expected a dataclass config, got {type(cfg).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any or tp is None:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {value!r}")
        return from_dict(tp, value, where=where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            items = [_coerce(v, a, where) for v, a in zip(value, args, strict=False)]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrongly typed values raise ConfigError. A class may
    define ``upgrade(data) -> data`` that maps keys of files written by older versions onto its current fields. With
    ``where`` (e.g. the file the data came from), the class's own validation errors are prefixed by it too."""
    named, where = where is not None, where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {data!r}")
    upgrade = getattr(cls, "upgrade", None)
    if callable(upgrade):
        data = upgrade(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if not named:
            raise
        raise ConfigError(f"{where}: {exc}") from None


def save(cfg: Any, path: str | Path) -> Path:
    """Write a dataclass config as JSON atomically."""
    return _io.write_json(path, to_dict(cfg))


def load(cls: type[T], path: str | Path) -> T:
    """Read a dataclass config from a JSON file, with a one-line error for a missing or corrupt file."""
    path = Path(path)
    data = _io.read_json(path, "config file", ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at top level")
    return from_dict(cls, data, where=path.name)


class JsonConfig:
    """Mixin for dataclass configs: ``to_dict`` / ``from_dict`` / ``save`` / ``load`` through the functions above."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return to_dict(self)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Build from a dict (unknown keys and bad types raise ConfigError)."""
        return from_dict(cls, data)

    def save(self, path: str | Path) -> Path:
        """Write as JSON atomically."""
        return save(self, path)

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        """Read from a JSON file."""
        return load(cls, path)
