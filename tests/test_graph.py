"""bitsmith.graph: node kinds, shapes, edges, parameters, the hooks fallback and unsupported-layer errors."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bitsmith.errors import BitsmithError, UnsupportedLayerError
from bitsmith.graph import Graph, trace
from bitsmith.graph._hooks import hook_nodes
from bitsmith.zoo import create_model, list_models


def _lenet() -> nn.Module:
    return create_model("lenet5", num_classes=10, in_channels=1, image_size=16)


def test_lenet5_nodes_shapes_and_edges():
    model = _lenet()
    graph = trace(model, (1, 16, 16))
    assert graph.method == "fx"
    assert [n.kind for n in graph.nodes] == [
        "input", "conv", "relu", "maxpool", "conv", "relu", "maxpool", "flatten",
        "linear", "relu", "linear", "relu", "linear", "output",
    ]
    assert [n.out_shape for n in graph.nodes] == [
        (1, 1, 16, 16), (1, 6, 16, 16), (1, 6, 16, 16), (1, 6, 8, 8), (1, 16, 8, 8), (1, 16, 8, 8),
        (1, 16, 4, 4), (1, 256), (1, 120), (1, 120), (1, 84), (1, 84), (1, 10), (1, 10),
    ]
    # a chain: every node reads exactly the one before it
    assert all(n.inputs == [n.index - 1] for n in graph.nodes[1:])
    assert graph.adjacency() == [[i + 1] for i in range(13)] + [[]]
    assert graph.nodes[4].in_shapes == [(1, 6, 8, 8)]
    assert [n.module_name for n in graph.layers()] == [
        "features.0", "features.3", "classifier.0", "classifier.2", "classifier.4"]
    conv2 = graph.by_module("features.3")
    assert conv2.attrs["kernel_size"] == [5, 5] and conv2.attrs["padding"] == [2, 2]
    assert conv2.attrs["in_channels"] == 6 and conv2.attrs["out_channels"] == 16
    assert conv2.attrs["weight_shape"] == [16, 6, 5, 5]
    named = dict(model.named_parameters())
    assert conv2.params == {"weight": "features.3.weight", "bias": "features.3.bias"}
    assert named[conv2.params["weight"]] is graph.module(conv2).weight
    assert graph.module("features_3") is model.features[3]
    assert graph.successors(conv2.index) == [5] and graph.predecessors(conv2.index) == [3]


def test_resnet20_adds_have_two_inputs_and_graph_is_json():
    model = create_model("resnet20")
    graph = trace(model, (3, 32, 32))
    adds = [n for n in graph.nodes if n.kind == "add"]
    assert len(adds) == 9
    for add in adds:
        assert len(add.inputs) == 2
        assert add.in_shapes[0] == add.in_shapes[1] == add.out_shape
    assert len(graph.layers()) == 22  # stem + 18 block convs + 2 projection shortcuts + fc
    assert sum(n.kind == "bn" for n in graph.nodes) == 21
    # topological order: every producer comes before its consumer
    assert all(i < n.index for n in graph.nodes for i in n.inputs)
    data = json.loads(json.dumps(graph.to_dict()))
    assert len(data["nodes"]) == len(graph.nodes)
    assert data["adjacency"][adds[0].inputs[0]] == [adds[0].index]
    assert graph.nodes[-1].kind == "output" and graph.nodes[-1].out_shape == (1, 10)


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_traces_with_all_weight_layers(name):
    model = create_model(name, in_channels=3, image_size=32)
    graph = trace(model, (2, 3, 32, 32))
    weight_modules = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert graph.layer_names() == weight_modules
    assert graph.input_shape == (2, 3, 32, 32)
    for node in graph.layers():
        module = graph.module(node)
        if node.kind == "dwconv":
            assert module.groups == module.in_channels > 1
        for local, full in node.params.items():
            assert dict(model.named_parameters())[full] is getattr(module, local)
    if name == "mobilenetv2":
        assert any(n.kind == "dwconv" for n in graph.nodes)
        assert any(n.kind == "relu6" for n in graph.nodes)


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(8 * 4 * 4, 5)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([F.relu(self.a(x)), self.b(x)], dim=1)
        y = y + y * 2
        pooled = F.adaptive_avg_pool2d(y, 4)
        z = self.fc(torch.flatten(pooled, 1)) + self.fc(pooled.view(pooled.size(0), -1))
        return z.sum(dim=1, keepdim=True) + self.head(torch.mean(y, dim=(2, 3)))[:, :1]


def test_functional_ops_map_to_kinds():
    graph = trace(_Functional(), (3, 8, 8))
    kinds = [n.kind for n in graph.nodes]
    for kind in ("relu", "concat", "add", "mul", "adaptive_avgpool", "flatten", "reshape", "mean", "other"):
        assert kind in kinds, kind
    cat = next(n for n in graph.nodes if n.kind == "concat")
    assert cat.attrs["dim"] == 1 and cat.out_shape == (1, 8, 8, 8) and len(cat.inputs) == 2
    # the shared fc is called twice: two layer nodes, one module name
    assert [n.module_name for n in graph.layers()].count("fc") == 2
    assert graph.layer_names() == ["a", "b", "fc", "head"]


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x))
        if x.sum() > 0:  # noqa: SIM108 - the data-dependent branch is what this test is about
            y = self.conv2(y)
        else:
            y = y + self.conv2(y)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def test_fallback_to_hooks_warns_and_keeps_layers_and_edges():
    model = _DataDependent()
    with pytest.warns(UserWarning, match="forward hooks"):
        graph = trace(model, (1, 6, 6))
    assert graph.method == "hooks"
    assert graph.layer_names() == ["conv1", "conv2", "fc"]
    kinds = [n.kind for n in graph.nodes]
    # zeros input: the else branch ran, with its residual add; the x.sum() > 0 test left no node behind
    assert kinds == ["input", "conv", "relu", "conv", "add", "adaptive_avgpool", "flatten", "linear", "output"]
    add = graph.nodes[4]
    assert add.inputs == [2, 3] and add.out_shape == (1, 4, 6, 6)
    assert graph.by_module("fc").in_shapes == [(1, 4)]
    assert graph.by_module("conv1").params == {"weight": "conv1.weight", "bias": "conv1.bias"}
    json.dumps(graph.to_dict())


def test_unsupported_module_and_functional_weight_op_are_named():
    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3)
            self.rnn = nn.LSTM(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rnn(self.stem(x).flatten(2))[0]

    with pytest.raises(UnsupportedLayerError, match=r"'rnn' of type LSTM"):
        trace(Recurrent(), (3, 8, 8))

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3, 3, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(x, self.w)

    with pytest.raises(UnsupportedLayerError, match="conv2d"):
        trace(Functional(), (3, 8, 8))


class QuantConv(nn.Conv2d):
    """Stand-in for quant.QuantConv2d: a Conv2d subclass with a quantizer submodule and data-dependent code."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.quantizer = nn.Module()
        self.quantizer.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.weight.abs().max() > 0 else self.weight + 1
        return self._conv_forward(x, w * self.quantizer.scale, self.bias)


