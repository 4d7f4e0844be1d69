"""``trace``: any nn.Module and an input shape in, a typed :class:`Graph` out (torch.fx, hooks as fallback)."""

from __future__ import annotations

import contextlib
import io
import itertools
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from bitsmith.errors import BitsmithError
from bitsmith.graph._fx import fx_nodes, symbolic_trace
from bitsmith.graph._graph import Graph, Node
from bitsmith.graph._hooks import hook_nodes


def _batch_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """(C, H, W) gets a batch of 1; (N, C, H, W) is kept; anything else is refused."""
    dims = tuple(input_shape) if isinstance(input_shape, (list, tuple, torch.Size)) else None
    if (dims is None or len(dims) not in (3, 4)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)):
        raise BitsmithError(f"input_shape must be (C, H, W) or (N, C, H, W) of positive integers, got {input_shape!r}")
    return dims if len(dims) == 4 else (1, *dims)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _checked_run(model: nn.Module, x: torch.Tensor) -> None:
    """Run the model once; a failure means the input shape does not fit it, reported as BitsmithError."""
    try:
        model(x)
    except (RuntimeError, ValueError, IndexError) as exc:
        raise BitsmithError(
            f"{type(model).__name__} cannot run on input shape {'x'.join(map(str, x.shape[1:]))}: {_first_line(exc)}"
        ) from None


def _hooks_with_warning(model: nn.Module, x: torch.Tensor, reason: str) -> list[Node]:
    warnings.warn(
        f"torch.fx could not trace {type(model).__name__} ({reason}); the graph was built from forward hooks "
        "on one run instead, so it shows the branch taken for this input",
        UserWarning, stacklevel=4,
    )
    try:
        return hook_nodes(model, x)
    except (RuntimeError, ValueError, IndexError) as exc:
        if isinstance(exc, BitsmithError):
            raise
        _checked_run(model, x)
        raise


def _build(model: nn.Module, x: torch.Tensor) -> tuple[list[Node], str]:
    try:
        gm = symbolic_trace(model)
    except BitsmithError:
        raise
    except Exception as exc:  # any tracing failure (TraceError, TypeError, ...) means: fall back to hooks
        return _hooks_with_warning(model, x, _first_line(exc)), "hooks"
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints a traceback before re-raising
            return fx_nodes(gm, x), "fx"
    except BitsmithError:
        raise
    except Exception as exc:  # either the input does not fit the model, or only its fx graph fails
        _checked_run(model, x)
        return _hooks_with_warning(model, x, f"shape propagation failed: {_first_line(exc)}"), "hooks"


def trace(model: nn.Module, input_shape: Sequence[int]) -> Graph:
    """Turn ``model`` into a typed DAG for inputs of ``input_shape`` ((C, H, W) or (N, C, H, W)).

    The model runs once on zeros in eval mode without gradients; its train/eval flags are restored after.
    """
    if not isinstance(model, nn.Module):
        raise BitsmithError(f"trace expects a torch.nn.Module, got {type(model).__name__}")
    shape = _batch_shape(input_shape)
    ref = next(itertools.chain(model.parameters(), model.buffers()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    x = torch.zeros(shape, device=device, dtype=dtype)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            nodes, method = _build(model, x)
    finally:
        for m, training in flags:
            m.training = training
    return Graph(nodes=nodes, input_shape=shape, method=method, model=model)
