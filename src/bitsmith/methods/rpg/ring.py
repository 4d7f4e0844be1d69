"""The ring of free parameters and the fixed random map that generates every chosen weight from it (gather-based:
``weight = ring[index] * sign * scale``, recomputed on every access, so nothing stays materialised between steps
beyond what autograd keeps)."""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from bitsmith.errors import CheckpointError, ConfigError
from bitsmith.graph import trace
from bitsmith.methods.rpg.config import RPGConfig
from bitsmith.zoo import input_shape

#: Attribute under which a wrapped model holds its ring.
RING_ATTR = "rpg_ring"


def ring_map(total: int, dof: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed map of ``total`` generated weights onto a ring of ``dof`` entries: ring index of each weight (every
    index used ``total // dof`` or one more times, the assignment shuffled once) and its sign (+1/-1)."""
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(total, generator=gen)
    index = (order % dof).to(torch.int32)
    sign = (torch.randint(0, 2, (total,), generator=gen, dtype=torch.int8) * 2 - 1).to(torch.int8)
    return index, sign


def map_checksum(index: torch.Tensor, sign: torch.Tensor) -> int:
    """CRC-32 of the map (indices and signs): stored in checkpoints instead of the arrays, verified on load."""
    crc = zlib.crc32(index.cpu().numpy().tobytes())
    return zlib.crc32(sign.cpu().numpy().tobytes(), crc)


class Ring(nn.Module):
    """``dof`` trainable scalars and, per generated layer, its slice of the fixed map and its fan-in scale
    ``sqrt(2 / fan_in)`` (so a ring drawn from N(0, 1) gives He-initialised weights)."""

    def __init__(self, layers: Sequence[tuple[str, torch.Size]], dof: int, seed: int) -> None:
        super().__init__()
        self.slots: dict[str, tuple[int, int, torch.Size, float]] = {}
        start = 0
        for name, shape in layers:
            numel = math.prod(shape)
            self.slots[name] = (start, numel, torch.Size(shape), math.sqrt(2.0 / max(1, math.prod(shape[1:]))))
            start += numel
        self.total = start
        self.dof = int(dof)
        index, sign = ring_map(self.total, self.dof, seed)
        self.ring = nn.Parameter(torch.randn(self.dof))
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("sign", sign, persistent=False)
        self.register_buffer("seed", torch.tensor(int(seed), dtype=torch.int64))
        self.register_buffer("checksum", torch.tensor(map_checksum(index, sign), dtype=torch.int64))

    def generate(self, name: str) -> torch.Tensor:
        """Layer ``name``'s weight: ``ring[index] * sign * scale`` over its slice of the map (a fresh tensor)."""
        start, numel, shape, scale = self.slots[name]
        picked = self.ring.index_select(0, self.index[start:start + numel])
        return (picked * self.sign[start:start + numel] * scale).view(shape)

    def rms_scale(self) -> float:
        """Root mean square of the per-layer scales over all generated weights."""
        total = sum(numel * scale ** 2 for _, numel, _, scale in self.slots.values())
        return math.sqrt(total / max(1, self.total))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        stored = state_dict.get(prefix + "checksum")
        if stored is not None and int(stored) != int(self.checksum):
            raise CheckpointError(
                f"the RPG ring map regenerated from seed {int(self.seed)} does not match the checkpoint's (checksum "
                f"{int(stored)} vs {int(self.checksum)}): it was written with another seed, ring size or torch "
                "random generator")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return f"dof={self.dof}, generated={self.total}, layers={len(self.slots)}"


class _GeneratedWeight:
    """Mixin of a conv/linear whose ``weight`` is read from a ring on every access (no weight parameter)."""

    @property
    def weight(self) -> torch.Tensor:
        ring: Ring = self.__dict__["_rpg_ring"]
        return ring.generate(self.__dict__["_rpg_name"])


_CLASSES: dict[type, type] = {}


def _generated_class(cls: type) -> type:
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Generated{cls.__name__}", (_GeneratedWeight, cls), {"__module__": __name__})
    return _CLASSES[cls]


def generated_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every layer whose weight a ring generates."""
    for name, module in model.named_modules():
        if isinstance(module, _GeneratedWeight):
            yield name, module


def get_ring(model: nn.Module) -> Ring:
    """The ring of a wrapped model (a clear error for a model that is not wrapped)."""
    ring = getattr(model, RING_ATTR, None)
    if not isinstance(ring, Ring):
        raise ConfigError("this model has no RPG ring; wrap it first with bitsmith.methods.rpg.wrap")
    return ring


def _weight_layers(model: nn.Module, example_input_shape: Sequence[int] | None) -> list[str]:
    """Conv/linear module names in execution order (traced when an input shape is known), else module order."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    shape = input_shape(model, example_input_shape)
    if shape is None:
        return names
    order = [n for n in trace(model, shape).layer_names() if n in names]
    return order + [n for n in names if n not in order]


def wrap(model: nn.Module, config: RPGConfig | None = None, example_input_shape: Sequence[int] | None = None,
         **kwargs: Any) -> nn.Module:
    """A copy of ``model`` whose chosen conv/linear weights are all read from one ring of free parameters.

    ``config`` (or its fields as keywords: ``dof=`` or ``dof_ratio=``, ``include=``, ``seed=``) says how big the
    ring is and which layers it generates; "inner" (default) leaves the first and the last layer (in execution
    order, traced when the input shape is known) as ordinary parameters. Works on any module with Conv2d/Linear
    layers. The ring starts from N(0, 1) drawn from torch's global RNG (seed it for a reproducible start).
    """
    if config is None:
        config = RPGConfig(**kwargs)
    elif kwargs:
        raise ConfigError("pass either an RPGConfig or its fields as keywords, not both")
    if not isinstance(config, RPGConfig):
        raise ConfigError(f"rpg.wrap expects an RPGConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"rpg.wrap expects a torch.nn.Module, got {type(model).__name__}")
    if isinstance(getattr(model, RING_ATTR, None), Ring):
        raise ConfigError("the model is already wrapped by RPG")
    order = _weight_layers(model, example_input_shape)
    if isinstance(config.include, list):
        unknown = [n for n in config.include if n not in order]
        if unknown:
            raise ConfigError(f"RPG include names {unknown[0]!r}, which is not a Conv2d/Linear layer; weight layers: "
                              f"{', '.join(order[:8])}{', ...' if len(order) > 8 else ''}")
        chosen = [n for n in order if n in config.include]
    elif config.include == "all":
        chosen = order
    else:
        chosen = order[1:-1]
    if not chosen:
        raise ConfigError(f"RPG: no layer to generate (the model has {len(order)} conv/linear layer(s); include="
                          f"{config.include!r}); use include='all'")
    wrapped = copy.deepcopy(model)
    modules = dict(wrapped.named_modules())
    shapes = [(name, modules[name].weight.shape) for name in chosen]
    total = sum(math.prod(s) for _, s in shapes)
    dof = config.dof if config.dof is not None else max(1, round(config.dof_ratio * total))
    if dof > total:
        raise ConfigError(f"RPG dof {dof} exceeds the {total} weights it would generate; use at most {total}")
    ring = Ring(shapes, dof, config.seed).to(modules[chosen[0]].weight.device)
    for name in chosen:
        module = modules[name]
        del module._parameters["weight"]
        module.__class__ = _generated_class(type(module))
        module.__dict__["_rpg_ring"] = ring
        module.__dict__["_rpg_name"] = name
    wrapped.add_module(RING_ATTR, ring)
    return wrapped


@torch.no_grad()
def materialize(model: nn.Module) -> nn.Module:
    """A plain copy of a wrapped model: every generated weight becomes an ordinary parameter holding its current
    value, and the ring is gone."""
    get_ring(model)
    plain = copy.deepcopy(model)
    for _, module in list(generated_layers(plain)):
        weight = module.weight.detach().clone()
        module.__class__ = type(module).__bases__[1]
        del module.__dict__["_rpg_ring"], module.__dict__["_rpg_name"]
        module.weight = nn.Parameter(weight)
    delattr(plain, RING_ATTR)
    return plain