class QuantActLike(nn.Module):
    bitsmith_leaf = True
    bitsmith_kind = "quant_act"

    def __init__(self) -> None:
        super().__init__()
        self.bits = 4
        self.alpha = nn.Parameter(torch.tensor(3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x.clamp(0, self.alpha.item()))


def test_quant_style_leaves_are_not_traced_into():
    model = nn.Sequential(QuantActLike(), QuantConv(3, 5, 3), nn.ReLU6())
    graph = trace(model, (3, 8, 8))
    assert graph.method == "fx"
    assert [n.kind for n in graph.nodes] == ["input", "quant_act", "conv", "relu6", "output"]
    conv = graph.nodes[2]
    assert conv.module_type == "QuantConv" and conv.params["quantizer.scale"] == "1.quantizer.scale"
    assert graph.nodes[1].attrs["bits"] == 4 and graph.nodes[1].params == {"alpha": "0.alpha"}


def test_trace_restores_mode_and_leaves_state_alone():
    model = create_model("resnet20")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace(model, (3, 16, 16))
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("shape", [(3, 32), (0, 3, 3), (1.5, 3, 3), "3x32x32", (True, 3, 3), (1, 1, 1, 1, 1)])
def test_bad_input_shape_is_refused(shape):
    with pytest.raises(BitsmithError, match="input_shape"):
        trace(_lenet(), shape)


def test_input_that_does_not_fit_the_model_is_a_one_line_error():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BitsmithError, match="cannot run on input shape 1x16x20") as info:
            trace(_lenet(), (1, 16, 20))
    assert "\n" not in str(info.value)


def test_lookups_name_what_exists():
    graph = trace(_lenet(), (1, 16, 16))
    assert isinstance(graph, Graph)
    with pytest.raises(BitsmithError, match="no node named 'nope'"):
        graph.node("nope")
    with pytest.raises(BitsmithError, match="features.0"):
        graph.by_module("features.9")
    with pytest.raises(BitsmithError, match="calls no module"):
        graph.module(graph.nodes[0])


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "mobilenetv2"])
def test_hooks_fallback_builds_the_same_graph_as_fx(name):
    model = create_model(name, in_channels=1, image_size=16).eval()
    fx_graph = trace(model, (1, 16, 16))
    with torch.no_grad():
        hooked = hook_nodes(model, torch.zeros(1, 1, 16, 16))
    assert [n.to_dict() for n in hooked] == [n.to_dict() for n in fx_graph.nodes]


class _InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv1(x))
        out = self.conv2(y)
        if out.mean() < 100:
            out += y
        return self.relu(out)


def test_hooks_follow_in_place_ops():
    with pytest.warns(UserWarning, match="forward hooks"):
        graph = trace(_InPlace(), (2, 4, 4))
    assert [(n.kind, n.inputs) for n in graph.nodes] == [
        ("input", []), ("conv", [0]), ("relu", [1]), ("conv", [2]), ("add", [3, 2]), ("relu", [4]), ("output", [5])]
    assert graph.nodes[5].module_name == "relu" and graph.nodes[5].name == "relu_1"
