"""Parity of an exported ONNX model with the PyTorch fake-quant model it came from, measured with onnxruntime.

The check runs both on the same inputs (onnxruntime on CPU with its full graph optimisations, as deployed) and
requires argmax agreement >= 99.9 % and, with labels, the same accuracy within 0.1 point.

A disagreement counts as a numerical tie when the PyTorch model itself predicts onnxruntime's class for that input
when it is run alone (batch size 1) or in float64 (the exact integer arithmetic, docs/QUANTIZATION.md): float32
sums in another order move an activation across a rounding boundary, and at 4 bits one such code can tip a
near-tied argmax. PyTorch disagrees with itself this way (batch 64 vs batch 1) on about one digits test image in
360 for a weakly trained W4A4 ResNet-20, so ties are reported and then allowed for.

On a mismatch the check finds the first layer whose output diverges: every layer output of the exported graph
(listed in its metadata) is compared with the matching PyTorch module output, captured by forward hooks, on the
inputs that disagree.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bitsmith.errors import ConfigError, ParityError
from bitsmith.export._deps import require
from bitsmith.export.onnx_export import LAYERS_KEY

#: Smallest fraction of inputs whose argmax must agree.
MIN_AGREEMENT = 0.999
#: Largest accuracy difference (a fraction: 0.001 = 0.1 point).
MAX_ACCURACY_GAP = 0.001
#: A layer output "diverges" when ``||onnx - torch|| / ||torch||`` exceeds this. Correct exports stay far below: a
#: code that flips at a rounding boundary (float sums in a different order) moves one element by one step.
LAYER_TOLERANCE = 0.05
#: Most disagreeing inputs examined for numerical ties.
TIE_CHECKS = 64
#: Random inputs used when no data is given: this many samples, uniform in [0, 1) like image pixels.
RANDOM_SAMPLES = 256


@dataclass
class ParityReport:
    """Agreement of onnxruntime with PyTorch on ``samples`` inputs (accuracies are None without labels); ``ties``:
    disagreements that are numerical ties (see the module docstring)."""

    samples: int
    agreement: float
    torch_accuracy: float | None
    onnx_accuracy: float | None
    max_abs_error: float
    ties: int = 0

    @property
    def passed(self) -> bool:
        """True when the agreement and accuracy tolerances hold, numerical ties allowed for."""
        slack = self.ties / max(self.samples, 1)
        if self.agreement + slack < MIN_AGREEMENT - 1e-12:
            return False
        if self.torch_accuracy is None or self.onnx_accuracy is None:
            return True
        return abs(self.onnx_accuracy - self.torch_accuracy) <= MAX_ACCURACY_GAP + slack + 1e-12

    def summary(self) -> str:
        """One line: samples, argmax agreement, ties, accuracies and the largest logit difference."""
        text = f"argmax agreement {100 * self.agreement:.2f} % on {self.samples} inputs"
        if self.ties:
            text += f" ({self.ties} of the disagreements numerical ties)"
        if self.torch_accuracy is not None:
            text += (f", accuracy onnxruntime {100 * self.onnx_accuracy:.2f} % vs PyTorch "
                     f"{100 * self.torch_accuracy:.2f} %")
        return text + f", max |logit difference| {self.max_abs_error:.3g}"


def random_inputs(input_shape: Sequence[int], samples: int = RANDOM_SAMPLES, seed: int = 0) -> torch.Tensor:
    """``samples`` seeded random inputs of shape ``(C, H, W)``, uniform in [0, 1)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((samples, *input_shape), generator=generator)


