"""GHN files: one safetensors file with the hypernetwork's weights, its config and what it was trained on (JSON).

Loading reads data only (never code). Shipped hypernetworks live beside this module and load by name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from bitsmith import _io
from bitsmith.errors import CheckpointError, ConfigError
from bitsmith.methods.ghn.config import GHNConfig
from bitsmith.methods.ghn.model import GraphHyperNetwork

FORMAT = "bitsmith.ghn/1"
PRETRAINED_DIR = Path(__file__).parent / "pretrained"
GHN_FILE = "ghn.safetensors"


def shipped() -> list[str]:
    """Names of the hypernetworks that ship with the package (``load_ghn(name)``)."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.safetensors"))


def save_ghn(path: str | Path, ghn: GraphHyperNetwork, info: dict[str, Any] | None = None) -> Path:
    """Write ``ghn`` (weights, config and ``info`` such as dataset and training command) atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in ghn.state_dict().items()}
    meta = {"format": FORMAT, "config": json.dumps(ghn.config.to_dict()), "info": json.dumps(info or {})}
    return _io.save_tensors(path, state, metadata=meta)


def digest(ghn: GraphHyperNetwork) -> str:
    """SHA-256 of a hypernetwork's config and weights: what its predictions depend on, so that cached evaluation
    rows of one GHN are never reused for another (say, one retrained into the same folder)."""
    h = hashlib.sha256(json.dumps(ghn.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(ghn.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _resolve(source: str | Path) -> Path:
    path = Path(source)
    if path.is_dir():
        path = path / GHN_FILE
    if path.is_file():
        return path
    if isinstance(source, str) and (PRETRAINED_DIR / f"{source}.safetensors").is_file():
        return PRETRAINED_DIR / f"{source}.safetensors"
    names = ", ".join(shipped()) or "none"
    raise CheckpointError(f"{source}: no GHN file (give a .safetensors file, a GHN training run folder, or a shipped "
                          f"name: {names})")


def load_ghn(source: str | Path, map_location: str | torch.device = "cpu") -> GraphHyperNetwork:
    """A hypernetwork from a file, a ``bitsmith ghn train`` run folder, or a shipped name (e.g. ``"digits"``)."""
    path = _resolve(source)
    state, meta = _io.load_tensors(path, map_location)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a bitsmith GHN file (format {meta.get('format')!r}; expected {FORMAT!r})")
    try:
        config = GHNConfig.from_dict(json.loads(meta["config"]))
        ghn = GraphHyperNetwork(config)
        ghn.load_state_dict(state)
        ghn.info = json.loads(meta.get("info", "{}"))
    except (json.JSONDecodeError, KeyError, RuntimeError, ConfigError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: GHN file is corrupt or from another version ({first})") from None
    return ghn.eval()
