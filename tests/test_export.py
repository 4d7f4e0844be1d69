"""Deployment (issue 12): ONNX export in QDQ form with onnxruntime parity, the packed format, the export command."""

from __future__ import annotations

import copy
import math
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bitsmith
from bitsmith import export, runs
from bitsmith.engine import TrainConfig, load_split
from bitsmith.errors import ConfigError, MissingDependencyError, ParityError, UnsupportedLayerError
from bitsmith.export.packed import PACKED_BITS
from bitsmith.quant import QConfig, QuantAct, calibrate, quantize

SHAPE = (1, 16, 16)


pytestmark = pytest.mark.usefixtures("one_thread")


def _onnx():
    return pytest.importorskip("onnx"), pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def digits():
    """(train inputs, test inputs, test labels) of digits at 16x16."""
    cfg = TrainConfig(model="lenet5", dataset="digits")
    x_train, _ = load_split(cfg, "train").tensors()
    x_test, y_test = load_split(cfg, "test").tensors()
    return x_train, x_test, y_test


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    """A ResNet-20 trained 5 epochs on digits (about 95 % test accuracy)."""
    out = tmp_path_factory.mktemp("r20") / "run"
    torch.set_num_threads(1)
    bitsmith.train(TrainConfig(model="resnet20", dataset="digits", epochs=5, lr=3e-3, num_threads=1), out, quiet=True)
    return out


def _ptq(model: nn.Module, x_train: torch.Tensor, **qconfig) -> nn.Module:
    qmodel = quantize(model, QConfig(**qconfig), example_input_shape=SHAPE)
    calibrate(qmodel, [x_train[i:i + 64] for i in range(0, 512, 64)], num_batches=8, observer="mse")
    return qmodel.eval()


def _initializers(path) -> dict[str, np.ndarray]:
    onnx, _ = _onnx()
    proto = onnx.load(str(path))
    return {init.name: onnx.numpy_helper.to_array(init) for init in proto.graph.initializer}


def _assert_parity(report) -> None:
    assert report.samples == 360 and report.passed
    assert report.agreement >= 0.999
    assert abs(report.onnx_accuracy - report.torch_accuracy) <= 0.001


# ------------------------------------------------------------------------------------------ ONNX: parity
@pytest.mark.parametrize("bits", [8, 4])
def test_lenet_onnx_matches_pytorch_with_integer_weights(float_run, digits, tmp_path, bits):
    onnx, _ = _onnx()
    x_train, x_test, y_test = digits
    qmodel = _ptq(runs.load_model(float_run), x_train, weight_bits=bits, act_bits=bits)
    path = tmp_path / "lenet.onnx"
    result = export.to_onnx(qmodel, path, SHAPE, data=(x_test, y_test))
    _assert_parity(result.parity)
    assert result.parity.torch_accuracy > 0.85
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == export.DEFAULT_OPSET
    inits = _initializers(path)
    for name, module in qmodel.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            codes = inits[f"{name}.weight_quantized"]
            width = module.weight_bits
            assert codes.shape == tuple(module.weight.shape)
            if width == 8:  # stored shifted into uint8 (zero point 128) so no CPU kernel saturates
                assert codes.dtype == np.uint8 and (inits[f"{name}.weight_zero_point"] == 128).all()
                codes = codes.astype(np.int16) - 128
            else:
                assert codes.dtype == np.int8 and (inits[f"{name}.weight_zero_point"] == 0).all()
            assert -(2 ** (width - 1)) <= codes.min() and codes.max() <= 2 ** (width - 1) - 1
            assert inits[f"{name}.weight_scale"].shape == (module.out_features if isinstance(module, nn.Linear)
                                                            else module.out_channels,)
            assert inits[f"{name}.bias_quantized"].dtype == np.int32
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm", "MaxPool"} <= ops
    clipped = "features.3.input.clip_max" in inits
    assert clipped == (bits < 8)  # a 4-bit unsigned input is clipped to codes [0, 15] before QuantizeLinear
    if clipped:
        scale = inits["features.3.input.scale"]
        assert inits["features.3.input.clip_max"] == np.float32(15) * scale


