"""RPG: generated weights are exactly ring[index] * sign * scale, every ring entry is used, the map comes back from
the seed (checked by checksum), gradients reach the ring, any module can be wrapped, DoF in the cost model,
checkpoint/resume, materialise, pruning, ring quantization with the integer-exact core forward, and the fit."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bitsmith
from bitsmith import runs
from bitsmith.cost import model_cost
from bitsmith.engine import TrainConfig
from bitsmith.errors import CheckpointError, ConfigError, UnsupportedLayerError
from bitsmith.methods import rpg
from bitsmith.methods.rpg import RPGConfig

SHAPE = (1, 16, 16)


def resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return bitsmith.create_model("resnet20", 10, 1, (16, 16))


class UserNet(nn.Module):
    """A model of the user's own (no zoo spec): the ring must work on it too."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2),
                                  nn.ReLU(), nn.Flatten())
        self.head = nn.Linear(8 * 7 * 7, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_generated_weights_are_ring_entries_times_sign_times_scale_exactly():
    model = rpg.wrap(resnet(), dof_ratio=0.01, seed=3)
    ring = rpg.get_ring(model)
    index, sign = rpg.ring_map(ring.total, ring.dof, 3)
    for name, module in rpg.generated_layers(model):
        start, numel, shape, scale = ring.slots[name]
        expected = (ring.ring.detach()[index[start:start + numel].long()] * sign[start:start + numel].float()
                    * scale).view(shape)
        assert torch.equal(module.weight.detach(), expected)
        assert scale == pytest.approx(math.sqrt(2 / math.prod(shape[1:])))


@settings(max_examples=30, deadline=None)
@given(total=st.integers(1, 5000), dof=st.integers(1, 5000), seed=st.integers(0, 2**31))
def test_every_ring_entry_is_used_about_equally_often(total, dof, seed):
    dof = min(dof, total)
    index, sign = rpg.ring_map(total, dof, seed)
    counts = torch.bincount(index.long(), minlength=dof)
    assert counts.numel() == dof and int(counts.min()) >= 1 and int(counts.max() - counts.min()) <= 1
    assert set(sign.tolist()) <= {-1, 1}


def test_the_same_seed_gives_the_same_model_and_another_seed_another_map():
    a, b = rpg.wrap(resnet(), dof=500, seed=1), rpg.wrap(resnet(), dof=500, seed=1)
    x = torch.rand(2, *SHAPE)
    assert torch.equal(a.eval()(x), b.eval()(x))
    assert int(rpg.get_ring(a).checksum) == int(rpg.get_ring(b).checksum)
    assert int(rpg.get_ring(rpg.wrap(resnet(), dof=500, seed=2)).checksum) != int(rpg.get_ring(a).checksum)


def test_gradients_reach_every_ring_entry_and_nothing_else_is_stored():
    model = rpg.wrap(resnet(), dof_ratio=0.01)
    model(torch.rand(4, *SHAPE)).sum().backward()
    ring = rpg.get_ring(model)
    assert ring.ring.grad is not None and int((ring.ring.grad != 0).sum()) == ring.dof
    for _, module in rpg.generated_layers(model):
        assert "weight" not in module._parameters and "weight" not in module._buffers
        assert "weight" not in module.__dict__
    keys = model.state_dict().keys()
    assert not any(k == f"{name}.weight" for name, _ in rpg.generated_layers(model) for k in keys)
    assert {"rpg_ring.ring", "rpg_ring.seed", "rpg_ring.checksum"} <= set(keys)


def test_inner_leaves_the_first_and_last_layer_and_any_module_can_be_wrapped():
    model = rpg.wrap(resnet(), dof_ratio=0.1)
    names = [n for n, _ in rpg.generated_layers(model)]
    assert "conv1" not in names and "fc" not in names and len(names) == 20  # 18 block convs + 2 shortcuts
    user = rpg.wrap(UserNet(), dof=20, include="all")
    assert [n for n, _ in rpg.generated_layers(user)] == ["body.0", "body.2", "head"]
    user(torch.rand(2, 1, 16, 16)).sum().backward()
    only = rpg.wrap(UserNet(), dof=10, include=["body.2"])
    assert [n for n, _ in rpg.generated_layers(only)] == ["body.2"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(dof=10, dof_ratio=0.1), "exactly one"),
    (dict(), "exactly one"),
    (dict(dof_ratio=1.5), "dof_ratio"),
    (dict(dof=0), "positive"),
    (dict(dof=10, include="middle"), "include"),
    (dict(dof=10, include=["nope"]), "not a Conv2d/Linear layer"),
    (dict(dof=10**9, include="all"), "exceeds"),
])
def test_bad_settings_are_refused_naming_what_is_accepted(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        rpg.wrap(UserNet(), **kwargs)


def test_wrapping_twice_or_quantizing_a_wrapped_model_is_refused_clearly():
    model = rpg.wrap(UserNet(), dof=10, include="all")
    with pytest.raises(ConfigError, match="already wrapped"):
        rpg.wrap(model, dof=10)
    with pytest.raises(UnsupportedLayerError, match="materialize"):
        bitsmith.quantize(model, example_input_shape=(1, 16, 16))


def test_the_cost_model_counts_the_ring_plus_the_parameters_not_generated():
    plain = resnet()
    model = rpg.wrap(plain, dof_ratio=0.003)
    ring = rpg.get_ring(model)
    report = model_cost(model, SHAPE)
    not_generated = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("rpg_ring"))
    assert report.dof == ring.dof + not_generated
    assert report.total_params == model_cost(plain, SHAPE).total_params
    assert report.total_macs == model_cost(plain, SHAPE).total_macs


