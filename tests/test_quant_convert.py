"""Conversion: QConfig, quantize() on zoo models, activation signedness from the graph, BN folding, errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import bitsmith
from bitsmith.cost.bits import BitsAssignment
from bitsmith.errors import BitsmithError, ConfigError, UnsupportedLayerError
from bitsmith.quant import (
    QConfig,
    QuantConv2d,
    QuantLinear,
    bits_assignment,
    calibrate,
    fold_batchnorm,
    quantize,
)
from bitsmith.quant.layers import _QuantLayer


def _lenet() -> nn.Module:
    torch.manual_seed(0)
    return bitsmith.create_model("lenet5", num_classes=10, in_channels=1, image_size=16)


def _quant_layers(model: nn.Module) -> dict[str, _QuantLayer]:
    return {name: m for name, m in model.named_modules() if isinstance(m, _QuantLayer)}


def test_quantize_converts_a_copy_with_first_and_last_at_8_bits():
    model = _lenet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qmodel = quantize(model, QConfig(weight_bits=4, act_bits=4))
    assert not any(isinstance(m, _QuantLayer) for m in model.modules())  # original untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    layers = _quant_layers(qmodel)
    assert list(layers) == ["features.0", "features.3", "classifier.0", "classifier.2", "classifier.4"]
    assert isinstance(layers["features.0"], QuantConv2d) and isinstance(layers["classifier.4"], QuantLinear)
    bits = {name: (m.weight_bits, m.act_bits) for name, m in layers.items()}
    assert bits == {"features.0": (8, 8), "features.3": (4, 4), "classifier.0": (4, 4), "classifier.2": (4, 4),
                    "classifier.4": (8, 8)}
    uniform = quantize(model, QConfig(weight_bits=4, act_bits=4, first_last_bits=None))
    assert {(m.weight_bits, m.act_bits) for m in _quant_layers(uniform).values()} == {(4, 4)}
    x = torch.rand(4, 1, 16, 16)
    assert qmodel(x).shape == (4, 10)
    assert qmodel.load_state_dict(model.state_dict()).missing_keys == []  # float checkpoints load


def test_activation_signedness_follows_the_graph():
    qmodel = quantize(_lenet(), QConfig(weight_bits=4, act_bits=4))
    layers = _quant_layers(qmodel)
    assert layers["features.0"].act_quant.signed is None  # network input: decided from data
    assert not layers["features.0"].act_quant.log_scale.requires_grad  # and fixed after initialisation
    assert all(layers[n].act_quant.signed is False for n in ["features.3", "classifier.0", "classifier.2"])
    qmodel(torch.rand(4, 1, 16, 16))
    assert layers["features.0"].act_quant.signed is False  # images in [0, 1]
    mobilenet = quantize(bitsmith.create_model("mobilenetv2", in_channels=3, image_size=32))
    mlayers = _quant_layers(mobilenet)
    assert mlayers["blocks.0.depthwise.0"].act_quant.signed is False  # after ReLU6
    assert mlayers["blocks.1.expand.0"].act_quant.signed is True  # after a linear bottleneck (BN, no ReLU)


def test_overrides_bits_files_and_bits_assignment(tmp_path):
    model = _lenet()
    qconfig = QConfig(weight_bits=4, act_bits=4, overrides={
        "features.3": {"weight_bits": [2, 3, 4, 5, 6, 7, 8, 16] * 2, "act_bits": 6},
        "classifier.0": {"method": "minmax", "per_channel": False},
    })
    qmodel = quantize(model, qconfig)
    layers = _quant_layers(qmodel)
    assert layers["features.3"].weight_bits == [2, 3, 4, 5, 6, 7, 8, 16] * 2
    assert layers["classifier.0"].weight_quant.channels is None
    assert type(layers["classifier.0"].act_quant).__name__ == "MinMaxQuantizer"
    assignment = bits_assignment(qmodel)
    assert isinstance(assignment, BitsAssignment)
    assert assignment.layers["features.3"].act_bits == 6
    path = assignment.save(tmp_path / "bits.json")
    from_file = quantize(model, QConfig(bits_file=str(path), first_last_bits=None))
    from_bits = quantize(model, QConfig.from_bits(BitsAssignment.load(path)))
    for other in (from_file, from_bits):
        assert bits_assignment(other).to_dict() == assignment.to_dict()
    keep = [1] * 100 + [0] * 20
    pruned = quantize(model, QConfig.from_bits({"layers": {"classifier.0": {"weight_bits": 4, "act_bits": 4,
                                                                            "keep": keep}}}))
    assert bits_assignment(pruned).layers["classifier.0"].keep == keep


def test_qconfig_round_trips_json_and_refuses_bad_values(tmp_path):
    qconfig = QConfig(weight_bits=2, act_bits=4, method="pact", first_last_bits=None, fold_bn=True,
                      overrides={"features.0": {"weight_bits": 8}})
    path = qconfig.save(tmp_path / "q.json")
    assert QConfig.load(path) == qconfig
    assert json.loads(path.read_text())["method"] == "pact"
    with pytest.raises(ConfigError, match="unknown key"):
        QConfig.from_dict({"wbits": 4})
    with pytest.raises(ConfigError, match="expected an integer"):
        QConfig.from_dict({"weight_bits": "4"})
    with pytest.raises(ConfigError, match="weight bit width 9 is not supported; accepted: 2..8, 16, 32"):
        QConfig(weight_bits=9)
    with pytest.raises(ConfigError, match="unknown quantization method"):
        QConfig(method="dorefa")
    with pytest.raises(ConfigError, match="unknown key"):
        QConfig(overrides={"features.0": {"bits": 4}})
    with pytest.raises(ConfigError, match="weight bit width 1 for 'features.0'"):
        QConfig(overrides={"features.0": {"weight_bits": 1}})


def test_bad_targets_and_unsupported_layers():
    model = _lenet()
    with pytest.raises(ConfigError, match="'features.9', which is not in the model; weight layers: features.0"):
        quantize(model, QConfig(overrides={"features.9": {"weight_bits": 4}}))
    with pytest.raises(ConfigError, match="per_channel for 'features.1' \\(ReLU\\), which has no output channels"):
        quantize(model, QConfig(overrides={"features.1": {"per_channel": True}}))
    with pytest.raises(ConfigError, match="not a Conv2d or Linear layer"):
        quantize(model, QConfig(overrides={"features.2": {"weight_bits": 4}}))
    with pytest.raises(ConfigError, match="8 entries; the layer has 16"):
        quantize(model, QConfig(overrides={"features.3": {"weight_bits": [4] * 7 + [8]}}))
    with pytest.raises(ConfigError, match="weight bit width 1 for 'features.3'"):
        quantize(model, QConfig.from_bits({"layers": {"features.3": {"weight_bits": 1, "act_bits": 4}}}))
    for layer in (nn.Conv1d(1, 2, 3), nn.LSTM(3, 3), nn.ConvTranspose2d(1, 2, 3)):
        with pytest.raises(UnsupportedLayerError, match=f"'body.1' \\({type(layer).__name__}\\)"):
            quantize(_wrapped(layer))
    with pytest.raises(ConfigError, match="already quantized"):
        quantize(quantize(model))
    with pytest.raises(ConfigError, match="example_input_shape"):
        quantize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), QConfig(fold_bn=True))
    with pytest.raises(BitsmithError):
        quantize(model, "w4a4")


def _wrapped(layer: nn.Module) -> nn.Module:
    model = nn.Module()
    model.body = nn.Sequential(nn.Linear(3, 3), layer)
    return model


def test_untraced_model_warns_and_still_converts():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.warns(UserWarning, match="example_input_shape"):
        qmodel = quantize(model, QConfig(weight_bits=4, act_bits=4, first_last_bits=None))
    layers = _quant_layers(qmodel)
    assert layers["2"].act_quant.signed is True  # no graph: signed, one bit of range lost
    traced = quantize(model, QConfig(weight_bits=4, act_bits=4), example_input_shape=(1, 1, 3))
    assert _quant_layers(traced)["2"].act_quant.signed is False


def _randomise_bn(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(7)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.2)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "vgg_small"])
def test_fold_batchnorm_matches_the_float_model_in_eval(name):
    torch.manual_seed(0)
    model = bitsmith.create_model(name, in_channels=1, image_size=16).eval()
    _randomise_bn(model)
    folded = fold_batchnorm(model, (1, 16, 16)).eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is kept
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5, rtol=1e-4)


def test_quantize_with_fold_bn():
    torch.manual_seed(0)
    model = bitsmith.create_model("resnet20", in_channels=1, image_size=16).eval()
    _randomise_bn(model)
    qmodel = quantize(model, QConfig(weight_bits=8, act_bits=8, fold_bn=True))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in qmodel.modules())
    assert all(m.bias is not None for m in _quant_layers(qmodel).values())
    x = torch.rand(4, 1, 16, 16)
    calibrate(qmodel, [torch.rand(8, 1, 16, 16)])
    with torch.no_grad():
        ref = model(x)
        assert (qmodel(x) - ref).abs().max() < 0.1 * ref.abs().max()  # W8A8 stays close to float


def test_tracing_a_quantized_model_leaves_its_quantizers_uninitialised():
    from bitsmith.graph import trace

    qmodel = quantize(_lenet(), QConfig(weight_bits=4, act_bits=4))
    graph = trace(qmodel, (1, 16, 16))  # runs the model once on zeros
    layers = _quant_layers(qmodel)
    assert not any(m.act_quant.is_initialized for m in layers.values())  # zeros carry no range
    assert graph.by_module("features.3").attrs["weight_bits"] == 4
    assert bits_assignment(qmodel).layers["features.3"].weight_bits == 4


class _TwoAdds(nn.Module):
    """A ReLU output read by a conv and by two residual adds, then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = x + self.a(x)
        z = x + self.b(y)
        return self.head(z.mean(dim=(2, 3)))


@pytest.mark.parametrize("act_bits", [8, 4])
def test_residual_bits_quantize_each_tensor_once(act_bits):
    """With residual_bits every add input gets a QuantAct, and one tensor has one quantizer: the ReLU output's
    QuantActs use conv a's input quantizer when it has the residual width, else share one of their own; the
    model still matches the same conversion reloaded from its state dict."""
    torch.manual_seed(0)
    config = QConfig(weight_bits=8, act_bits=act_bits, first_last_bits=None, residual_bits=8)
    q = quantize(_TwoAdds(), config, example_input_shape=(1, 8, 8))
    on_relu = [q.residual_quant_0.quant, q.residual_quant_2.quant]
    assert on_relu[0] is on_relu[1]
    assert (on_relu[0] is q.a.act_quant) == (act_bits == 8)
    assert q.residual_quant_1.quant is not on_relu[0] and q.residual_quant_3.quant is not q.residual_quant_1.quant
    x = torch.rand(16, 1, 8, 8)
    calibrate(q, [x])
    again = quantize(_TwoAdds(), config, example_input_shape=(1, 8, 8))
    again.load_state_dict(q.state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval()(x), q.eval()(x))
