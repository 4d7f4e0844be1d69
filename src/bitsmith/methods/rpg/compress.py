"""After training: prune the ring or the generated weights, quantize the ring itself, convert to core layers,
and count what has to be stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bitsmith.errors import ConfigError
from bitsmith.methods.rpg.ring import generated_layers, get_ring, materialize

SEED_BITS = 64
FLOAT_BITS = 32


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"pruning fraction must be in [0, 1), got {fraction!r}")


@torch.no_grad()
def prune_ring(model: nn.Module, fraction: float) -> int:
    """Zero the ``fraction`` of ring entries with the smallest magnitude (in place): every weight reading one of
    them becomes zero. Returns the number of entries zeroed."""
    _check_fraction(fraction)
    ring = get_ring(model).ring
    count = int(fraction * ring.numel())
    if count:
        ring[torch.argsort(ring.abs(), stable=True)[:count]] = 0.0
    return count


@torch.no_grad()
def prune_weights(plain: nn.Module, names: Sequence[str], fraction: float) -> int:
    """Zero the ``fraction`` of the weights of layers ``names`` (of a materialised model) with the smallest
    magnitude, over all those layers together (in place). Returns the number of weights zeroed."""
    _check_fraction(fraction)
    weights = [plain.get_submodule(n).weight for n in names]
    flat = torch.cat([w.reshape(-1).abs() for w in weights])
    count = int(fraction * flat.numel())
    if count:
        threshold = torch.kthvalue(flat, count).values
        for w in weights:
            w[w.abs() <= threshold] = 0.0
    return count


@torch.no_grad()
def quantize_ring(model: nn.Module, bits: int) -> float:
    """Round the ring (in place) to ``bits``-bit symmetric codes in ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` with the
    MSE-optimal step size; the range is symmetric so that the sign flips keep every generated code in range.
    Every generated weight is then ``code * sign * (step * layer scale)``. Returns the step size."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ConfigError(f"ring bit width must be an integer from 2 to 16, got {bits!r}")
    from bitsmith.quant.observers import estimate_range, range_to_qparams, rows
    from bitsmith.quant.ste import quant_dequant

    ring = get_ring(model).ring
    qmax = (1 << (bits - 1)) - 1
    x2d = rows(ring.detach(), per_channel=False)
    lo, hi = estimate_range(x2d, "mse", -qmax, qmax, symmetric=True)
    step, _ = range_to_qparams(lo, hi, -qmax, qmax, symmetric=True)
    ring.copy_(quant_dequant(ring, step, None, -qmax, qmax)[0])
    return float(step)


def to_core(model: nn.Module, ring_bits: int, step: float, example_input_shape: Sequence[int],
            act_bits: int = 8) -> nn.Module:
    """Core quantized layers computing what a ring-quantized model computes: every generated layer holds its
    weights as integer codes ``code * sign`` at the per-tensor scale ``step * layer scale`` and ``ring_bits``
    bits; every other layer at 8 bits; inputs at ``act_bits``. The quantizers' step sizes still need their
    activation ranges from data (``bitsmith.quant.calibrate``)."""
    from bitsmith.quant import QConfig, quantize
    from bitsmith.quant.quantizers import LOG_SCALE_GAIN

    ring = get_ring(model)
    names = [n for n, _ in generated_layers(model)]
    overrides = {n: {"weight_bits": ring_bits, "per_channel": False} for n in names}
    core = quantize(materialize(model), QConfig(weight_bits=8, act_bits=act_bits, first_last_bits=None,
                                                overrides=overrides), example_input_shape=example_input_shape)
    for name in names:
        scale = step * ring.slots[name][3]
        wq = core.get_submodule(name).weight_quant
        wq.log_scale.data.fill_(float(torch.tensor(scale, dtype=torch.float64).log()) / LOG_SCALE_GAIN)
        wq._mark_initialized()
    return core


def storage_bits(model: nn.Module, ring_bits: int = FLOAT_BITS, nonzero_only: bool = False) -> int:
    """Bits to store a wrapped model: the ring (at ``ring_bits``; with ``nonzero_only`` only its non-zero entries,
    each with a 32-bit index), one 64-bit seed, a 32-bit scale per generated layer, and every parameter that is
    not generated at 32 bits (buffers such as BatchNorm statistics are not counted)."""
    ring = get_ring(model)
    entries = int((ring.ring != 0).sum()) if nonzero_only else ring.dof
    ring_cost = entries * (ring_bits + (FLOAT_BITS if nonzero_only else 0))
    others = sum(p.numel() for n, p in model.named_parameters() if p is not ring.ring)
    return ring_cost + SEED_BITS + FLOAT_BITS * len(ring.slots) + FLOAT_BITS * others


def compression_study(model: nn.Module, train_data: Any, test_data: Any, example_input_shape: Sequence[int],
                      fractions: Sequence[float], ring_bits: Sequence[int], act_bits: int = 8,
                      calib_batches: int = 8, batch_size: int = 64) -> dict[str, Any]:
    """Test accuracy of a trained wrapped model after, without retraining: magnitude pruning of the ring vs of the
    generated weights at each of ``fractions``; quantizing the ring to each of ``ring_bits`` (accuracy of the RPG
    model and of its core-layer model with calibrated ``act_bits`` activations, the integer forward's largest
    relative error against that model, and the storage)."""
    import copy

    from bitsmith.engine import evaluate_model
    from bitsmith.engine.trainer import dataset_tensors
    from bitsmith.quant import calibrate, integer_forward

    model = model.eval()
    names = [n for n, _ in generated_layers(model)]
    x_train, _ = dataset_tensors(train_data)
    x_test, _ = dataset_tensors(test_data)
    batches = [x_train[i:i + batch_size] for i in range(0, len(x_train), batch_size)]
    result: dict[str, Any] = {"test_acc": evaluate_model(model, test_data)["acc"], "storage_bits": storage_bits(model),
                              "dof": get_ring(model).dof, "prune": [], "quantize": []}
    for fraction in fractions:
        pruned = copy.deepcopy(model)
        prune_ring(pruned, fraction)
        plain = materialize(model)
        prune_weights(plain, names, fraction)
        result["prune"].append({"fraction": fraction, "ring_acc": evaluate_model(pruned, test_data)["acc"],
                                "weights_acc": evaluate_model(plain, test_data)["acc"],
                                "ring_storage_bits": storage_bits(pruned, nonzero_only=True)})
    for bits in ring_bits:
        quantized = copy.deepcopy(model)
        step = quantize_ring(quantized, bits)
        core = to_core(quantized, bits, step, example_input_shape, act_bits=act_bits)
        calibrate(core, batches, num_batches=calib_batches, observer="mse", weights=False)
        core.eval()
        sample = x_test[:64].double()
        with torch.no_grad():
            reference = copy.deepcopy(core).double()(sample)
        error = float((integer_forward(core, sample) - reference).abs().max() / reference.abs().max())
        result["quantize"].append({"bits": bits, "step": step, "test_acc": evaluate_model(quantized, test_data)["acc"],
                                   "core_acc": evaluate_model(core, test_data)["acc"], "integer_rel_error": error,
                                   "storage_bits": storage_bits(quantized, ring_bits=bits)})
    return result
