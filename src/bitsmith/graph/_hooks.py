"""Fallback graph building by running the model once: forward hooks on leaf modules record layers, a
TorchFunctionMode records functional ops between them, and edges follow tensor identity."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from bitsmith.errors import UnsupportedLayerError
from bitsmith.graph._fx import params_of
from bitsmith.graph._graph import Node
from bitsmith.graph._kinds import function_attrs, function_kind, is_leaf, module_attrs, module_kind, op_name


def _tensors(obj: Any) -> list[torch.Tensor]:
    return [t for t in tree_leaves(obj) if isinstance(t, torch.Tensor)]


class _Recorder(TorchFunctionMode):
    """Records leaf-module calls (via hooks) and top-level functional ops (via this mode) as graph nodes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model_type = type(model).__name__
        self.nodes: list[Node] = []
        self.producer: dict[int, int] = {}
        self.alive: list[torch.Tensor] = []
        self.names: dict[str, int] = {}
        self.depth = 0

    def _unique(self, base: str) -> str:
        count = self.names.get(base, 0)
        self.names[base] = count + 1
        return base if count == 0 else f"{base}_{count}"

    def producers(self, args: Any, kwargs: Any) -> list[int]:
        """Indices of the recorded nodes that produced the tensors in ``args``/``kwargs``, first use order."""
        found = (self.producer.get(id(t)) for t in _tensors((args, kwargs)))
        return list(dict.fromkeys(i for i in found if i is not None))

    def add(self, base: str, kind: str, inputs: list[int], out: torch.Tensor, **extra: Any) -> None:
        """Append a node producing ``out`` and make it the producer of that tensor object."""
        index = len(self.nodes)
        self.nodes.append(Node(index=index, name=self._unique(base), kind=kind, inputs=inputs,
                               in_shapes=[self.nodes[i].out_shape for i in inputs], out_shape=tuple(out.shape),
                               module_name=extra.get("module_name"), module_type=extra.get("module_type"),
                               params=extra.get("params", {}), attrs=extra.get("attrs", {})))
        self.producer[id(out)] = index
        self.alive.append(out)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth == 0 and isinstance(out, torch.Tensor):
            inputs = self.producers(args, kwargs)
            if inputs:
                name = op_name(func)
                kind = function_kind(name, f"{self.model_type}.forward")
                self.add(name, kind, inputs, out, attrs=function_attrs(name, kind, args, kwargs))
        return out


def hook_nodes(model: nn.Module, x: torch.Tensor) -> list[Node]:
    """Run ``model(x)`` once and record its graph (leaf modules by hooks, functional ops by a function mode)."""
    rec = _Recorder(model)
    names = {m: name for name, m in model.named_modules()}
    handles = []

    def pre_hook(m: nn.Module, args: Any, kwargs: Any) -> None:
        if rec.depth > 0 or is_leaf(m, names.get(m, "")):
            rec.depth += 1

    def post_hook(m: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        if rec.depth == 0:
            return
        rec.depth -= 1
        if rec.depth > 0:
            return
        name = names.get(m, "")
        if not isinstance(out, torch.Tensor):
            raise UnsupportedLayerError(
                f"unsupported layer '{name}' of type {type(m).__name__}: it does not return one tensor"
            )
        kind = module_kind(m) or "custom"
        rec.add(name.replace(".", "_") or "module", kind, rec.producers(args, kwargs), out, module_name=name,
                module_type=type(m).__name__, params=params_of(m, name), attrs=module_attrs(m, kind))

    for m in names:
        if m is not model:
            handles.append(m.register_forward_pre_hook(pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(post_hook, with_kwargs=True))
    rec.add("input", "input", [], x)
    try:
        with rec:
            result = model(x)
    finally:
        for h in handles:
            h.remove()
    outputs = rec.producers(result, {})
    rec.nodes.append(Node(index=len(rec.nodes), name="output", kind="output", module_name=None,
                          module_type=None, inputs=outputs,
                          in_shapes=[rec.nodes[i].out_shape for i in outputs],
                          out_shape=rec.nodes[outputs[0]].out_shape if outputs else ()))
    return _prune(rec.nodes)


def _prune(nodes: list[Node]) -> list[Node]:
    """Drop functional nodes that feed neither the output nor any layer (e.g. ``x.sum() > 0`` in an ``if``)."""
    useful: set[int] = set()
    stack = [n.index for n in nodes if n.kind == "output" or n.module_name is not None]
    while stack:
        i = stack.pop()
        if i not in useful:
            useful.add(i)
            stack.extend(nodes[i].inputs)
    remap = {old: new for new, old in enumerate(sorted(useful))}
    kept = []
    for n in nodes:
        if n.index in useful:
            n.index = remap[n.index]
            n.inputs = [remap[i] for i in n.inputs]
            kept.append(n)
    return kept