@pytest.mark.parametrize(("bits", "fold_in_model"), [(8, True), (4, True), (8, False)])
def test_resnet20_onnx_matches_pytorch(resnet_run, digits, tmp_path, bits, fold_in_model):
    onnx, _ = _onnx()
    x_train, x_test, y_test = digits
    qmodel = _ptq(runs.load_model(resnet_run), x_train, weight_bits=bits, act_bits=bits, fold_bn=fold_in_model)
    result = export.to_onnx(qmodel, tmp_path / "r20.onnx", SHAPE, data=(x_test, y_test))
    _assert_parity(result.parity)
    assert len(result.folded_bn) == (0 if fold_in_model else 21) and not result.unfolded_bn
    proto = onnx.load(str(tmp_path / "r20.onnx"))
    assert "BatchNormalization" not in {node.op_type for node in proto.graph.node}


def test_keep_bn_reproduces_the_unfolded_model(resnet_run, digits, tmp_path):
    onnx, _ = _onnx()
    x_train, x_test, y_test = digits
    qmodel = _ptq(runs.load_model(resnet_run), x_train, weight_bits=4, act_bits=4)
    result = export.to_onnx(qmodel, tmp_path / "keep.onnx", SHAPE, fold_bn=False, data=(x_test, y_test))
    _assert_parity(result.parity)
    assert len(result.unfolded_bn) == 21 and not result.folded_bn


def test_random_inputs_when_no_data_is_given(float_run, digits, tmp_path):
    _onnx()
    qmodel = _ptq(runs.load_model(float_run), digits[0], weight_bits=8, act_bits=8)
    result = export.to_onnx(qmodel, tmp_path / "m.onnx", SHAPE)
    assert result.parity.samples == 256 and result.parity.agreement >= 0.999 and result.parity.torch_accuracy is None


# ------------------------------------------------------------------------------------------ ONNX: layers
def _tiny_model() -> nn.Module:
    """Every kind the exporter handles that LeNet-5 and ResNet-20 lack: BN after a per-tensor conv, ReLU6, grouped
    and dilated conv, depthwise conv with pruned filters, concat, avg-pool without padded values, non-global
    adaptive pooling, view, functional relu, mean, dropout."""
    torch.manual_seed(0)

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6())
            self.grouped = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2, bias=False)
            self.depthwise = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
            self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
            self.mark = nn.Identity()
            self.adaptive = nn.AdaptiveAvgPool2d(2)
            self.drop = nn.Dropout(0.5)
            self.fc = nn.Linear(16 * 4 + 8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            y = self.mark(torch.cat([self.grouped(x), x], dim=1))
            z = self.adaptive(self.pool(y)).view(y.shape[0], -1)
            m = torch.relu(self.depthwise(x)).mean(dim=(2, 3))
            return self.fc(self.drop(torch.cat([z, m], dim=1)))

    model = Tiny()
    model.train()
    with torch.no_grad():
        model(torch.rand(32, *SHAPE))
    return model.eval()


@pytest.mark.parametrize("opset", [13, 18])
def test_every_supported_kind_exports_exactly(digits, opset):
    onnx, _ = _onnx()
    x = digits[0][:64]
    pruned = {"depthwise": {"keep": [1, 0, 1, 1, 0, 1, 1, 1]}}
    qmodel = quantize(_tiny_model(), QConfig(weight_bits=4, act_bits=4, per_channel=False, overrides=pruned),
                      example_input_shape=SHAPE)
    qmodel.mark = QuantAct(4, signed=None)  # a stand-alone activation quantizer on the concatenation
    calibrate(qmodel, [x], num_batches=1)
    qmodel.eval()
    proto, folded, kept = export.build_onnx(qmodel, SHAPE, opset=opset, fold_bn=False)
    assert onnx.checker.check_model(proto, full_check=True) is None
    ops = {node.op_type for node in proto.graph.node}
    assert {"Concat", "Reshape", "ReduceMean", "AveragePool", "Clip", "BatchNormalization"} <= ops
    assert not folded and kept == ["stem.1"]
    errors = export.layer_errors(qmodel, proto, x)
    assert [name for name, _, _ in errors] == ["stem.0", "stem.1", "stem.2", "grouped", "mark", "pool", "adaptive",
                                               "depthwise", "fc"]
    assert max(err for _, _, err in errors) < 1e-6  # BatchNorm kept as a float op: the model's own arithmetic
    report = export.check_parity(qmodel, proto, x)
    assert report.agreement == 1.0 and report.max_abs_error < 1e-4
    proto, folded, _ = export.build_onnx(qmodel, SHAPE, opset=opset)
    assert folded == ["stem.1"]  # a per-tensor weight scale becomes per channel with the BN factor in it
    assert max(err for _, _, err in export.layer_errors(qmodel, proto, x)) < 0.02  # int32 bias rounding only


@pytest.mark.parametrize("name", ["mobilenetv2", "cellnet"])
def test_zoo_models_export(name):
    _onnx()
    torch.manual_seed(0)
    model = bitsmith.create_model(name, num_classes=10, in_channels=1, image_size=16,
                                  **({"width": 0.5} if name == "mobilenetv2" else {}))
    x = torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(0))
    model.train()
    with torch.no_grad():
        model(x)
    qmodel = quantize(model.eval(), QConfig(weight_bits=8, act_bits=8, fold_bn=True))
    calibrate(qmodel, [x], num_batches=1)
    proto, _, _ = export.build_onnx(qmodel.eval())
    errors = export.layer_errors(qmodel, proto, x)
    assert max(err for _, _, err in errors) < 0.02  # a random net, 8 bits: a few codes flip at rounding boundaries


