"""Property tests over randomly generated small CNNs (tests/strategies.py): graph tracing, cost totals against a
hand count, quantize/dequantize round trips, the integer-exact forward and ONNX export parity.

Run longer with ``BITSMITH_PROPERTY_EXAMPLES=200 pytest tests/test_properties.py --hypothesis-show-statistics``.
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch import nn

from bitsmith.cost import model_cost
from bitsmith.graph import trace
from bitsmith.quant import QConfig, QuantConv2d, QuantLinear, calibrate, integer_forward, quantize
from bitsmith.quant.layers import INT32_MAX, INT32_MIN
from bitsmith.quant.quantizers import qrange
from strategies import Block, CNNSpec, build, cnn_specs, examples

BITS = st.sampled_from([2, 3, 4, 5, 6, 7, 8])


pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(spec: CNNSpec, n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, *spec.input_shape, generator=torch.Generator().manual_seed(seed)) * 2 - 0.5


def _quantized(spec: CNNSpec, weight_bits: int, act_bits: int, seed: int, mixed: bool = False) -> nn.Module:
    """The spec's model quantized (LSQ, per-channel weights; with ``mixed`` the first conv gets one random width
    per output channel) and calibrated on two random batches, in eval mode."""
    model = build(spec, seed)
    overrides = {}
    if mixed:
        first = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
        gen = torch.Generator().manual_seed(seed)
        widths = torch.randint(2, 9, (model.get_submodule(first).out_channels,), generator=gen).tolist()
        overrides[first] = {"weight_bits": widths}
    qconfig = QConfig(weight_bits=weight_bits, act_bits=act_bits, first_last_bits=None, overrides=overrides)
    qmodel = quantize(model, qconfig, example_input_shape=spec.input_shape)
    calibrate(qmodel, [_inputs(spec, 16, seed + 1), _inputs(spec, 16, seed + 2)], num_batches=2)
    return qmodel.eval()


@examples(30)
@given(cnn_specs(), st.integers(0, 2**16))
def test_tracing_finds_every_conv_and_linear_with_the_shapes_the_model_computes(spec, seed):
    model = build(spec, seed)
    graph = trace(model, spec.input_shape)
    assert graph.layer_names() == list(model.macs)
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: shapes.__setitem__(name, tuple(out.shape)))
             for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(_inputs(spec, 2, seed))
    for hook in hooks:
        hook.remove()
    for node in graph.layers():
        assert tuple(node.out_shape[1:]) == shapes[node.module_name][1:], node.module_name


@examples(30)
@given(cnn_specs(), BITS, BITS)
def test_cost_totals_are_sums_of_layers_and_macs_match_a_hand_count(spec, weight_bits, act_bits):
    model = build(spec)
    report = model_cost(model, spec.input_shape, weight_bits=weight_bits, act_bits=act_bits)
    assert {c.name: c.macs for c in report.layers} == model.macs
    assert report.total_macs == sum(model.macs.values()) == sum(c.macs for c in report.layers)
    assert report.total_bops == sum(c.bops for c in report.layers) == report.total_macs * weight_bits * act_bits
    weights = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert report.total_params == sum(p.numel() for m in weights for p in m.parameters())


def _check_codes(quantizer, x: torch.Tensor) -> None:
    """Codes of ``x`` lie in the quantizer's range with at most 2^b levels (per channel for weights), the round
    trip is exact and quantizing twice changes nothing."""
    with torch.no_grad():
        y = quantizer(x)
        codes = quantizer.quantize_int(x)
        per_channel = isinstance(quantizer.bits, list)
        bits = quantizer.bits if per_channel else [quantizer.bits] * (codes.shape[0] if quantizer.role == "weight"
                                                                      else 1)
        rows = codes.reshape(len(bits), -1) if quantizer.role == "weight" else codes.reshape(1, -1)
        for row, b in zip(rows, bits, strict=True):
            lo, hi = qrange(b, bool(quantizer.signed))
            if quantizer.zero_tensor() is None:
                assert lo <= int(row.min()) and int(row.max()) <= hi
            assert row.unique().numel() <= 2**b
        assert torch.equal(quantizer(y), y)
        assert torch.allclose(quantizer.dequantize(codes), y, rtol=1e-6, atol=1e-7)


@examples(25)
@given(cnn_specs(), BITS, BITS, st.booleans(), st.integers(0, 2**16))
def test_quantize_dequantize_round_trips_stay_within_2_to_the_b_levels(spec, weight_bits, act_bits, mixed, seed):
    qmodel = _quantized(spec, weight_bits, act_bits, seed, mixed)
    inputs: dict[str, torch.Tensor] = {}
    layers = {n: m for n, m in qmodel.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))}
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: inputs.__setitem__(name, args[0]))
             for name, m in layers.items()]
    with torch.no_grad():
        qmodel(_inputs(spec, 8, seed + 3))
    for hook in hooks:
        hook.remove()
    assert set(inputs) == set(layers)
    for name, layer in layers.items():
        _check_codes(layer.weight_quant, layer.weight)
        _check_codes(layer.act_quant, inputs[name])


@examples(25)
@given(cnn_specs(), BITS, BITS, st.booleans(), st.integers(0, 2**16))
def test_integer_forward_equals_the_fake_quant_forward(spec, weight_bits, act_bits, mixed, seed):
    qmodel = _quantized(spec, weight_bits, act_bits, seed, mixed)
    x = _inputs(spec, 8, seed + 3).double()
    with torch.no_grad():
        reference = copy.deepcopy(qmodel).double()(x)
    result = integer_forward(qmodel, x)
    scale = float(reference.abs().max())
    assert float((result - reference).abs().max()) <= 1e-5 * max(scale, 1e-12)


#: found by the property below: a ReLU that is dead on the calibration batches gives the next layer the smallest
#: activation scale, so its int32 bias saturates (bias_codes once wrapped INT32_MAX to -2**31 in the export)
DEAD_RELU = CNNSpec(1, (4, 4), (Block("pool"), Block("pool"), Block("conv", 1, 1, 1, False, False)), 16, 2)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
                    reason="onnx and onnxruntime are not installed (pip install bitsmith[export])")
@examples(8)
@given(cnn_specs(max_blocks=3, max_size=12), st.integers(2, 8), st.integers(0, 2**16))
@example(DEAD_RELU, 4, 0)
@example(DEAD_RELU, 8, 1)
def test_onnx_export_matches_pytorch_in_onnxruntime(spec, weight_bits, seed):
    """The exported graph keeps BatchNorm as a float op (``fold_bn=False``: the model's exact arithmetic; folding
    rounds the BN shift into the int32 bias by design). 8-bit weights included: the exporter stores them as uint8
    (zero point 128), because onnxruntime's uint8 x int8 kernels on AVX2 CPUs without VNNI add products in saturating
    int16 pairs. What remains are activation codes one step apart where float sums in a different order round
    differently."""
    from bitsmith import export

    qmodel = _quantized(spec, weight_bits, 8, seed)
    proto, _, _ = export.build_onnx(qmodel, spec.input_shape, fold_bn=False)
    x = _inputs(spec, 64, seed + 3)
    report = export.check_parity(qmodel, proto, x, threads=1, raise_on_mismatch=False)
    with torch.no_grad():
        scale = float(qmodel(x).abs().max())
    assert report.max_abs_error <= 0.01 * max(scale, 1e-6), report
    assert report.agreement >= 0.95, report


def test_a_saturated_bias_stays_inside_int32():
    qmodel = _quantized(DEAD_RELU, 4, 8, 0)
    layer = qmodel.head[0]
    assert float(layer.act_quant.scale_tensor().detach()) < 1e-7  # the dead ReLU's range
    codes = layer.bias_codes()
    assert int(codes.max()) == INT32_MAX and int(codes.min()) >= INT32_MIN