def test_materialize_gives_an_equal_plain_model():
    model = rpg.wrap(resnet(), dof_ratio=0.01).eval()
    plain = rpg.materialize(model)
    x = torch.rand(3, *SHAPE)
    assert torch.equal(plain(x), model(x))
    assert not hasattr(plain, "rpg_ring") and not list(rpg.generated_layers(plain))
    assert type(plain.layer1[0].conv1) is nn.Conv2d
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in resnet().parameters())
    bitsmith.quantize(plain, example_input_shape=SHAPE)  # a plain model again


def test_the_ring_trains_at_the_scaled_learning_rate(tmp_path):
    cfg = RPGConfig(dof_ratio=0.05, include="all")
    metrics = runs.method_run("rpg", cfg, tmp_path / "run", base=TrainConfig(num_threads=1), epochs=6, quiet=True)
    assert metrics["test_acc"] > 0.7  # LeNet-5 on digits from 5 % of its weights as free parameters
    model, train_cfg, train_ds = runs.build_run_model(tmp_path / "run")
    (callback,) = runs.run_callbacks(tmp_path / "run", model, train_ds)
    group = callback.param_groups(model)[0]
    assert group["lr_scale"] == pytest.approx(1 / rpg.get_ring(model).rms_scale())


def test_an_interrupted_rpg_run_resumes_to_the_same_ring(tmp_path, interrupted_and_resumed):
    runs.method_run("rpg", RPGConfig(dof_ratio=0.02, include="all"), tmp_path / "ref",
                    base=TrainConfig(num_threads=1), epochs=3, quiet=True)
    resumed = interrupted_and_resumed(tmp_path / "ref", tmp_path / "resumed", stop_epoch=2)
    assert torch.equal(rpg.get_ring(resumed.model).ring, rpg.get_ring(runs.load_model(tmp_path / "ref")).ring)
    plain = rpg.materialize(runs.load_model(tmp_path / "resumed"))
    assert isinstance(plain.features[0].weight, nn.Parameter)


def test_a_checkpoint_whose_map_does_not_match_is_refused(tmp_path):
    model = rpg.wrap(UserNet(), dof=30, include="all", seed=1)
    state = model.state_dict()
    other = rpg.wrap(UserNet(), dof=30, include="all", seed=2)
    with pytest.raises(CheckpointError, match="does not match the checkpoint"):
        other.load_state_dict(state)
    rpg.wrap(UserNet(), dof=30, include="all", seed=1).load_state_dict(state)


