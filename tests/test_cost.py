"""bitsmith.cost: exact counts against FlopCounterMode and by hand, bits.json, the differentiable twin, and
property tests over randomly built small CNNs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bitsmith.cost import BitsAssignment, DifferentiableCost, LayerBits, model_cost
from bitsmith.errors import BitsmithError, ConfigError
from bitsmith.graph import trace
from bitsmith.zoo import create_model, list_models

DOC = Path(__file__).resolve().parents[1] / "docs" / "COST_MODEL.md"
LENET_LAYERS = ["features.0", "features.3", "classifier.0", "classifier.2", "classifier.4"]


def _lenet() -> nn.Module:
    return create_model("lenet5", num_classes=10, in_channels=1, image_size=16)


# --- cross-check against torch's own FLOP counter -------------------------------------------------------------

ZOO_CASES = [(name, c, s) for name in list_models() for c, s in ((1, 16), (3, 32)) if (name, s) != ("resnet18", 16)]


@pytest.mark.parametrize(("name", "channels", "size"), ZOO_CASES)
def test_macs_match_flop_counter(name, channels, size):
    model = create_model(name, in_channels=channels, image_size=size).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, channels, size, size))
    flops = sum(v for op, v in counter.get_flop_counts()["Global"].items()
                if any(key in str(op) for key in ("convolution", "addmm", "aten.mm")))
    report = model_cost(model, (channels, size, size))
    assert flops == 2 * report.total_macs


# --- LeNet-5 at 1x16x16 by hand (the worked example of docs/COST_MODEL.md) -----------------------------------

# MACs = out_channels * in_channels * k * k * H_out * W_out for a conv, in * out for a linear:
CONV1_MACS = 6 * 1 * 5 * 5 * 16 * 16  # 38,400
CONV2_MACS = 16 * 6 * 5 * 5 * 8 * 8  # 153,600
FC_MACS = 256 * 120 + 120 * 84 + 84 * 10  # 30,720 + 10,080 + 840 = 41,640
LENET_MACS = CONV1_MACS + CONV2_MACS + FC_MACS  # 233,640
LENET_WEIGHTS = 6 * 25 + 16 * 6 * 25 + 256 * 120 + 120 * 84 + 84 * 10  # 44,190
LENET_BIASES = 6 + 16 + 120 + 84 + 10  # 236
# W4A8: BOPs = MACs * 4 * 8; memory = 4-bit weights + 32-bit biases + one 32-bit scale per output channel
W4A8_BOPS = LENET_MACS * 4 * 8  # 7,476,480
W4A8_MEMORY = LENET_WEIGHTS * 4 + LENET_BIASES * 32 + LENET_BIASES * 32  # 191,864 bits
FP32_BOPS = LENET_MACS * 32 * 32  # 239,247,360
FP32_MEMORY = (LENET_WEIGHTS + LENET_BIASES) * 32  # 1,421,632 bits, no scales at 32 bits
# activation peak at W4A8: conv1 reads 1*16*16 values at 8 bits and writes 6*16*16 that conv2 reads at 8 bits
W4A8_ACT_PEAK = 1 * 16 * 16 * 8 + 6 * 16 * 16 * 8  # 14,336 bits
# filters 0 and 1 of conv1 pruned: conv1 keeps 4 filters, conv2 reads 4 input channels
PRUNED_MACS = 4 * 1 * 25 * 256 + 16 * 4 * 25 * 64 + FC_MACS  # 25,600 + 102,400 + 41,640 = 169,640
# conv2 with 8 filters at 2 bits and 8 at 8 bits (A8): 64 positions * 150 weights per filter * 8 * (8*2 + 8*8)
MIXED_CONV2_BOPS = 64 * 150 * 8 * (8 * 2 + 8 * 8)  # 6,144,000


def test_lenet5_fp32_by_hand():
    report = model_cost(_lenet(), (1, 16, 16))
    assert [c.name for c in report.layers] == LENET_LAYERS
    assert [c.macs for c in report.layers] == [38_400, 153_600, 30_720, 10_080, 840]
    assert report.total_macs == LENET_MACS == 233_640
    assert report.total_params == LENET_WEIGHTS + LENET_BIASES == 44_426
    assert report.total_bops == FP32_BOPS == 239_247_360
    assert report.weight_memory_bits == FP32_MEMORY == 1_421_632
    assert report.dof == 44_426
    assert report.input_shape == (1, 16, 16)


def test_lenet5_w4a8_by_hand():
    report = model_cost(_lenet(), (1, 16, 16), weight_bits=4, act_bits=8)
    assert report.total_bops == W4A8_BOPS == 7_476_480
    assert report.weight_memory_bits == W4A8_MEMORY == 191_864
    assert report.size_kib == pytest.approx(191_864 / 8192)
    assert report.act_peak_bits == W4A8_ACT_PEAK == 14_336
    conv1 = report.layers[0]
    assert (conv1.bops, conv1.params, conv1.weight_memory_bits) == (38_400 * 32, 156, 150 * 4 + 6 * 32 + 6 * 32)
    assert conv1.act_in_memory_bits == 256 * 8 and conv1.act_memory_bits == 1536 * 8
    # the logits are read by nobody: stored at full precision
    assert report.layers[-1].act_memory_bits == 10 * 32
    per_tensor = model_cost(_lenet(), (1, 16, 16), weight_bits=4, act_bits=8, per_channel=False, scale_bits=16)
    assert per_tensor.weight_memory_bits == LENET_WEIGHTS * 4 + LENET_BIASES * 32 + 5 * 16


def test_lenet5_pruned_and_mixed_by_hand():
    graph = trace(_lenet(), (1, 16, 16))
    bits = BitsAssignment.uniform(graph, 4, 8)
    bits.layers["features.0"] = LayerBits(4, 8, keep=[0, 0, 1, 1, 1, 1])
    pruned = model_cost(graph, bits=bits)
    assert pruned.total_macs == PRUNED_MACS == 169_640
    assert pruned.total_bops == PRUNED_MACS * 32
    assert pruned.layers[0].out_channels_kept == 4 and pruned.layers[0].params == 4 * 25 + 4
    assert pruned.layers[1].params == 16 * 4 * 25 + 16

    mixed = BitsAssignment.uniform(graph, 4, 8)
    mixed.layers["features.3"] = LayerBits([2] * 8 + [8] * 8, 8)
    report = model_cost(graph, bits=mixed)
    assert report.layers[1].bops == MIXED_CONV2_BOPS == 6_144_000
    assert report.layers[1].weight_bits == 5.0


def test_flatten_carries_pruned_channels_into_the_linear_layer():
    graph = trace(_lenet(), (1, 16, 16))
    bits = BitsAssignment.uniform(graph, 8, 8)
    bits.layers["features.3"] = LayerBits(8, 8, keep=[1] * 3 + [0] + [1] * 12)
    report = model_cost(graph, bits=bits)
    assert report.layers[2].macs == 120 * (256 - 4 * 4)  # the channel's 4x4 = 16 features are gone
    assert report.layers[2].params == 120 * 240 + 120


def test_worked_example_numbers_are_in_the_doc():
    text = DOC.read_text(encoding="utf-8")
    for value in (LENET_MACS, LENET_WEIGHTS + LENET_BIASES, W4A8_BOPS, W4A8_MEMORY, FP32_BOPS, FP32_MEMORY,
                  W4A8_ACT_PEAK, PRUNED_MACS, MIXED_CONV2_BOPS):
        assert f"{value:,}" in text, value


# --- structural rules ------------------------------------------------------------------------------------------


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.branch = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.stem(x))
        return self.head(torch.relu(s + self.bn(self.branch(s))))


def _keep_cost(model, shape, keeps):
    graph = trace(model, shape)
    bits = BitsAssignment.uniform(graph, 4, 4)
    for name, keep in keeps.items():
        bits.layers[name] = LayerBits(4, 4, keep=keep)
    return {c.name: c.macs for c in model_cost(graph, bits=bits).layers}


def test_residual_add_keeps_a_channel_kept_on_either_side():
    full = _keep_cost(_Residual(), (2, 5, 5), {})
    assert full == {"stem": 4 * 2 * 9 * 25, "branch": 4 * 4 * 9 * 25, "head": 2 * 4 * 25}
    one_side = _keep_cost(_Residual(), (2, 5, 5), {"branch": [0, 1, 1, 1]})
    assert one_side["head"] == full["head"] and one_side["branch"] == 3 * 4 * 9 * 25
    both = _keep_cost(_Residual(), (2, 5, 5), {"branch": [0, 1, 1, 1], "stem": [0, 1, 1, 1]})
    assert both["head"] == 2 * 3 * 25
    assert both["branch"] == 3 * 3 * 9 * 25  # its pruned filter and the pruned input channel


def test_depthwise_and_grouped_convs():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 8, 3, padding=1, groups=4), nn.Conv2d(8, 6, 1, groups=2))
    full = _keep_cost(model, (3, 6, 6), {})
    assert full == {"0": 4 * 3 * 36, "1": 8 * 1 * 9 * 36, "2": 6 * 4 * 36}
    graph = trace(model, (3, 6, 6))
    assert graph.by_module("1").kind == "dwconv"  # groups == in_channels (channel multiplier 2)
    assert graph.by_module("2").kind == "conv"  # grouped, not depthwise
    pruned = _keep_cost(model, (3, 6, 6), {"0": [1, 0, 1, 1]})
    # input channel 1 feeds group 1 = output channels 2 and 3 of the grouped conv
    assert pruned["1"] == 6 * 9 * 36
    pruned = _keep_cost(model, (3, 6, 6), {"1": [1, 1, 1, 1, 0, 0, 0, 1]})
    # conv "2": group 0 reads channels 0-3 (all kept), group 1 reads 4-7 (one kept): 3*4 + 3*1 per position
    assert pruned["2"] == (3 * 4 + 3 * 1) * 36


def test_dof_counts_trainable_scalars_or_takes_the_argument():
    model = _lenet()
    for p in model.features.parameters():
        p.requires_grad_(False)
    report = model_cost(model, (1, 16, 16))
    assert report.dof == 44_426 - (156 + 2_416) and report.total_params == 44_426
    assert model_cost(model, (1, 16, 16), dof=1234).dof == 1234
    with pytest.raises(ConfigError, match="dof"):
        model_cost(model, (1, 16, 16), dof=-1)


def test_report_json_and_table():
    report = model_cost(create_model("resnet20"), (3, 32, 32), weight_bits=4, act_bits=4)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["totals"]["macs"] == report.total_macs and len(data["layers"]) == 22
    console = Console(record=True, width=160)
    console.print(report.table())
    text = console.export_text()
    assert "layer1.0.conv1" in text and f"{report.total_macs:,}" in text


def test_model_cost_argument_errors():
    model = _lenet()
    with pytest.raises(BitsmithError, match="input_shape"):
        model_cost(model)
    with pytest.raises(ConfigError, match="got 0"):
        model_cost(model, (1, 16, 16), weight_bits=0)
    with pytest.raises(ConfigError, match="got 33"):
        model_cost(model, (1, 16, 16), act_bits=33)
    with pytest.raises(ConfigError, match="scale_bits"):
        model_cost(model, (1, 16, 16), scale_bits=-2)


# --- bits.json --------------------------------------------------------------------------------------------------


def test_bits_json_round_trip(tmp_path):
    graph = trace(_lenet(), (1, 16, 16))
    bits = BitsAssignment.uniform(graph, 8, 8)
    bits.layers["features.3"] = LayerBits([4, 2] * 8, 4, keep=[1, 0] * 8)
    path = bits.save(tmp_path / "run" / "bits.json")
    assert [p.name for p in path.parent.iterdir()] == ["bits.json"]  # written atomically, no temp left
    loaded = BitsAssignment.load(path)
    assert loaded == bits
    assert json.loads(path.read_text())["version"] == 1
    loaded.validate(graph)


BAD_ENTRIES = [
    ({"weight_bits": 0, "act_bits": 8}, "got 0"),
    ({"weight_bits": 33, "act_bits": 8}, "got 33"),
    ({"weight_bits": 4.0, "act_bits": 8}, "got 4.0"),
    ({"weight_bits": True, "act_bits": 8}, "got True"),
    ({"weight_bits": 4, "act_bits": "8"}, "act_bits"),
    ({"weight_bits": [4, 0], "act_bits": 8}, r"weight_bits\[1\]"),
    ({"weight_bits": [], "act_bits": 8}, "empty"),
    ({"weight_bits": 4, "act_bits": 8, "keep": [1, 2]}, r"keep\[1\]"),
    ({"weight_bits": 4, "act_bits": 8, "keep": [True]}, "keep"),
    ({"weight_bits": 4}, "missing act_bits"),
    ({"weight_bits": 4, "act_bits": 8, "wbits": 3}, "unknown key"),
]


@pytest.mark.parametrize(("entry", "message"), BAD_ENTRIES)
def test_bad_bits_entries_are_refused(entry, message):
    with pytest.raises(ConfigError, match=message) as info:
        BitsAssignment.from_dict({"version": 1, "layers": {"features.0": entry}})
    assert "features.0" in str(info.value) and "\n" not in str(info.value)


def test_bits_file_errors(tmp_path):
    graph = trace(_lenet(), (1, 16, 16))
    layers = {name: {"weight_bits": 4, "act_bits": 8} for name in LENET_LAYERS}
    with pytest.raises(ConfigError, match="'features.1' is not a conv/linear layer.*features.0"):
        BitsAssignment.from_dict({"version": 1, "layers": {**layers, "features.1": layers["features.0"]}}
                                 ).validate(graph)
    with pytest.raises(ConfigError, match="classifier.4.*missing"):
        BitsAssignment.from_dict({"layers": {k: v for k, v in layers.items() if k != "classifier.4"}}
                                 ).validate(graph)
    with pytest.raises(ConfigError, match="has 3 entries; it has 6 output channels"):
        BitsAssignment.from_dict({"layers": {**layers, "features.0": {"weight_bits": [4, 4, 4], "act_bits": 8}}}
                                 ).validate(graph)
    with pytest.raises(ConfigError, match="version"):
        BitsAssignment.from_dict({"version": 2, "layers": layers})
    with pytest.raises(ConfigError, match="not found"):
        BitsAssignment.load(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        BitsAssignment.load(broken)


def test_long_layer_lists_are_truncated_in_errors():
    graph = trace(create_model("resnet18"), (3, 32, 32))
    with pytest.raises(ConfigError, match=r"more\)") as info:
        BitsAssignment.from_dict({"layers": {"nope": {"weight_bits": 4, "act_bits": 4}}}).validate(graph)
    assert len(str(info.value)) < 400


# --- the differentiable twin ------------------------------------------------------------------------------------


def test_differentiable_per_weight_gradient_is_exact():
    graph = trace(_lenet(), (1, 16, 16))
    cost = DifferentiableCost(graph)
    w = {g.name: torch.full(tuple(g.weight_shape), 4.0, requires_grad=True) for g in cost.layers}
    a = {name: torch.tensor(8.0, requires_grad=True) for name in cost.layer_names}
    bops = cost.bops(w, a)
    assert bops.dtype == torch.float64 and bops.item() == W4A8_BOPS
    bops.backward()
    # d BOPs / d w[e] = output positions * input activation bits
    assert torch.all(w["features.0"].grad == 256 * 8)
    assert torch.all(w["classifier.0"].grad == 1 * 8)
    # d BOPs / d a = sum of weight bits times positions = MACs * 4
    assert a["features.3"].grad.item() == CONV2_MACS * 4
    assert cost.macs().item() == LENET_MACS


def test_differentiable_keep_gradients_flow_across_layers():
    graph = trace(_lenet(), (1, 16, 16))
    cost = DifferentiableCost(graph)
    keep = torch.full((6,), 0.5, requires_grad=True)
    bops = cost.bops({n: 4.0 for n in cost.layer_names}, {n: 8.0 for n in cost.layer_names}, {"features.0": keep})
    bops.backward()
    # each conv1 filter: its own MACs (25*256) and the conv2 MACs that read it (16*25*64), at 4*8 bits
    assert torch.allclose(keep.grad, torch.full((6,), (25 * 256 + 16 * 25 * 64) * 32.0, dtype=torch.float32))


def test_differentiable_input_errors():
    cost = DifferentiableCost(trace(_lenet(), (1, 16, 16)))
    full = {n: 4.0 for n in cost.layer_names}
    with pytest.raises(BitsmithError, match="classifier.4.*missing"):
        cost.bops({k: v for k, v in full.items() if k != "classifier.4"}, full)
    with pytest.raises(BitsmithError, match="'fc' is not a conv/linear layer"):
        cost.bops(full, full, {"fc": torch.ones(3)})
    with pytest.raises(BitsmithError, match=r"weight_bits\['features.0'\] has shape \(4,\)"):
        cost.bops({**full, "features.0": torch.ones(4)}, full)
    with pytest.raises(BitsmithError, match=r"act_bits\['features.3'\]"):
        cost.bops(full, {**full, "features.3": torch.ones(7)})
    with pytest.raises(BitsmithError, match="Graph"):
        DifferentiableCost(_lenet())


# --- properties over random small CNNs --------------------------------------------------------------------------


class _RandomCNN(nn.Module):
    def __init__(self, in_channels: int, size: int, blocks: list[tuple[str, int, int, int]]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for kind, width, kernel, stride in blocks:
            if kind == "res":
                layers.append(_ResBlock(channels))
                continue
            if kind == "dw":
                out, groups = channels * max(1, width // 3), channels
            else:
                out, groups = width, 1
            layers += [nn.Conv2d(channels, out, kernel, stride, kernel // 2, groups=groups, bias=kind == "conv"),
                       nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.features.eval()(torch.zeros(1, in_channels, size, size)).numel()
        self.fc = nn.Linear(flat, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


@st.composite
def _cnns(draw):
    block = st.tuples(st.sampled_from(["conv", "dw", "res"]), st.integers(1, 6), st.sampled_from([1, 3]),
                      st.integers(1, 2))
    in_channels, size = draw(st.integers(1, 3)), draw(st.integers(3, 9))
    model = _RandomCNN(in_channels, size, draw(st.lists(block, min_size=1, max_size=4)))
    return trace(model, (in_channels, size, size)), random.Random(draw(st.integers(0, 2**32 - 1)))


def _random_bits(graph, rng, prune: bool, max_bits: int = 16) -> BitsAssignment:
    layers = {}
    for node in graph.layers():
        out = node.attrs.get("out_channels", node.attrs.get("out_features"))
        keep = [int(rng.random() < 0.6) for _ in range(out)] if prune else None
        layers[node.module_name] = LayerBits([rng.randint(1, max_bits) for _ in range(out)],
                                             rng.randint(1, max_bits), keep)
    return BitsAssignment(layers)


def _scaled(bits: BitsAssignment, w: int = 1, a: int = 1) -> BitsAssignment:
    return BitsAssignment({n: LayerBits([b * w for b in lb.channel_bits(0)], lb.act_bits * a, lb.keep)
                           for n, lb in bits.layers.items()})


PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(_cnns(), st.booleans())
def test_property_totals_are_sums_and_bops_scale_with_bits(case, prune):
    graph, rng = case
    bits = _random_bits(graph, rng, prune)
    report = model_cost(graph, bits=bits)
    assert report.total_macs == sum(c.macs for c in report.layers)
    assert report.total_bops == sum(c.bops for c in report.layers)
    assert report.total_params == sum(c.params for c in report.layers)
    assert report.weight_memory_bits == sum(c.weight_memory_bits for c in report.layers)
    doubled_w = model_cost(graph, bits=_scaled(bits, w=2))
    doubled_a = model_cost(graph, bits=_scaled(bits, a=2))
    assert [c.bops for c in doubled_w.layers] == [2 * c.bops for c in report.layers]
    assert doubled_a.total_bops == 2 * report.total_bops
    assert doubled_w.total_macs == report.total_macs


@PROPERTY
@given(_cnns())
def test_property_pruning_never_increases_cost(case):
    graph, rng = case
    dense = _random_bits(graph, rng, prune=False)
    sparse = BitsAssignment({n: LayerBits(lb.weight_bits, lb.act_bits,
                                          [int(rng.random() < 0.7) for _ in lb.channel_bits(0)])
                             for n, lb in dense.layers.items()})
    sparser = BitsAssignment({n: LayerBits(lb.weight_bits, lb.act_bits,
                                           [k * int(rng.random() < 0.7) for k in lb.keep])
                              for n, lb in sparse.layers.items()})
    reports = [model_cost(graph, bits=b) for b in (dense, sparse, sparser)]
    for before, after in zip(reports, reports[1:], strict=False):
        for a, b in zip(before.layers, after.layers, strict=True):
            assert b.macs <= a.macs and b.bops <= a.bops and b.params <= a.params
            assert b.weight_memory_bits <= a.weight_memory_bits
        assert after.act_peak_bits <= before.act_peak_bits


@PROPERTY
@given(_cnns(), st.booleans())
def test_property_differentiable_equals_exact_on_hard_inputs(case, prune):
    graph, rng = case
    bits = _random_bits(graph, rng, prune)
    report = model_cost(graph, bits=bits)
    cost = DifferentiableCost(graph)
    w = {n: torch.tensor(lb.channel_bits(0), dtype=torch.float32) for n, lb in bits.layers.items()}
    a = {n: torch.tensor(lb.act_bits) for n, lb in bits.layers.items()}
    keep = {n: torch.tensor(lb.keep, dtype=torch.float32) for n, lb in bits.layers.items() if lb.keep}
    assert cost.bops(w, a, keep or None).item() == report.total_bops
    assert cost.macs(keep or None).item() == report.total_macs
    # per-weight bit tensors (CGMQ) that repeat the per-channel widths give the same count
    per_weight = {g.name: w[g.name].reshape(-1, *[1] * (len(g.weight_shape) - 1)).expand(g.weight_shape)
                  for g in cost.layers}
    assert cost.bops(per_weight, a, keep or None).item() == report.total_bops


@PROPERTY
@given(_cnns())
def test_property_soft_inputs_have_finite_gradients(case):
    graph, rng = case
    cost = DifferentiableCost(graph)
    gen = torch.Generator().manual_seed(rng.randint(0, 2**31))
    w = {g.name: (torch.rand(g.weight_shape, generator=gen) * 7 + 1).requires_grad_() for g in cost.layers}
    a = {g.name: (torch.rand(g.in_channels, generator=gen) * 7 + 1).requires_grad_() for g in cost.layers}
    keep = {g.name: torch.rand(g.out_channels, generator=gen).requires_grad_() for g in cost.layers}
    bops = cost.bops(w, a, keep)
    bops.backward()
    assert torch.isfinite(bops) and bops.item() > 0
    for tensor in (*w.values(), *a.values(), *keep.values()):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
    assert all(keep[g.name].grad.abs().sum() > 0 for g in cost.layers)


def test_a_relative_budget_is_a_fraction_of_the_uniform_w8a8_or_fp32_cost():
    model = create_model("lenet5", 10, 1, (16, 16))
    cost = DifferentiableCost(trace(model, (1, 16, 16)))
    w8a8 = model_cost(model, (1, 16, 16), weight_bits=8, act_bits=8).total_bops
    assert cost.uniform(8) == w8a8
    assert cost.budget(0.25, "w8a8") == 0.25 * w8a8
    assert cost.budget(0.5, "fp32") == 0.5 * model_cost(model, (1, 16, 16)).total_bops
    assert cost.budget(1234.0, "absolute") == 1234.0
    with pytest.raises(BitsmithError, match="accepted: w8a8, fp32, absolute"):
        cost.budget(0.25, "w4a4")
