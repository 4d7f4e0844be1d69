"""DirectQ: weights on the level grid at every step, levels and codes that learn, the channel-aware activation
quantizer, training on digits, checkpoint/resume, conversion to core layers, ablations and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import bitsmith
from bitsmith import runs
from bitsmith.engine import TrainConfig
from bitsmith.errors import ConfigError
from bitsmith.methods import directq
from bitsmith.methods.directq import ChannelAwareActQuantizer, DirectQConfig, DirectWeightQuantizer
from bitsmith.quant import LSQQuantizer, QuantConv2d, QuantLinear, integer_forward

SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def digits():
    x, y = bitsmith.data.get("digits", split="train").tensors()
    return x, y


def lenet(bits: int, **kw) -> nn.Module:
    torch.manual_seed(0)
    model = bitsmith.create_model("lenet5", 10, 1, (16, 16))
    return directq.prepare(model, DirectQConfig(weight_bits=bits, act_bits=bits, first_last_bits=None, **kw), SHAPE)


def direct_layers(model: nn.Module):
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (QuantConv2d, QuantLinear)) and isinstance(m.weight_quant, DirectWeightQuantizer)]


def assert_on_grid(model: nn.Module, bits: int) -> None:
    for name, layer in direct_layers(model):
        wq = layer.quantized_weight().detach()
        codes = layer.weight_quant.codes
        assert int(codes.min()) >= -(2 ** (bits - 1)) and int(codes.max()) <= 2 ** (bits - 1) - 1, name
        scale = layer.weight_quant.scale_tensor().detach().view(-1, *[1] * (wq.dim() - 1))
        assert torch.equal(wq, codes.float() * scale), name
        assert torch.equal(layer.weight.detach(), wq), f"{name}: stored weight is off the grid"
        levels = layer.weight_quant.levels()
        for row, row_levels in zip(wq.reshape(wq.shape[0], -1), levels, strict=True):
            assert row.unique().numel() <= 2 ** bits, name
            assert torch.isin(row, row_levels).all(), f"{name}: a weight is not one of its levels"


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_weights_stay_on_the_level_grid_at_every_step_and_learn(bits, digits):
    x, y = digits
    model = lenet(bits).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    layers = direct_layers(model)
    codes0 = {n: m.weight_quant.codes.clone() for n, m in layers}
    scale0 = {n: m.weight_quant.scale_tensor().detach().clone() for n, m in layers}
    for i in range(12):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[i * 64:(i + 1) * 64]), y[i * 64:(i + 1) * 64])
        loss.backward()
        assert all(m.weight_quant.log_scale.grad.abs().sum() > 0 for _, m in layers), "levels get no gradient"
        opt.step()
        model(x[:2])  # the next forward projects the step
        assert_on_grid(model, bits)
    assert any(not torch.equal(codes0[n], m.weight_quant.codes) for n, m in layers), "no weight changed level"
    assert all(not torch.equal(scale0[n], m.weight_quant.scale_tensor().detach()) for n, m in layers), \
        "levels did not learn"


def test_level_gradient_is_the_sum_over_the_weights_that_use_it():
    torch.manual_seed(0)
    cfg = DirectQConfig(weight_bits=3, act_bits=32, first_last_bits=None)
    layer = directq.prepare(nn.Sequential(nn.Conv2d(2, 3, 3)), cfg, (2, 5, 5))[0]
    wq = layer.weight_quant
    out = layer(torch.randn(4, 2, 5, 5))
    out.backward(torch.randn_like(out))
    dw = layer.weight.grad.clone()  # the direct gradient: dL/dW itself
    per_level = (dw * wq.codes.float()).sum(dim=(1, 2, 3))
    expected = per_level * wq.scale_tensor().detach() * 5.0 * wq.grad_factor(layer.weight)
    torch.testing.assert_close(wq.log_scale.grad, expected)


@settings(max_examples=25, deadline=None)
@given(frac=st.floats(0.05, 0.95), seed=st.integers(0, 10_000))
def test_projection_rounds_a_step_without_bias(frac, seed):
    wq = DirectWeightQuantizer(4, shape=(64, 256), channels=64, seed=seed, name="w", rounding="stochastic")
    w = nn.Parameter(torch.randn(64, 256) * 0.1)
    wq.initialize(w)
    codes = wq.codes.clone().float()
    interior = (codes > -7) & (codes < 6)
    with torch.no_grad():
        w.add_(frac * wq.scale_tensor().view(-1, 1))
    wq.project(w)
    moved = (wq.codes.float() - codes)[interior]
    assert set(moved.unique().tolist()) <= {0.0, 1.0}
    assert abs(moved.mean().item() - frac) < 0.03


@settings(max_examples=25, deadline=None)
@given(frac=st.floats(-0.45, 0.45).filter(lambda f: abs(f) > 0.01), steps=st.integers(1, 12),
       seed=st.integers(0, 10_000))
def test_residual_rounding_adds_up_steps_below_one_level(frac, steps, seed):
    """Each of ``steps`` proposals moves every weight by ``frac`` of a level: with the remainder carried (starting
    from where the weight sat inside its level), a weight's code ends within half a level of its start plus the sum
    of its proposals (stochastic rounding gets there only in expectation), and the stored weight is on the grid
    after every step. The total move stays within 4 levels, so that weights away from the grid's ends remain."""
    assume(steps * abs(frac) <= 4.0)
    torch.manual_seed(seed)
    wq = DirectWeightQuantizer(4, shape=(16, 64), channels=16, name="w", rounding="residual")
    w = nn.Parameter(torch.randn(16, 64) * 0.05)
    w0 = w.detach().clone()
    wq.initialize(w)  # writes the grid value into w
    codes = wq.codes.clone().float()
    start = w0 / wq.scale_tensor().detach().view(-1, 1) - codes  # where each weight sat inside its level
    torch.testing.assert_close(wq.residual, start.clamp(-0.5, 0.5))
    interior = (codes - steps * abs(frac) > -6) & (codes + steps * abs(frac) < 5)
    assert interior.sum() > 100
    for _ in range(steps):
        with torch.no_grad():
            w.add_(frac * wq.scale_tensor().view(-1, 1))
        wq.project(w)
        assert torch.equal(w.detach(), wq.codes.float() * wq.scale_tensor().detach().view(-1, 1))
        assert wq.residual.abs().max() <= 0.5
    moved = (wq.codes.float() - codes)[interior]
    assert ((moved - start[interior] - steps * frac).abs() <= 0.5 + 1e-4).all()
    assert moved.abs().sum() > 0