def test_per_channel_mixed_widths_export_in_their_own_ranges(float_run, digits, tmp_path):
    _onnx()
    x_train, x_test, y_test = digits
    widths = [2, 3, 4, 8] * 4
    qmodel = _ptq(runs.load_model(float_run), x_train, overrides={"features.3": {"weight_bits": widths}})
    result = export.to_onnx(qmodel, tmp_path / "mixed.onnx", SHAPE, data=(x_test, y_test))
    _assert_parity(result.parity)
    inits = _initializers(tmp_path / "mixed.onnx")
    zero = inits["features.3.weight_zero_point"].astype(np.int16).reshape(16, 1)
    codes = inits["features.3.weight_quantized"].reshape(16, -1).astype(np.int16) - zero
    for channel, width in enumerate(widths):
        assert -(2 ** (width - 1)) <= codes[channel].min() and codes[channel].max() <= 2 ** (width - 1) - 1
    assert codes[0].min() >= -2 and codes[0].max() <= 1


def test_parity_names_the_first_diverging_layer(float_run, digits):
    onnx, _ = _onnx()
    x_train, x_test, y_test = digits
    qmodel = _ptq(runs.load_model(float_run), x_train, weight_bits=8, act_bits=8)
    proto, _, _ = export.build_onnx(qmodel, SHAPE)
    corrupted = copy.deepcopy(proto)
    for init in corrupted.graph.initializer:
        if init.name == "features.3.weight_quantized":
            codes = onnx.numpy_helper.to_array(init)
            init.CopyFrom(onnx.numpy_helper.from_array(np.flip(codes, axis=0).copy(), init.name))
    with pytest.raises(ParityError, match=r"first diverging layer: 'features\.3' \(conv\)"):
        export.check_parity(qmodel, corrupted, (x_test, y_test))
    changed = copy.deepcopy(qmodel)
    with torch.no_grad():
        changed.classifier[2].weight.mul_(-1)
    with pytest.raises(ParityError, match=r"first diverging layer: 'classifier\.2' \(linear\)"):
        export.check_parity(changed, proto, (x_test, y_test))
    report = export.check_parity(changed, proto, (x_test, y_test), raise_on_mismatch=False)
    assert report.agreement < 0.5 and report.ties == 0 and not report.passed


def test_numerical_ties_are_allowed_for():
    one_tie = export.ParityReport(samples=360, agreement=359 / 360, torch_accuracy=0.9, onnx_accuracy=0.9 - 1 / 360,
                                  max_abs_error=0.3, ties=1)
    assert one_tie.passed and "1 of the disagreements numerical ties" in one_tie.summary()
    assert not export.ParityReport(samples=360, agreement=359 / 360, torch_accuracy=0.9, onnx_accuracy=0.9,
                                   max_abs_error=0.3).passed
    assert not export.ParityReport(samples=360, agreement=1.0, torch_accuracy=0.9, onnx_accuracy=0.9 - 1 / 360,
                                   max_abs_error=0.3).passed


