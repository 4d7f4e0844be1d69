"""Graph building by torch.fx symbolic tracing (leaf rule from ``_kinds``) plus ShapeProp shape propagation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from bitsmith.errors import UnsupportedLayerError
from bitsmith.graph._graph import Node
from bitsmith.graph._kinds import function_attrs, function_kind, is_leaf, module_attrs, module_kind, op_name


class _LeafTracer(fx.Tracer):
    """fx tracer that keeps known layers, their subclasses and ``bitsmith_leaf`` modules whole."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_leaf(m, module_qualified_name)


def symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """Trace ``model`` into a GraphModule that shares its submodules (raises on data-dependent control flow)."""
    tracer = _LeafTracer()
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, class_name=type(model).__name__)


def insert_before(model: nn.Module, kind: str, make: Callable[[int, list[str]], nn.Module | None],
                  prefix: str) -> tuple[fx.GraphModule, int]:
    """A GraphModule of ``model`` (sharing its submodules) in which every tensor input of each functional op of
    ``kind`` (e.g. "add") first passes through the module ``make(i, readers)`` (i counts the inserted ones;
    ``readers``: the names of the submodules that also read that tensor; None skips that input), registered as
    ``{prefix}{i}``. Returns the module and how many were inserted."""
    gm = symbolic_trace(model)
    count = 0
    for fxn in list(gm.graph.nodes):
        if fxn.op not in ("call_function", "call_method"):
            continue
        if function_kind(op_name(fxn.target), fxn.name) != kind:
            continue
        for arg in dict.fromkeys(_fx_inputs(fxn.args, fxn.kwargs)):
            module = make(count, _module_readers(arg))
            if module is None:
                continue
            name = f"{prefix}{count}"
            gm.add_submodule(name, module)
            with gm.graph.inserting_before(fxn):
                wrapped = gm.graph.call_module(name, (arg,))
            fxn.replace_input_with(arg, wrapped)
            count += 1
    gm.graph.lint()
    gm.recompile()
    return gm, count


def shared_readers(model: nn.Module) -> list[list[str]]:
    """For each tensor of ``model`` that two or more submodules read, the names of those submodules (in graph
    order), e.g. a ResNet block's first conv and its projection shortcut."""
    gm = symbolic_trace(model)
    groups = [_module_readers(fxn) for fxn in gm.graph.nodes]
    return [group for group in groups if len(group) > 1]


def _module_readers(fxn: fx.Node) -> list[str]:
    return [str(user.target) for user in fxn.users if user.op == "call_module"]


def _fx_inputs(args: Any, kwargs: Any) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((args, kwargs), found.append)
    return found


def _shape(fxn: fx.Node) -> tuple[int, ...] | None:
    meta = fxn.meta.get("tensor_meta")
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


def params_of(module: nn.Module, module_name: str) -> dict[str, str]:
    """Local parameter name -> full name in the model's ``named_parameters()``."""
    prefix = f"{module_name}." if module_name else ""
    return {local: prefix + local for local, _ in module.named_parameters()}


def fx_nodes(gm: fx.GraphModule, x: torch.Tensor) -> list[Node]:
    """Propagate shapes through ``gm`` with input ``x`` and convert its fx graph into bitsmith nodes."""
    ShapeProp(gm).propagate(x)
    nodes: list[Node] = []
    index: dict[fx.Node, int] = {}

    def add(fxn: fx.Node, name: str, kind: str, inputs: list[int], shape: tuple[int, ...], **extra: Any) -> None:
        index[fxn] = len(nodes)
        nodes.append(Node(index=len(nodes), name=name, kind=kind, inputs=inputs,
                          in_shapes=[nodes[i].out_shape for i in inputs], out_shape=shape,
                          module_name=extra.get("module_name"), module_type=extra.get("module_type"),
                          params=extra.get("params", {}), attrs=extra.get("attrs", {})))

    for fxn in gm.graph.nodes:
        producers = list(dict.fromkeys(index[a] for a in _fx_inputs(fxn.args, fxn.kwargs) if a in index))
        shape = _shape(fxn)
        if fxn.op == "placeholder":
            if not nodes:
                add(fxn, "input", "input", [], shape or tuple(x.shape))
        elif fxn.op == "call_module":
            module = gm.get_submodule(fxn.target)
            if shape is None:
                raise UnsupportedLayerError(
                    f"unsupported layer '{fxn.target}' of type {type(module).__name__}: it does not return one tensor"
                )
            kind = module_kind(module) or "custom"
            add(fxn, fxn.name, kind, producers, shape, module_name=str(fxn.target),
                module_type=type(module).__name__, params=params_of(module, str(fxn.target)),
                attrs=module_attrs(module, kind))
        elif fxn.op in ("call_function", "call_method"):
            if shape is None or not producers:
                continue
            name = op_name(fxn.target)
            kind = function_kind(name, f"'{fxn.name}' of {type(gm).__name__}.forward")
            add(fxn, fxn.name, kind, producers, shape, attrs=function_attrs(name, kind, fxn.args, fxn.kwargs))
        elif fxn.op == "output":
            out_shapes = [nodes[i].out_shape for i in producers]
            add(fxn, "output", "output", producers, out_shapes[0] if out_shapes else ())
    return nodes