def test_residual_of_a_clipped_weight_stays_under_half_a_level():
    wq = DirectWeightQuantizer(2, shape=(1, 4), channels=1, name="w", rounding="residual")
    w = nn.Parameter(torch.tensor([[0.0, 0.1, -0.1, 0.05]]))
    wq.initialize(w)
    top = wq.scale_tensor().detach() * 1  # the largest level at 2 bits: code 1
    for _ in range(5):
        with torch.no_grad():
            w.add_(3 * top)  # far beyond the range
        wq.project(w)
    assert wq.codes.tolist() == [[1, 1, 1, 1]]
    assert torch.equal(wq.residual, torch.full((1, 4), 0.5))
    with torch.no_grad():  # a latent weight would now sit 15 levels out; the carried remainder is half a level
        w.sub_(0.9 * top)
    wq.project(w)
    assert wq.codes.tolist() == [[1, 1, 1, 1]]
    with torch.no_grad():
        w.sub_(0.2 * top)  # 1.1 levels back in all: down one level
    wq.project(w)
    assert wq.codes.tolist() == [[0, 0, 0, 0]]


def test_projection_is_deterministic_per_seed_and_layer():
    def run(seed: int, name: str) -> torch.Tensor:
        torch.manual_seed(0)
        w = nn.Parameter(torch.randn(8, 32))
        wq = DirectWeightQuantizer(2, shape=(8, 32), channels=8, seed=seed, name=name, rounding="stochastic")
        wq.initialize(w)
        with torch.no_grad():
            w.add_(0.37 * wq.scale_tensor().view(-1, 1))
        torch.manual_seed(123)  # the global RNG plays no part (data-parallel ranks round alike)
        wq.project(w)
        return wq.codes.clone()

    assert torch.equal(run(1, "a"), run(1, "a"))
    assert not torch.equal(run(1, "a"), run(2, "a"))
    assert not torch.equal(run(1, "a"), run(1, "b"))