# ------------------------------------------------------------------------------------------ ONNX: bad input
def test_onnx_refuses_unsupported_layers_wide_codes_and_float_models(tmp_path):
    _onnx()
    x = torch.rand(16, *SHAPE)
    odd = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
    qmodel = quantize(odd, QConfig(), example_input_shape=SHAPE)
    calibrate(qmodel, [x], num_batches=1)
    with pytest.raises(UnsupportedLayerError, match=r"node '_1' \(module '1', Sigmoid\) of kind 'act'"):
        export.to_onnx(qmodel, tmp_path / "odd.onnx", SHAPE)
    lenet = bitsmith.create_model("lenet5", num_classes=10, in_channels=1, image_size=16)
    for qconfig, what in ((QConfig(weight_bits=16, act_bits=8), "weight of 'features.3'"),
                          (QConfig(weight_bits=8, act_bits=16), "input activation of 'features.3'")):
        wide = quantize(lenet, qconfig)
        calibrate(wide, [x], num_batches=1)
        with pytest.raises(ConfigError, match=f"{what} .*int8/uint8 cannot hold.*2..8"):
            export.to_onnx(wide, tmp_path / "wide.onnx")
    with pytest.raises(ConfigError, match="no quantized conv/linear layer; quantize it first"):
        export.to_onnx(lenet, tmp_path / "float.onnx")
    with pytest.raises(ConfigError, match="opset 11 is not supported"):
        export.build_onnx(qmodel, opset=11)
    assert not list(tmp_path.iterdir())


def test_missing_onnx_gives_a_one_line_hint(monkeypatch, float_run, tmp_path, cli):
    monkeypatch.setitem(sys.modules, "onnx", None)
    lenet = quantize(bitsmith.create_model("lenet5", num_classes=10, in_channels=1, image_size=16), QConfig())
    with pytest.raises(MissingDependencyError, match=r"pip install bitsmith\[export\]"):
        export.to_onnx(lenet, tmp_path / "m.onnx")
    qrun = tmp_path / "q"
    assert cli("quantize", "--from", str(float_run), "--wbits", "8", "--abits", "8", "--ptq", "--out",
               str(qrun))[0] == 0
    code, _, err = cli("export", str(qrun), "--out", str(tmp_path / "m.onnx"))
    assert code == 2 and err.count("\n") == 1 and "pip install bitsmith[export]" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ packed format