def _split_data(data: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(data, torch.Tensor):
        return data.float(), None
    if isinstance(data, (list, tuple)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        labels = data[1]
        return data[0].float(), None if labels is None else torch.as_tensor(labels).long()
    raise ConfigError(f"parity data must be an input tensor or an (inputs, labels) pair, got {type(data).__name__}")


def session(onnx_model: Any, threads: int | None = None, optimize: bool = True) -> Any:
    """An onnxruntime CPU session for a model (path, bytes or ModelProto); ``optimize`` enables every graph
    optimisation (the deployed setting, which fuses QDQ groups into integer kernels)."""
    ort = require("onnxruntime", "the onnxruntime parity check")
    if not isinstance(onnx_model, (str, bytes)) and hasattr(onnx_model, "SerializeToString"):
        onnx_model = onnx_model.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(onnx_model if isinstance(onnx_model, bytes) else str(onnx_model), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, NotImplemented)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"onnxruntime cannot load the exported model: {first}") from None


def _run_onnx(sess: Any, x: torch.Tensor, batch_size: int, outputs: list[str] | None = None) -> list[np.ndarray]:
    name = sess.get_inputs()[0].name
    chunks = [sess.run(outputs, {name: x[i:i + batch_size].numpy()}) for i in range(0, len(x), batch_size)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def _run_torch(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def check_parity(qmodel: nn.Module, onnx_model: Any, data: Any, *, batch_size: int = 64, threads: int | None = None,
                 raise_on_mismatch: bool = True) -> ParityReport:
    """Compare onnxruntime on ``onnx_model`` (path, bytes or ModelProto) with ``qmodel`` in eval mode on ``data``
    (inputs, or an ``(inputs, labels)`` pair); raise ParityError naming the first diverging layer when the argmax
    agreement is below 99.9 % or the accuracies differ by more than 0.1 point (unless ``raise_on_mismatch`` is
    False). ``qmodel`` itself is not modified."""
    x, labels = _split_data(data)
    if len(x) == 0:
        raise ConfigError("parity data holds no inputs")
    model = copy.deepcopy(qmodel).float().eval()
    reference = _run_torch(model, x, batch_size)
    onnx_out = torch.from_numpy(_run_onnx(session(onnx_model, threads), x, batch_size)[0])
    if onnx_out.shape != reference.shape:
        raise ParityError(f"the exported model outputs shape {tuple(onnx_out.shape)}, PyTorch "
                          f"{tuple(reference.shape)}")
    ref_top, onnx_top = reference.argmax(dim=1), onnx_out.argmax(dim=1)
    agree = ref_top == onnx_top
    report = ParityReport(
        samples=len(x), agreement=float(agree.float().mean()),
        torch_accuracy=None if labels is None else float((ref_top == labels).float().mean()),
        onnx_accuracy=None if labels is None else float((onnx_top == labels).float().mean()),
        max_abs_error=float((onnx_out - reference).abs().max()),
        ties=_ties(model, x[~agree], onnx_top[~agree]),
    )
    if raise_on_mismatch and not report.passed:
        disagreeing = x[~agree] if bool((~agree).any()) else x
        where = first_divergence(model, onnx_model, disagreeing[:batch_size], threads=threads)
        raise ParityError(f"onnxruntime does not reproduce the PyTorch model: {report.summary()} (needs >= "
                          f"{100 * MIN_AGREEMENT:.1f} % agreement, accuracy within {100 * MAX_ACCURACY_GAP:.1f} "
                          f"point); {where}")
    return report


def _ties(model: nn.Module, x: torch.Tensor, onnx_top: torch.Tensor) -> int:
    """How many of the inputs ``x`` (where onnxruntime predicted ``onnx_top`` and PyTorch another class) PyTorch
    itself assigns to onnxruntime's class when run alone (batch size 1) or in float64; at most ``TIE_CHECKS`` are
    examined (more disagreements than that fail the check anyway on any data set below 64 000 inputs)."""
    x, onnx_top = x[:TIE_CHECKS], onnx_top[:TIE_CHECKS]
    if len(x) == 0:
        return 0
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        alone = torch.cat([model(x[i:i + 1]) for i in range(len(x))]).argmax(dim=1)
        wide = exact(x.double()).argmax(dim=1)
    return int(((alone == onnx_top) | (wide == onnx_top)).sum())


def _layer_list(proto: Any) -> list[dict[str, Any]]:
    props = {p.key: p.value for p in proto.metadata_props}
    if LAYERS_KEY not in props:
        raise ParityError("the ONNX model has no bitsmith layer list (it was not written by bitsmith.export)")
    return json.loads(props[LAYERS_KEY])


def _load_proto(onnx_model: Any) -> Any:
    onnx = require("onnx", "the onnxruntime parity check")
    if isinstance(onnx_model, bytes):
        return onnx.load_from_string(onnx_model)
    if hasattr(onnx_model, "SerializeToString"):
        return copy.deepcopy(onnx_model)
    return onnx.load(str(onnx_model))


def layer_errors(qmodel: nn.Module, onnx_model: Any, x: torch.Tensor,
                 threads: int | None = None) -> list[tuple[str, str, float]]:
    """``(module name, kind, relative error)`` of every layer output the exported graph lists, in graph order:
    ``||onnx - torch|| / ||torch||`` on inputs ``x`` (onnxruntime without graph optimisations, so every
    intermediate tensor exists)."""
    onnx = require("onnx", "the onnxruntime parity check")
    proto = _load_proto(onnx_model)
    layers = _layer_list(proto)
    known = {o.name for o in proto.graph.output}
    for entry in layers:
        if entry["tensor"] not in known:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(entry["tensor"], onnx.TensorProto.FLOAT,
                                                                         None))
            known.add(entry["tensor"])
    tensors = [entry["tensor"] for entry in layers]
    values = _run_onnx(session(proto, threads, optimize=False), x, len(x) or 1, tensors)
    captured: dict[str, list[torch.Tensor]] = defaultdict(list)
    model = copy.deepcopy(qmodel).float().eval()
    modules = dict(model.named_modules())
    handles = []
    for name in dict.fromkeys(entry["module"] for entry in layers):
        if name not in modules:
            raise ParityError(f"the ONNX model lists layer '{name}', which the PyTorch model does not have")
        handles.append(modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: captured[name].append(out.detach())))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    errors = []
    for entry, value in zip(layers, values, strict=True):
        ref = captured[entry["module"]][entry["call"]]
        got = torch.from_numpy(value)
        if got.shape != ref.shape:
            errors.append((entry["module"], entry["kind"], float("inf")))
            continue
        errors.append((entry["module"], entry["kind"],
                       float((got - ref).norm() / ref.norm().clamp_min(torch.finfo(ref.dtype).tiny))))
    return errors


def first_divergence(qmodel: nn.Module, onnx_model: Any, x: torch.Tensor, threads: int | None = None,
                     tolerance: float = LAYER_TOLERANCE) -> str:
    """A sentence naming the first layer whose output differs from PyTorch by more than ``tolerance`` (relative),
    or, when none does, the layer with the largest difference and that graph optimisations may be the cause."""
    errors = layer_errors(qmodel, onnx_model, x, threads)
    for i, (name, kind, err) in enumerate(errors):
        if err > tolerance:
            before = max((e for _, _, e in errors[:i]), default=0.0)
            return (f"first diverging layer: '{name}' ({kind}), relative error {err:.3g} (tolerance {tolerance:g}; "
                    f"the layers before it at most {before:.3g})")
    if not errors:
        return "the exported graph lists no layer to compare"
    name, kind, err = max(errors, key=lambda e: e[2])
    return (f"no layer diverges by more than {tolerance:g} without graph optimisations (largest: '{name}' ({kind}), "
            f"{err:.3g}); the difference comes from onnxruntime's optimised (integer) kernels")