def test_channel_aware_scale_serves_the_majority_of_channels():
    torch.manual_seed(0)
    x = torch.rand(16, 8, 6, 6)
    x[:, 0] *= 50.0  # one high-variance channel drags a single min/max or MSE range
    aware = ChannelAwareActQuantizer(3, signed=False, trim=0.25)
    aware.initialize(x)
    mse = LSQQuantizer(3, signed=False, role="activation", init="mse")
    mse.initialize(x)
    assert aware.scale_tensor().item() < 0.5 * mse.scale_tensor().item()

    def normalized_errors(q) -> torch.Tensor:
        with torch.no_grad():
            err = (q(x) - x).square().mean(dim=(0, 2, 3))
        return err / x.var(dim=(0, 2, 3), unbiased=False)

    aware_err, mse_err = normalized_errors(aware.eval()), normalized_errors(mse.eval())
    assert (aware_err[1:] < mse_err[1:]).all(), "the seven ordinary channels should all be better off"


def test_channel_aware_gradient_matches_autograd():
    torch.manual_seed(1)
    x = torch.rand(8, 6, 5, 5) * torch.linspace(0.1, 4.0, 6).view(1, 6, 1, 1)
    q = ChannelAwareActQuantizer(3, signed=False, trim=0.25)
    q.initialize(x)
    objective, grad = q._objective_and_grad(x)
    xc = q._by_channel(x)
    y = bitsmith.quant.fake_quant(xc, q.scale_tensor(), None, 0, 7)
    reference = q._objective((y - xc).square().mean(dim=1), xc.var(dim=1, unbiased=False))
    (expected,) = torch.autograd.grad(reference, q.log_scale)
    torch.testing.assert_close(objective, reference.detach())
    (via_scale,) = torch.autograd.grad(q.scale_tensor(), q.log_scale, grad_outputs=grad)
    torch.testing.assert_close(via_scale, expected)


def test_channel_aware_objective_trains_the_step_size():
    torch.manual_seed(0)
    q = ChannelAwareActQuantizer(2, signed=False, loss_weight=1.0, sample=16).train()
    x = torch.rand(16, 4, 5, 5)
    q(x)  # initialise
    with torch.no_grad():
        q.log_scale.add_(0.2)  # move away from the optimum
    before = q.channel_error(x).item()
    opt = torch.optim.Adam(q.parameters(), lr=5e-3)
    for _ in range(60):
        opt.zero_grad()
        (q(x) * 0.0).sum().backward()  # no task gradient: only the attached objective trains the scale
        opt.step()
    assert q.channel_error(x).item() < 0.9 * before


@pytest.mark.parametrize("grad_scale", ["lsq", "none"])
def test_channel_aware_objective_gradient_scale(grad_scale):
    torch.manual_seed(2)
    x = torch.rand(16, 6, 5, 5) * torch.linspace(0.1, 4.0, 6).view(1, 6, 1, 1)
    q = ChannelAwareActQuantizer(3, signed=False, loss_weight=0.5, sample=16, grad_scale=grad_scale).train()
    q(x)  # initialise
    with torch.no_grad():
        q.log_scale.add_(0.1)  # off the optimum, so the objective has a gradient
    (q(x) * 0.0).sum().backward()  # no task gradient: what reaches the step size is the objective's alone
    _, grad = q._objective_and_grad(x)
    factor = q.grad_factor(x) if grad_scale == "lsq" else 1.0
    (expected,) = torch.autograd.grad(q.scale_tensor(), q.log_scale, grad_outputs=0.5 * factor * grad)
    assert abs(expected.item()) > 0
    torch.testing.assert_close(q.log_scale.grad, expected)


def test_short_run_on_digits_learns_and_resumes_exactly(tmp_path, interrupted_and_resumed):
    cfg = DirectQConfig(weight_bits=4, act_bits=4)
    base = TrainConfig(model="lenet5", dataset="digits", epochs=4, num_threads=1)
    ref = runs.method_run("directq", cfg, tmp_path / "ref", base=base, quiet=True)
    assert ref["test_acc"] > 0.5  # chance is 0.1

    resumed = interrupted_and_resumed(tmp_path / "ref", tmp_path / "cut", 2)
    assert resumed.metrics["test_acc"] == ref["test_acc"]
    a, b = runs.load_model(tmp_path / "ref"), runs.load_model(tmp_path / "cut")
    for (name, la), (_, lb) in zip(direct_layers(a), direct_layers(b), strict=True):
        assert torch.equal(la.weight_quant.codes, lb.weight_quant.codes), name
    assert_on_grid(a, 8)