@settings(max_examples=60, deadline=None)
@given(bits=st.sampled_from(PACKED_BITS), count=st.integers(0, 200), seed=st.integers(0, 2**31 - 1))
def test_bit_packing_round_trips(bits, count, seed):
    values = torch.randint(0, 1 << bits, (count,), generator=torch.Generator().manual_seed(seed))
    packed = export.pack_bits(values, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(count * bits / 8)
    assert torch.equal(export.unpack_bits(packed, bits, count), values)


def test_bit_packing_refuses_values_out_of_range():
    with pytest.raises(ConfigError, match=r"codes must lie in \[0, 15\]"):
        export.pack_bits(torch.tensor([0, 16]), 4)
    with pytest.raises(ConfigError, match="cannot pack 32-bit codes"):
        export.pack_bits(torch.tensor([0]), 32)


def test_packed_mixed_widths_restore_bit_for_bit(float_run, digits, tmp_path):
    x_train, x_test, _ = digits
    overrides = {"features.3": {"weight_bits": [2, 3, 4, 8] * 4},
                 "classifier.0": {"weight_bits": [2, 3, 4, 8, 16] * 24}}
    qmodel = _ptq(runs.load_model(float_run), x_train, weight_bits=4, act_bits=4, overrides=overrides)
    summary = export.save_packed(qmodel, tmp_path / "mixed.safetensors")
    fresh = quantize(bitsmith.create_model("lenet5", num_classes=10, in_channels=1, image_size=16),
                     QConfig(weight_bits=4, act_bits=4, overrides=overrides))
    restored = export.load_packed(summary.path, model=fresh)
    with torch.no_grad():
        assert torch.equal(restored(x_test), qmodel(x_test))
    tensors, meta = export.read_packed(summary.path)
    assert set(meta["layers"]["features.3"]["groups"]) == {"2", "3", "4", "8"}
    assert tensors["features.3.weight.codes3"].numel() == math.ceil(4 * 150 * 3 / 8)
    assert tensors["classifier.0.weight.codes16"].numel() == 24 * 256 * 2
    with pytest.raises(bitsmith.errors.CheckpointError, match="no zoo model and run config"):
        export.load_packed(summary.path)


def test_packed_w4_is_an_eighth_of_fp32_plus_scales(float_run, digits, tmp_path):
    x_train, x_test, _ = digits
    qmodel = _ptq(runs.load_model(float_run), x_train, weight_bits=4, act_bits=4, first_last_bits=None)
    summary = export.save_packed(qmodel, tmp_path / "w4.safetensors")
    weights = sum(m.weight.numel() for m in qmodel.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert summary.fp32_bytes == 4 * sum(p.numel() for n, p in runs.load_model(float_run).named_parameters())
    assert summary.code_bytes == sum(math.ceil(m.weight.numel() * 4 / 8) for m in qmodel.modules()
                                     if isinstance(m, (nn.Conv2d, nn.Linear))) == weights // 2
    tensors, _ = export.read_packed(summary.path)
    scales_and_biases = sum(t.numel() * t.element_size() for k, t in tensors.items() if ".codes" not in k)
    header = summary.size_bytes - summary.code_bytes - scales_and_biases
    assert header < 6000  # safetensors index of ~40 small tensors plus the JSON metadata, measured ~5.5 kB
    assert summary.size_bytes <= summary.fp32_bytes / 8 + scales_and_biases + header
    assert summary.ratio < 0.18  # measured 0.176 on LeNet-5 (45 k parameters): 1/8 plus 2.9 kB scales + header
    with torch.no_grad():
        restored = export.load_packed(summary.path, model=quantize(runs.load_model(float_run), QConfig(
            weight_bits=4, act_bits=4, first_last_bits=None)))
        assert torch.equal(restored(x_test), qmodel(x_test))


def test_packed_refuses_float_models_and_other_files(float_run, tmp_path):
    with pytest.raises(ConfigError, match="nothing to pack; quantize it first"):
        export.save_packed(runs.load_model(float_run), tmp_path / "f.safetensors")
    assert not (tmp_path / "f.safetensors").exists()
    with pytest.raises(bitsmith.errors.CheckpointError, match="not a bitsmith packed model"):
        export.load_packed(float_run / "checkpoint.safetensors")


# ------------------------------------------------------------------------------------------ command line
def test_export_command(float_run, tmp_path, cli):
    _onnx()
    qrun = tmp_path / "w4"
    code, _, err = cli("quantize", "--from", str(float_run), "--wbits", "4", "--abits", "4", "--ptq",
                       "--threads", "1", "--out", str(qrun))
    assert code == 0, err
    code, out, err = cli("export", str(qrun), "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--threads", "1")
    assert code == 0, err
    assert "opset 13" in out
    assert "parity with PyTorch (onnxruntime, test split): argmax agreement 100.00 % on 360 inputs" in out
    code, out, err = cli("export", str(qrun), "--format", "packed", "--out", str(tmp_path / "m.safetensors"))
    assert code == 0, err
    assert "FP32 177.7 kB; ratio 0.1" in out
    restored = export.load_packed(tmp_path / "m.safetensors")  # rebuilt from the run config in the file
    x = torch.rand(8, *SHAPE)
    with torch.no_grad():
        assert torch.equal(restored(x), runs.load_model(qrun)(x))
    code, out, err = cli("export", str(qrun), "--out", str(tmp_path / "n.onnx"), "--no-check", "--opset", "17")
    assert code == 0 and "opset 17" in out and "parity" not in out


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "onnx"], "holds a float model; quantize it first: bitsmith quantize --from"),
    (["--format", "packed"], "holds a float model; quantize it first: bitsmith quantize --from"),
    (["--format", "zip"], "--format 'zip' is not known; accepted: onnx, packed"),
    (["--format", "packed", "--opset", "13"], "--opset and --keep-bn apply to --format onnx only"),
])
def test_export_command_bad_input(float_run, tmp_path, cli, args, message):
    code, out, err = cli("export", str(float_run), *args, "--out", str(tmp_path / "x"))
    assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_export_command_refuses_16_bit_onnx(float_run, tmp_path, cli):
    _onnx()
    qrun = tmp_path / "w16"
    assert cli("quantize", "--from", str(float_run), "--wbits", "16", "--abits", "8", "--ptq", "--out",
               str(qrun))[0] == 0
    code, _, err = cli("export", str(qrun), "--out", str(tmp_path / "x.onnx"))
    assert code == 2 and "int8/uint8 cannot hold" in err and err.count("\n") == 1
    code, out, err = cli("export", str(qrun), "--format", "packed", "--out", str(tmp_path / "x.safetensors"))
    assert code == 0, err


