"""Quantizers: round trips (hypothesis), code ranges, the straight-through and LSQ/PACT gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bitsmith.errors import BitsmithError, ConfigError
from bitsmith.quant import LSQQuantizer, MinMaxQuantizer, PACTQuantizer, check_bits, fake_quant
from bitsmith.quant.quantizers import LOG_SCALE_GAIN, make_quantizer, qrange

QUANT_BITS = [2, 3, 4, 5, 6, 7, 8, 16]


def _ready(quant, x):
    """Initialise ``quant`` from ``x`` and put it in eval mode (no observer updates)."""
    quant.initialize(x)
    return quant.eval()


@settings(max_examples=40, deadline=None)
@given(
    bits=st.sampled_from(QUANT_BITS),
    signed=st.booleans(),
    symmetric=st.booleans(),
    per_channel=st.booleans(),
    method=st.sampled_from(["lsq", "minmax"]),
    seed=st.integers(0, 2**16),
    spread=st.floats(0.01, 100.0),
)
def test_round_trip_properties(bits, signed, symmetric, per_channel, method, seed, spread):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 3, 4, 4, generator=gen) * spread + spread * 0.3
    quant = make_quantizer(method, bits, role="weight" if per_channel else "activation", signed=signed,
                           symmetric=symmetric, channels=5 if per_channel else None, init="minmax")
    _ready(quant, x)
    with torch.no_grad():
        y = quant(x)
        codes = quant.quantize_int(x)
        assert codes.dtype == torch.int64
        assert int(codes.min()) >= quant.qmin and int(codes.max()) <= quant.qmax
        assert torch.equal(quant(y), y)  # idempotent
        assert torch.allclose(quant.dequantize(codes), y, rtol=1e-6, atol=1e-6 * spread)
        for channel in (codes if per_channel else codes.reshape(1, -1)):
            assert channel.unique().numel() <= 2**bits
        # the quantization error inside the range is at most half a step
        scale = quant.scale_tensor().detach().reshape(-1, 1, 1, 1) if per_channel else quant.scale_tensor()
        inside = (codes > quant.qmin) & (codes < quant.qmax)
        assert bool(((y - x).abs() <= scale / 2 + 1e-6 * x.abs())[inside].all())  # + float32 rounding


@settings(max_examples=15, deadline=None)
@given(bits_list=st.lists(st.sampled_from([2, 3, 4, 8]), min_size=4, max_size=4), seed=st.integers(0, 999))
def test_mixed_per_channel_bits_respect_each_channel_range(bits_list, seed):
    x = torch.randn(4, 6, 3, 3, generator=torch.Generator().manual_seed(seed))
    quant = _ready(LSQQuantizer(bits_list, channels=4, role="weight"), x)
    codes = quant.quantize_int(x)
    for c, b in enumerate(bits_list):
        lo, hi = qrange(b, True)
        assert lo <= int(codes[c].min()) and int(codes[c].max()) <= hi
        assert codes[c].unique().numel() <= 2**b
    expected = bits_list if len(set(bits_list)) > 1 else bits_list[0]
    assert quant.bits == expected


def test_32_bits_is_a_pass_through():
    x = torch.randn(3, 4) * 1e-3 + 0.123456789
    quant = LSQQuantizer(32, role="weight", channels=3)
    assert quant(x) is x
    assert quant.qmin is None and quant.is_passthrough
    with pytest.raises(ConfigError, match="pass-through"):
        quant.quantize_int(x)


@pytest.mark.parametrize("bits", [1, 9, 12, 33, 0, -4, 4.5, True, "8", None])
def test_bad_bit_widths_are_refused_with_one_line(bits):
    with pytest.raises(BitsmithError) as info:
        LSQQuantizer(bits, role="weight", name="features.0")
    message = str(info.value)
    assert "for 'features.0'" in message and "accepted: 2..8, 16, 32" in message and "\n" not in message


def test_bit_width_error_message_is_exact():
    with pytest.raises(ConfigError) as info:
        check_bits(1, "weight", "features.0")
    assert str(info.value) == "weight bit width 1 for 'features.0' is not supported; accepted: 2..8, 16, 32"


def test_bad_per_channel_settings():
    with pytest.raises(ConfigError, match="5 entries; the layer has 4"):
        LSQQuantizer([2, 4, 4, 8, 8], channels=4, role="weight")
    with pytest.raises(ConfigError, match="per_channel"):
        LSQQuantizer([2, 4], role="weight")
    with pytest.raises(ConfigError, match="must be one integer"):
        LSQQuantizer([2, 4], role="activation", channels=2)
    with pytest.raises(ConfigError, match="number of output channels"):
        LSQQuantizer(4, channels=0, role="weight")
    with pytest.raises(ConfigError, match="per tensor"):
        PACTQuantizer(4, channels=3)
    with pytest.raises(ConfigError, match="unknown quantization method"):
        make_quantizer("dorefa", 4, role="weight")


def test_lsq_gradients_match_the_formula():
    torch.manual_seed(0)
    for per_channel in (False, True):
        x = (torch.randn(4, 3, 5, 5) * 2).requires_grad_()
        quant = LSQQuantizer(3, channels=4 if per_channel else None, role="weight")
        quant.initialize(x)
        y = quant(x)
        dy = torch.randn_like(y)
        y.backward(dy)
        s = quant.scale.detach().reshape(-1, 1, 1, 1) if per_channel else quant.scale.detach()
        v = x.detach() / s
        qmin, qmax = quant.qmin, quant.qmax
        inside = (v >= qmin) & (v <= qmax)  # the paper clips before rounding
        q = v.clamp(qmin, qmax).round()
        n = x[0].numel() if per_channel else x.numel()
        g = 1.0 / math.sqrt(n * qmax)
        per_elem = torch.where(inside, q - v, q) * dy * g
        expected = per_elem.sum((1, 2, 3)) if per_channel else per_elem.sum().reshape(1)
        # the step size is exp(LOG_SCALE_GAIN * log_scale): d/dlog_scale = LOG_SCALE_GAIN * scale * d/dscale
        assert torch.allclose(quant.log_scale.grad, expected * LOG_SCALE_GAIN * quant.scale.detach(), rtol=1e-4,
                              atol=1e-7)
        assert torch.equal(x.grad, dy * inside)


def test_lsq_matches_torch_fused_learnable_op():
    """Same forward as torch's fused LSQ kernel; same gradients too, away from the half step just outside
    [qmin, qmax] where torch (rounding before clipping) still passes the gradient and the paper does not."""
    torch.manual_seed(1)
    s = 0.25
    v = torch.rand(64, 120) * 22 - 3  # codes -3 .. 19 around the unsigned 4-bit range 0 .. 15
    v[((v > 15) & (v < 15.5)) | ((v < 0) & (v > -0.5))] = 7.0
    x = (v * s).requires_grad_()
    quant = LSQQuantizer(4, signed=False, role="activation")
    quant.set_range(0.0, 15 * s)
    y = quant(x)
    dy = torch.randn_like(y)
    y.backward(dy)
    x_ref = x.detach().clone().requires_grad_()
    scale = quant.scale.detach().clone().requires_grad_()
    y_ref = torch._fake_quantize_learnable_per_tensor_affine(x_ref, scale, torch.zeros(1), 0, 15,
                                                             quant.grad_factor(x))
    y_ref.backward(dy)
    assert torch.allclose(y, y_ref)
    assert torch.allclose(x.grad, x_ref.grad)
    assert torch.allclose(quant.log_scale.grad, scale.grad * LOG_SCALE_GAIN * scale.detach(), rtol=1e-4)


def test_asymmetric_zero_point_gradient_and_codes():
    torch.manual_seed(2)
    x = (torch.rand(2, 50) * 3 - 0.5).requires_grad_()
    quant = LSQQuantizer(4, signed=False, symmetric=False, role="activation")
    quant.set_range(-0.2, 2.0)
    assert int(quant.zero_point) > 0
    y = quant(x)
    dy = torch.ones_like(y)
    y.backward(dy)
    s, z = quant.scale.detach(), quant.zero_point.float()
    w = x.detach() / s + z
    clipped = (w < 0) | (w > 15)
    g = quant.grad_factor(x)
    assert torch.allclose(quant.offset.grad, (-s * clipped.float()).sum().reshape(1) * g, rtol=1e-5)
    codes = quant.quantize_int(x)
    assert int(codes.min()) >= 0 and int(codes.max()) <= 15
    assert torch.allclose(quant.dequantize(codes), y.detach(), atol=1e-6)


def test_pact_gradients_match_the_paper():
    torch.manual_seed(3)
    x = (torch.randn(8, 40) * 2).requires_grad_()
    quant = PACTQuantizer(4)
    quant.set_range(0.0, 1.5)
    assert torch.allclose(quant.alpha.detach(), torch.tensor([1.5]))
    y = quant(x)
    assert float(y.detach().min()) == 0.0 and float(y.detach().max()) <= 1.5 + 1e-6
    dy = torch.randn_like(y)
    y.backward(dy)
    alpha = quant.alpha.detach()
    assert torch.allclose(quant.alpha.grad, dy[x.detach() > alpha].sum().reshape(1), rtol=1e-5)
    inside = (x.detach() > 0) & (x.detach() < alpha)
    assert torch.equal(x.grad[inside], dy[inside])
    assert bool((x.grad[(x.detach() < 0) | (x.detach() > alpha)] == 0).all())
    signed = PACTQuantizer(3, signed=True)
    signed.set_range(-1.0, 0.5)
    assert (signed.qmin, signed.qmax) == (-3, 3) and torch.allclose(signed.alpha.detach(), torch.tensor([1.0]))
    x2 = x.detach().clone().requires_grad_()
    y2 = signed(x2)
    assert float(y2.detach().min()) == -1.0 and float(y2.detach().max()) == 1.0
    y2.backward(dy)
    expected = dy[x2.detach() > 1.0].sum() - dy[x2.detach() < -1.0].sum()
    assert torch.allclose(signed.alpha.grad, expected.reshape(1), rtol=1e-5)


def test_minmax_observes_in_training_and_freezes_in_eval():
    act = MinMaxQuantizer(8, signed=False, role="activation")
    act.train()
    act(torch.tensor([0.0, 1.0]))
    act(torch.tensor([0.0, 3.0]))
    assert float(act.max_val) == 3.0  # running max over batches
    act.eval()
    act(torch.tensor([0.0, 10.0]))
    assert float(act.max_val) == 3.0
    assert math.isclose(float(act.scale), 3.0 / 255, rel_tol=1e-6)
    weight = MinMaxQuantizer(8, channels=2, role="weight").train()
    weight(torch.tensor([[1.0, -2.0], [0.5, 0.25]]))
    weight(torch.tensor([[1.0, -1.0], [0.5, 0.25]]))
    assert torch.allclose(weight.min_val, torch.tensor([-1.0, 0.25]))  # weights: the current tensor
    assert not any(p.requires_grad for p in weight.parameters())


def test_signedness_from_data_and_state_dict_round_trip():
    pos = LSQQuantizer(4, signed=None)
    pos(torch.rand(10, 10))
    assert pos.signed is False and pos.qmin == 0 and pos.qmax == 15
    neg = LSQQuantizer(4, signed=None)
    neg(torch.randn(10, 10))
    assert neg.signed is True and neg.qmin == -8
    fresh = LSQQuantizer(4, signed=None)
    fresh.load_state_dict(pos.state_dict())
    assert fresh.signed is False and fresh.is_initialized
    x = torch.rand(3, 10)
    assert torch.equal(fresh(x), pos(x))


def test_mse_initialisation_beats_minmax_at_low_bits():
    x = torch.randn(1, 20000, generator=torch.Generator().manual_seed(4))
    x[0, 0] = 12.0  # one outlier stretches the min/max range
    errors = {}
    for init in ("minmax", "mse"):
        quant = LSQQuantizer(3, init=init, role="weight")
        with torch.no_grad():
            errors[init] = float((quant(x) - x).square().mean())
    assert errors["mse"] < 0.5 * errors["minmax"]


def test_fake_quant_without_grad_is_plain():
    x = torch.randn(10)
    y = fake_quant(x, torch.tensor([0.1]), None, -8, 7)
    assert y.grad_fn is None
    assert torch.allclose(y, torch.clamp(torch.round(x / 0.1), -8, 7) * 0.1)


def test_pass_through_quantizers_have_no_trainable_parameters():
    lsq = LSQQuantizer(32, role="weight", channels=3, symmetric=False)
    pact = PACTQuantizer(32)
    assert not any(p.requires_grad for p in [*lsq.parameters(), *pact.parameters()])
    lsq.set_bits(4)
    assert all(p.requires_grad for p in lsq.parameters())
    frozen = LSQQuantizer(4, learn_scale=False)
    assert not frozen.scale.requires_grad