def test_trained_model_converts_to_core_layers(digits):
    x, y = digits
    model = lenet(4).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for i in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i * 64:(i + 1) * 64]), y[i * 64:(i + 1) * 64]).backward()
        opt.step()
    core = directq.to_core(model).eval()
    model.eval()
    assert not any(isinstance(m, (DirectWeightQuantizer, ChannelAwareActQuantizer)) for m in core.modules())
    with torch.no_grad():
        torch.testing.assert_close(core(x[:64]), model(x[:64]), rtol=0, atol=0)
        ref = core(x[:64])
        exact = integer_forward(core, x[:64])
    assert (exact.argmax(1) == ref.argmax(1)).all()
    assert ((exact - ref).abs().max() / ref.abs().max()).item() < 1e-5
    assert bitsmith.quant.bits_assignment(core).to_dict() == bitsmith.quant.bits_assignment(model).to_dict()
    cost = bitsmith.model_cost(core, SHAPE, bits=bitsmith.quant.bits_assignment(core))
    assert cost.total_bops == pytest.approx(cost.total_macs * 16)


@pytest.mark.parametrize("ideas,weights,acts", [("both", True, True), ("weights", True, False),
                                                ("acts", False, True), ("none", False, False)])
def test_ablation_switches(ideas, weights, acts):
    model = bitsmith.create_model("lenet5", 10, 1, (16, 16))
    q = directq.prepare(model, DirectQConfig.ablation(ideas, weight_bits=2, act_bits=2), SHAPE)
    layer = q.features[3]
    assert isinstance(layer.weight_quant, DirectWeightQuantizer) is weights
    assert isinstance(layer.act_quant, ChannelAwareActQuantizer) is acts
    assert layer.weight_bits == 2 and q.features[0].weight_bits == 8  # first/last layer policy of the core


def test_config_round_trips_json(tmp_path):
    cfg = DirectQConfig(weight_bits=3, act_bits=2, step_gain=2.0, overrides={"features.3": {"weight_bits": 4}})
    assert DirectQConfig.load(cfg.save(tmp_path / "dq.json")) == cfg


@pytest.mark.parametrize("kwargs,needle", [
    ({"weight_bits": 1}, "accepted: 2..8, 16, 32"),
    ({"act_bits": 9}, "accepted: 2..8, 16, 32"),
    ({"step_gain": 0.0}, "step_gain must be positive"),
    ({"act_trim": 1.0}, "act_trim must be in [0, 1)"),
    ({"act_grad_scale": "adam"}, "act_grad_scale 'adam' is not known; accepted: lsq, none"),
    ({"act_layers": "linear"}, "act_layers 'linear' is not known; accepted: all, conv"),
    ({"overrides": {"nope": {"weight_bits": 4}}}, "nope"),
])
def test_bad_config(kwargs, needle):
    with pytest.raises(ConfigError) as err:
        cfg = DirectQConfig(**kwargs)
        directq.prepare(bitsmith.create_model("lenet5", 10, 1, (16, 16)), cfg, SHAPE)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("act_layers", ["all", "conv"])
def test_act_layers_chooses_which_inputs_are_channel_aware(act_layers):
    model = directq.prepare(bitsmith.create_model("lenet5", 10, 1, (16, 16)),
                            DirectQConfig.ablation("acts", weight_bits=2, act_bits=2, act_layers=act_layers), SHAPE)
    layers = [(name, m) for name, m in model.named_modules()
              if isinstance(m, (bitsmith.quant.QuantConv2d, bitsmith.quant.QuantLinear)) and m.act_quant.learnable]
    assert {type(m).__name__ for _, m in layers} == {"QuantConv2d", "QuantLinear"}
    for name, layer in layers:
        aware = act_layers == "all" or isinstance(layer, bitsmith.quant.QuantConv2d)
        assert type(layer.act_quant) is (ChannelAwareActQuantizer if aware else LSQQuantizer), name


def test_unknown_ablation():
    with pytest.raises(ConfigError, match="unknown DirectQ ablation"):
        DirectQConfig.ablation("everything")