def test_quantized_residual_sums_let_onnxruntime_run_the_whole_network_in_integer(tmp_path) -> None:
    """With residual_bits every input of each residual add is quantized (two per ResNet-20 block), each tensor by
    one quantizer (a block's first conv and its projection shortcut share theirs, an identity shortcut uses the
    first conv's), the run rebuilds from its config, the file has one QuantizeLinear per quantized tensor with
    scalar scales, and onnxruntime runs every conv as QLinearConv and the residual adds (their ReLU absorbed) as
    QLinearAdd: only the last add, which feeds the float average pool, stays float."""
    onnx, ort = _onnx()

    from bitsmith import quantize, zoo
    from bitsmith.graph import trace
    from bitsmith.quant import QConfig, QuantAct, calibrate

    torch.manual_seed(0)
    model = zoo.create_model("resnet20", in_channels=1, image_size=16).eval()
    qmodel = quantize(model, QConfig(weight_bits=8, act_bits=8, fold_bn=True, residual_bits=8))
    graph = trace(qmodel, (1, 16, 16))
    adds = [n for n in graph.nodes if n.kind == "add"]
    assert len(adds) == 9
    for add in adds:
        assert all(graph.nodes[i].kind == "quant_act" for i in add.inputs)
    assert sum(isinstance(m, QuantAct) for m in qmodel.modules()) == 18
    layer = qmodel.get_submodule
    assert layer("layer2.0.shortcut.0").act_quant is layer("layer2.0.conv1").act_quant
    assert qmodel.residual_quant_1.quant is layer("layer1.0.conv1").act_quant  # the first add's identity input
    assert qmodel.residual_quant_0.quant is not layer("layer1.0.conv2").act_quant  # the conv's signed output
    x = torch.rand(256, 1, 16, 16)
    calibrate(qmodel, [x[i:i + 64] for i in range(0, 256, 64)])
    again = quantize(model, QConfig(weight_bits=8, act_bits=8, fold_bn=True, residual_bits=8))
    again.load_state_dict(qmodel.state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval()(x[:8]), qmodel.eval()(x[:8]))
    from bitsmith.export import to_onnx

    to_onnx(qmodel, tmp_path / "r.onnx", (1, 16, 16), data=x[:64], threads=1)
    proto = onnx.load(str(tmp_path / "r.onnx"))
    quantized = [n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantized) == len(set(quantized))
    inits = _initializers(tmp_path / "r.onnx")
    assert all(inits[n.input[1]].shape == () for n in proto.graph.node if n.op_type == "QuantizeLinear")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(tmp_path / "r.onnx"), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("QLinearConv") == 21 and "Conv" not in ops and "FusedConv" not in ops
    assert ops.count("QLinearAdd") == 8 and ops.count("Add") == 1 and ops.count("Relu") == 1


def test_a_checkpoint_with_different_values_for_a_shared_quantizer_is_refused(resnet_run, tmp_path) -> None:
    """A W8A8 run with 8-bit residual sums reloads exactly; a checkpoint whose entries for one shared quantizer
    disagree (as runs made before quantizers were shared have) is refused in one line naming both entries, by
    loading and by resuming."""
    from bitsmith.engine.checkpoint import load_checkpoint, save_checkpoint
    from bitsmith.errors import CheckpointError

    out = tmp_path / "res8"
    runs.quantize_run(resnet_run, QConfig(weight_bits=8, act_bits=8, fold_bn=True, residual_bits=8), out, epochs=1,
                      calib_batches=2, num_threads=1, quiet=True)
    model = runs.load_model(out)
    assert model.residual_quant_1.quant is model.get_submodule("layer1.0.conv1").act_quant
    path = out / "checkpoint.safetensors"
    state = load_checkpoint(path)
    shared = [k for k in state["model"] if k.startswith("residual_quant_1.quant.")]
    assert shared
    state["model"][shared[0]] = state["model"][shared[0]] + 1
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError) as caught:
        runs.load_model(out)
    message = str(caught.value)
    assert "\n" not in message and shared[0] in message and "layer1.0.conv1.act_quant." in message
    with pytest.raises(CheckpointError) as caught:
        runs.resume_run(out, quiet=True)
    assert str(caught.value) == message