def test_ring_pruning_and_weight_pruning_zero_the_requested_share():
    model = rpg.wrap(resnet(), dof_ratio=0.01)
    ring = rpg.get_ring(model)
    zeroed = rpg.prune_ring(model, 0.5)
    assert zeroed == ring.dof // 2 and int((ring.ring == 0).sum()) == zeroed
    kept = ring.ring.detach()[ring.ring.detach() != 0].abs()
    assert float(kept.min()) > 0
    plain = rpg.materialize(rpg.wrap(resnet(), dof_ratio=1.0))
    names = [n for n, _ in rpg.generated_layers(rpg.wrap(resnet(), dof_ratio=1.0))]
    count = rpg.prune_weights(plain, names, 0.3)
    zeros = sum(int((plain.get_submodule(n).weight == 0).sum()) for n in names)
    assert zeros == count
    with pytest.raises(ConfigError, match="fraction"):
        rpg.prune_ring(model, 1.0)


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_a_quantized_ring_converts_to_core_layers_with_the_same_integer_codes(bits):
    from bitsmith.quant import calibrate, integer_forward

    model = rpg.wrap(resnet(), dof_ratio=0.01).eval()
    step = rpg.quantize_ring(model, bits)
    ring = rpg.get_ring(model)
    codes = torch.round(ring.ring.detach() / step)
    qmax = (1 << (bits - 1)) - 1
    assert float(codes.abs().max()) <= qmax and torch.allclose(codes * step, ring.ring.detach())
    core = rpg.to_core(model, bits, step, SHAPE)
    calibrate(core, [torch.rand(16, *SHAPE)], weights=False)
    core.eval()
    index, sign = rpg.ring_map(ring.total, ring.dof, 0)
    for name, _ in rpg.generated_layers(model):
        start, numel, shape, _ = ring.slots[name]
        layer = core.get_submodule(name)
        expected = (codes[index[start:start + numel].long()] * sign[start:start + numel]).view(shape).long()
        assert torch.equal(layer.weight_quant.quantize_int(layer.weight), expected)
        assert layer.weight_bits == bits
    x = torch.rand(8, *SHAPE, dtype=torch.float64)
    with torch.no_grad():
        reference = copy.deepcopy(core).double()(x)
    assert float((integer_forward(core, x) - reference).abs().max() / reference.abs().max()) < 1e-9
    assert rpg.storage_bits(model, ring_bits=bits) < rpg.storage_bits(model)


@settings(max_examples=30, deadline=None)
@given(slope=st.floats(-0.2, 0.2), intercept=st.floats(0.0, 1.0))
def test_the_loglinear_fit_recovers_an_exact_line(slope, intercept):
    ratios = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    acc = [slope * math.log10(r) + intercept for r in ratios]
    fit = rpg.loglinear_fit(ratios, acc)
    assert fit["slope"] == pytest.approx(slope, abs=1e-9) and fit["intercept"] == pytest.approx(intercept, abs=1e-9)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-9) or abs(slope) < 1e-6


def test_the_loglinear_fit_reports_a_poor_fit_and_refuses_too_few_points():
    fit = rpg.loglinear_fit([1e-3, 1e-2, 1e-1, 1.0], [0.5, 0.9, 0.5, 0.9])
    assert fit["r2"] < 0.5
    with pytest.raises(ConfigError, match="two"):
        rpg.loglinear_fit([1e-3], [0.5])
    with pytest.raises(ConfigError, match="positive"):
        rpg.loglinear_fit([0.0, 1e-3], [0.5, 0.6])


def test_the_narrow_baseline_width_option():
    narrow = bitsmith.create_model("resnet20", 10, 1, (16, 16), width=0.5)
    assert narrow.layer3[0].conv1.out_channels == 32
    with pytest.raises(ConfigError, match="width must be positive"):
        bitsmith.create_model("resnet20", 10, 1, (16, 16), width=0.0)
