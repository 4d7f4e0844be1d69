"""Tests of the model zoo: shapes, parameter counts, tracing, specs, errors and determinism."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bitsmith.errors import BitsmithError
from bitsmith.zoo import _registry, create_model, describe, list_models, register_model

MODELS = ["lenet5", "mobilenetv2", "resnet18", "resnet20", "vgg_small"]
ALLOWED_LEAVES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.AdaptiveAvgPool2d,
                  nn.Flatten, nn.Dropout)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def test_list_models_sorted_and_complete() -> None:
    assert list_models() == sorted([*MODELS, "cellnet"])  # cellnet: the GHN search space, tested in test_space


@pytest.mark.parametrize("name", MODELS)
def test_describe_is_one_line_with_name(name: str) -> None:
    text = describe(name)
    assert text.startswith(f"{name}: ") and "\n" not in text
    assert "width=1.0" in describe("vgg_small")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("in_channels", "size", "classes"), [(1, 16, 10), (3, 32, 7)])
def test_forward_shape_and_boundary_layers(name: str, in_channels: int, size: int, classes: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=classes, in_channels=in_channels, image_size=size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()
    first_name, first = convs(model)[0]
    last_name, last = linears(model)[-1]
    assert first.in_channels == in_channels
    assert last.out_features == classes
    names = [n for n, _ in model.named_modules()]
    assert names.index(last_name) > max(names.index(n) for n, _ in convs(model))
    assert first_name in {"features.0", "conv1", "stem.0"}


@pytest.mark.parametrize("name", MODELS)
def test_only_standard_layers(name: str) -> None:
    model = create_model(name, in_channels=1, image_size=16)
    leaves = [m for m in model.modules() if not list(m.children())]
    assert leaves and all(isinstance(m, ALLOWED_LEAVES) for m in leaves)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lenet5", ["features.0", "features.3", "classifier.0", "classifier.4"]),
        ("vgg_small", ["features.0", "features.1", "features.6", "features.20", "classifier"]),
        ("resnet20", ["conv1", "layer1.0.conv1", "layer2.0.shortcut.0", "layer3.2.conv2", "fc"]),
        ("resnet18", ["conv1", "layer1.1.conv2", "layer4.0.shortcut.1", "fc"]),
        (
            "mobilenetv2",
            ["stem.0", "blocks.0.depthwise.0", "blocks.1.expand.0", "blocks.16.project.1", "head.0",
             "classifier.1"],
        ),
    ],
)
def test_stable_module_names(name: str, expected: list[str]) -> None:
    names = dict(create_model(name, in_channels=1, image_size=16).named_modules())
    for module_name in expected:
        assert module_name in names


@pytest.mark.parametrize(("size", "flat"), [(16, 256), (28, 784), (32, 1024)])
def test_lenet5_matches_protocol(size: int, flat: int) -> None:
    model = create_model("lenet5", in_channels=1, image_size=size)
    (_, c1), (_, c2) = convs(model)
    assert (c1.out_channels, c1.kernel_size, c1.padding) == (6, (5, 5), (2, 2))
    assert (c2.out_channels, c2.kernel_size, c2.padding) == (16, (5, 5), (2, 2))
    assert [m.out_features for _, m in linears(model)] == [120, 84, 10]
    assert linears(model)[0][1].in_features == flat
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    conv_params = (1 * 25 + 1) * 6 + (6 * 25 + 1) * 16
    assert n_params(model) == conv_params + (flat + 1) * 120 + 121 * 84 + 85 * 10


def test_param_counts_at_cifar_input() -> None:
    assert abs(n_params(create_model("resnet20")) - 0.27e6) <= 0.01e6
    assert abs(n_params(create_model("resnet18")) - 11.17e6) <= 0.1e6
    assert 2.2e6 <= n_params(create_model("mobilenetv2")) <= 2.3e6


def test_vgg_small_structure_and_width() -> None:
    model = create_model("vgg_small")
    assert [m.out_channels for _, m in convs(model)] == [128, 128, 256, 256, 512, 512]
    assert model.classifier.in_features == 512 * 4 * 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 6
    half = create_model("vgg_small", width=0.5, image_size=16)
    assert [m.out_channels for _, m in convs(half)] == [64, 64, 128, 128, 256, 256]
    assert half.classifier.in_features == 256 * 2 * 2


def test_mobilenetv2_depthwise_and_width() -> None:
    model = create_model("mobilenetv2")
    depthwise = [m for _, m in convs(model) if m.groups > 1]
    assert len(depthwise) == 17 and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())
    assert linears(model)[-1][1].in_features == 1280
    slim = create_model("mobilenetv2", width=0.5)
    assert convs(slim)[0][1].out_channels == 16 and all(m.out_channels % 8 == 0 for _, m in convs(slim)[1:])
    assert n_params(slim) < n_params(model)


@pytest.mark.parametrize(
    ("name", "adds"), [("resnet20", 9), ("resnet18", 8), ("mobilenetv2", 10), ("lenet5", 0)]
)
def test_fx_trace_matches_eager(name: str, adds: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, image_size=32).eval()
    traced = torch.fx.symbolic_trace(model)
    n_adds = sum(1 for node in traced.graph.nodes if node.op == "call_function" and "add" in str(node.target))
    assert n_adds == adds
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(traced(x), model(x), atol=1e-6)


def test_fx_trace_vgg_small() -> None:
    model = create_model("vgg_small", in_channels=1, image_size=16).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("lenet5", {"num_classes": 5, "in_channels": 1, "image_size": (16, 24)}),
        ("vgg_small", {"in_channels": 1, "image_size": [24, 16], "width": 0.25}),
        ("resnet20", {"num_classes": 3, "image_size": 12}),
        ("mobilenetv2", {"in_channels": 1, "image_size": 8, "width": 0.35, "dropout": 0.0}),
    ],
)
def test_spec_rebuilds_same_architecture(name: str, kwargs: dict) -> None:
    model = create_model(name, **kwargs)
    spec = json.loads(json.dumps(model.bitsmith_spec))
    assert spec["name"] == name and len(spec["image_size"]) == 2
    rebuilt = create_model(**spec)
    assert rebuilt.bitsmith_spec == model.bitsmith_spec
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    h, w = spec["image_size"]
    with torch.no_grad():
        assert rebuilt.eval()(torch.randn(1, spec["in_channels"], h, w)).shape == (1, spec["num_classes"])


def test_spec_holds_options_with_defaults() -> None:
    spec = create_model("vgg_small", width=1).bitsmith_spec
    expected = {"name": "vgg_small", "num_classes": 10, "in_channels": 3, "image_size": [32, 32]}
    expected["width"] = 1.0
    assert spec == expected


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "mobilenetv2"])
def test_deterministic_given_seed(name: str) -> None:
    def build(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return create_model(name, in_channels=1, image_size=16).state_dict()

    first, again, other = build(0), build(0), build(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


def test_init_is_standard() -> None:
    torch.manual_seed(0)
    model = create_model("resnet18")
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    conv = model.layer4[0].conv2  # 512 -> 512, 3x3: fan_out = 4608, so std = sqrt(2 / 4608)
    assert abs(conv.weight.std().item() - (2 / (512 * 9)) ** 0.5) < 0.02 * (2 / (512 * 9)) ** 0.5
    lenet = create_model("lenet5")
    assert all(torch.all(m.bias == 0) for _, m in convs(lenet))


@pytest.mark.parametrize(
    ("args", "kwargs", "fragment"),
    [
        (("lenet6",), {}, "available: cellnet, lenet5, mobilenetv2, resnet18, resnet20, vgg_small"),
        (("resnet20",), {"num_classes": 0}, "num_classes must be a positive integer"),
        (("resnet20",), {"num_classes": True}, "num_classes"),
        (("resnet20",), {"num_classes": "10"}, "num_classes"),
        (("lenet5",), {"in_channels": -1}, "in_channels must be a positive integer"),
        (("lenet5",), {"image_size": 0}, "image_size"),
        (("lenet5",), {"image_size": [16]}, "pair"),
        (("lenet5",), {"image_size": (16, 2.5)}, "width"),
        (("lenet5",), {"image_size": 3}, ">= 4"),
        (("vgg_small",), {"image_size": (32, 7)}, "too small for vgg_small"),
        (("resnet18",), {"image_size": 4}, ">= 8"),
        (("resnet20",), {"depth": 2}, "accepted: width=1.0"),
        (("vgg_small",), {"depth": 2}, "accepted: width=1.0"),
        (("vgg_small",), {"width": "wide"}, "width of vgg_small must be float"),
        (("vgg_small",), {"width": 0}, "in (0, 16]"),
        (("mobilenetv2",), {"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments_raise_one_line(args: tuple, kwargs: dict, fragment: str) -> None:
    with pytest.raises(BitsmithError) as info:
        create_model(*args, **kwargs)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_describe_unknown_model() -> None:
    with pytest.raises(BitsmithError, match="unknown model 'nope'; available: cellnet, lenet5"):
        describe("nope")


def test_register_model_adds_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))

    @register_model("tiny", "one conv and a linear", min_image_size=2)
    def tiny(num_classes: int, in_channels: int, image_size: tuple, *, hidden: int = 4) -> nn.Module:
        return nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(hidden, num_classes))

    assert "tiny" in list_models() and describe("tiny") == "tiny: one conv and a linear (options: hidden=4)"
    model = create_model("tiny", num_classes=3, in_channels=2, image_size=2, hidden=6)
    assert model(torch.randn(1, 2, 2, 2)).shape == (1, 3)
    assert model.bitsmith_spec["hidden"] == 6
    with pytest.raises(BitsmithError, match="hidden of tiny must be int"):
        create_model("tiny", hidden=1.5)
    with pytest.raises(BitsmithError, match="already registered"):
        register_model("tiny", "again")(tiny)


@settings(max_examples=12, deadline=None)
@given(
    name=st.sampled_from(["lenet5", "resnet20"]),
    num_classes=st.integers(1, 20),
    in_channels=st.integers(1, 4),
    height=st.integers(8, 40),
    width=st.integers(8, 40),
)
def test_forward_shape_any_input(
    name: str, num_classes: int, in_channels: int, height: int, width: int
) -> None:
    model = create_model(name, num_classes=num_classes, in_channels=in_channels, image_size=(height, width))
    with torch.no_grad():
        out = model.eval()(torch.randn(2, in_channels, height, width))
    assert out.shape == (2, num_classes)
