"""Checkpoints as data, never code: one safetensors file holding tensors, with all other state as JSON metadata.

Keeping the JSON state inside the same file makes the checkpoint one atomic write: model, optimizer, scheduler,
RNG and callback state can never disagree after a crash.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bitsmith import _io
from bitsmith.errors import CheckpointError

FORMAT = "bitsmith.checkpoint/1"
STATE_KEY = "bitsmith_state"


def _split(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor inside nested dicts/lists by a reference, collecting the tensors under unique keys."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            key = str(k)
            out[key] = _split(v, f"{prefix}.{key}", tensors)
        int_keys = [str(k) for k in obj if isinstance(k, int)]
        if len(int_keys) + sum(isinstance(k, str) for k in obj) != len(obj):
            raise CheckpointError(f"cannot checkpoint a dict with keys other than str/int at {prefix}")
        return {"__intkeys__": int_keys, "items": out} if int_keys else out
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot checkpoint a value of type {type(obj).__name__} at {prefix}")


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__intkeys__", "items"}:
            ints = set(obj["__intkeys__"])
            return {(int(k) if k in ints else k): _join(v, tensors) for k, v in obj["items"].items()}
        return {k: _join(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (nested dicts/lists of tensors and JSON values) to one safetensors file, atomically."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(state, "s", tensors)
    meta = {"format": FORMAT, STATE_KEY: json.dumps(skeleton)}
    return _io.save_tensors(path, tensors, metadata=meta)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a missing, corrupt or foreign file is refused clearly."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    tensors, meta = _io.load_tensors(path, map_location, "safetensors checkpoint")
    if meta.get("format") != FORMAT or STATE_KEY not in meta:
        raise CheckpointError(f"{path}: not a bitsmith checkpoint (format {meta.get('format')!r}; expected {FORMAT!r})")
    try:
        state = _join(json.loads(meta[STATE_KEY]), tensors)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: checkpoint state is corrupt ({exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: checkpoint state is corrupt (a JSON {type(state).__name__}, not an object)")
    return state


def model_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's state_dict inside a loaded checkpoint."""
    try:
        return state["model"]
    except KeyError:
        raise CheckpointError("checkpoint holds no model state") from None


def check_shared(model: torch.nn.Module, weights: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint that gives different values to names the model shares one tensor under (e.g. one
    activation quantizer read by two layers), instead of silently keeping whichever loaded last."""
    names: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        names.setdefault(id(tensor), []).append(name)
    for group in names.values():
        given = [n for n in group if isinstance(weights.get(n), torch.Tensor)]
        differ = [n for n in given[1:] if not torch.equal(weights[given[0]], weights[n])]
        if differ:
            raise CheckpointError(f"{path}: checkpoint has different values for {given[0]} and {differ[0]}, which "
                                  "this version of the model shares (one quantizer per tensor); the run was made "
                                  "by an older bitsmith: re-create it")
