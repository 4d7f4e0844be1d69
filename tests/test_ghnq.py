"""GHN-Q: bit-conditioned encodings, quantized prediction (grid, widths, calibration, integer-exact forward),
quantization-aware GHN training through the Trainer, the reduced search space, and `bitsmith predict --wbits`."""

from __future__ import annotations

import json

import pytest
import torch

from bitsmith import runs, zoo
from bitsmith.engine import TrainConfig, evaluate_model, load_split
from bitsmith.errors import BitsmithError, ConfigError
from bitsmith.methods.ghn import (
    GHNConfig,
    GHNTrainConfig,
    GraphHyperNetwork,
    Widths,
    encode,
    load_ghn,
    parse_widths,
    predict_quantized,
    save_ghn,
    shipped,
    train_ghn,
)
from bitsmith.methods.ghn.encoding import BITS_CODES, FEATURES
from bitsmith.methods.ghn.quantized import layer_widths, sample_widths
from bitsmith.methods.ghn.training import ArchitectureSource
from bitsmith.quant import QuantConv2d, QuantLinear, integer_forward
from bitsmith.zoo import space

SHAPE = (1, 16, 16)
BITS_COLUMN, ACT_COLUMN = list(FEATURES).index("bits"), list(FEATURES).index("act_bits")


def _ghn(bit_conditioned: bool = True) -> GraphHyperNetwork:
    torch.manual_seed(0)
    return GraphHyperNetwork(GHNConfig(hidden=16, decoder_hidden=32, rank=8, bit_conditioned=bit_conditioned)).eval()


@pytest.fixture(scope="module")
def digits():
    base = TrainConfig(dataset="digits")
    return load_split(base, "train"), load_split(base, "test")


def test_with_bits_marks_only_weight_layers() -> None:
    model = zoo.create_model("resnet20", in_channels=1, image_size=16)
    enc = encode(model, SHAPE)
    assert int(enc.features[:, BITS_COLUMN].max()) == 0 and int(enc.features[:, ACT_COLUMN].max()) == 0
    first = next(iter(enc.layers))
    marked = enc.with_bits({**dict.fromkeys(enc.layers, 4), first: 8}, 2)
    layer_nodes = sorted(i for nodes in enc.layers.values() for i in nodes)
    assert len(layer_nodes) == sum(1 for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    bits = marked.features[:, BITS_COLUMN]
    assert int(bits[enc.layers[first][0]]) == BITS_CODES[8]
    assert {int(bits[i]) for i in layer_nodes} == {BITS_CODES[4], BITS_CODES[8]}
    others = [i for i in range(enc.num_nodes) if i not in layer_nodes]
    assert int(marked.features[others][:, [BITS_COLUMN, ACT_COLUMN]].abs().sum()) == 0
    assert {int(marked.features[i, ACT_COLUMN]) for i in layer_nodes} == {BITS_CODES[2]}
    assert torch.equal(enc.features[:, BITS_COLUMN], torch.zeros(enc.num_nodes, dtype=torch.long))  # a copy
    with pytest.raises(BitsmithError, match="bit widths 32, 16, 8"):
        enc.with_bits(1)


def test_bit_conditioning_changes_predictions_and_a_float_ghn_ignores_widths() -> None:
    model = zoo.create_model("lenet5", in_channels=1, image_size=16)
    enc = encode(model, SHAPE)
    ghn = _ghn(True)
    with torch.no_grad():
        w4, w2 = ghn([enc.with_bits(4, 4)])[0], ghn([enc.with_bits(2, 2)])[0]
    assert any(not torch.allclose(w4[k], w2[k]) for k in w4)
    flat = _ghn(False)
    data = (torch.rand(64, *SHAPE), torch.randint(0, 10, (64,)))
    q4 = predict_quantized(model, flat, "W4A4", data, calib_batches=1, bn_batches=1)
    q2 = predict_quantized(model, flat, "W2A2", data, calib_batches=1, bn_batches=1)
    # a float GHN is not told the widths: the same float prediction under both quantizations
    assert torch.equal(q4.get_submodule("features.3").weight, q2.get_submodule("features.3").weight)


@pytest.mark.parametrize(("label", "inner"), [("W4A4", 4), ("W2A2", 2), ("W8A8", 8)])
def test_quantized_prediction_lands_on_the_grid_and_matches_the_integer_forward(label, inner, digits) -> None:
    train_ds, test_ds = digits
    model = space.build_network(space.split("test", 1)[0], 10, 1, 16)
    qmodel = predict_quantized(model, _ghn(), label, train_ds, calib_batches=2, bn_batches=2)
    layers = [(n, m) for n, m in qmodel.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    assert layers and isinstance(layers[-1][1], QuantLinear)
    weights, acts = layer_widths(qmodel)
    assert weights[layers[0][0]] == acts[layers[0][0]] == 8 and weights[layers[-1][0]] == 8  # first/last policy
    assert {weights[n] for n, _ in layers[1:-1]} == {inner} and {acts[n] for n, _ in layers[1:-1]} == {inner}
    for _, layer in layers:
        quant = layer.weight_quant
        codes = layer.quantized_weight().detach() / quant.scale_tensor().detach().reshape(-1, *[1] * (
            layer.weight.dim() - 1))
        assert torch.allclose(codes, codes.round(), atol=1e-3)
        assert int(codes.round().abs().max()) <= 2 ** (quant.bits - 1)
        assert len(torch.unique(codes.round())) <= 2 ** quant.bits
        assert layer.act_quant.is_initialized
    x = test_ds.tensors()[0][:64]
    with torch.no_grad():  # float32 agrees up to rare rounding ties; float64 removes them: exact
        assert (integer_forward(qmodel, x).argmax(1) == qmodel(x).argmax(1)).float().mean() > 0.95
        qmodel.double()
        ref, exact = qmodel(x.double()), integer_forward(qmodel, x.double())
    assert ((exact - ref).abs().max() / ref.abs().max()).item() < 1e-12


def test_bit_conditioned_ghn_file_round_trips(tmp_path) -> None:
    ghn = _ghn(True)
    save_ghn(tmp_path / "q.safetensors", ghn, {"dataset": "digits"})
    back = load_ghn(tmp_path / "q.safetensors")
    assert back.config.bit_conditioned
    enc = encode(zoo.create_model("lenet5", in_channels=1, image_size=16), SHAPE).with_bits(4, 4)
    with torch.no_grad():
        a, b = ghn([enc])[0], back([enc])[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_widths_are_drawn_from_the_set_and_keep_first_and_last() -> None:
    torch.manual_seed(0)
    layers = [f"l{i}" for i in range(6)]
    drawn = {sample_widths((0, 0), [32, 8, 4, 2], False, layers).label for _ in range(200)}
    assert drawn == {"FP", "W8A8", "W4A4", "W2A2"}
    per_layer = sample_widths((0, 0), [4, 2], True, layers)
    assert set(per_layer.per_layer) == set(layers[1:-1]) and set(per_layer.per_layer.values()) <= {4, 2}
    assert sample_widths((8, 8), [32], False, layers) == Widths(8, 8)
    assert parse_widths("fp") == Widths(32, 32) and parse_widths("W4A8") == Widths(4, 8)
    with pytest.raises(ConfigError, match="FP or WnAm"):
        parse_widths("w4")


@pytest.mark.parametrize(("fields", "message"), [
    ({"quant": "int4"}, "accepted: none, mixed, wNaM"),
    ({"quant": "w9a9"}, "weight bit width 9"),
    ({"bits": [8, 1]}, "weight bit width 1"),
    ({"bits": []}, "non-empty list"),
    ({"space": "nas"}, "accepted: darts, ghnq"),
])
def test_bad_ghnq_settings_are_refused(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        GHNTrainConfig(**fields)


def test_reduced_space_is_cnn_only_and_held_out_splits_stay_disjoint() -> None:
    train = [space.train_architecture(i, "ghnq") for i in range(40)]
    assert all(2 <= len(spec.cells) <= 6 for spec in train)
    ops = {op for spec in train for cell in spec.cells for node in cell.nodes for _, op in node}
    assert "none" not in ops and {"conv3x3", "sep3x3", "dil3x3", "skip"} <= ops
    keys = {spec.key() for spec in train}
    held = {spec.key() for name in ("val", "test") for spec in space.split(name, 20, "ghnq")}
    assert not keys & held
    assert space.train_architecture(3) != space.train_architecture(3, "ghnq")


@pytest.fixture(scope="module")
def qat_ghn(tmp_path_factory, train_ghn_briefly):
    """A small bit-conditioned GHN trained briefly with widths drawn from {8, 4, 2} (two training architectures)."""
    return train_ghn_briefly(tmp_path_factory.mktemp("ghnq") / "run", batch_size=64, meta_batch=2, pool=2,
                             eval_archs=1, eval_every=4, bn_batches=4, quant="mixed", bits=[8, 4, 2])


def test_quantization_aware_training_learns_at_every_width(qat_ghn, digits) -> None:
    ghn, metrics, out = qat_ghn
    epochs = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] - 0.2
    assert ghn.config.bit_conditioned and load_ghn(out).config.bit_conditioned
    for label in ("", "_w8a8", "_w4a4", "_w2a2"):
        assert f"val_acc{label}" in metrics and metrics[f"val_acc{label}_worst"] <= metrics[f"val_acc{label}"]
    seen = ArchitectureSource(ghn.config, pool=2).get(0).model  # a training architecture, on held-out images
    scores = {label: evaluate_model(predict_quantized(seen, ghn, label, digits[0], calib_batches=2, bn_batches=4),
                                    digits[1])["acc"] for label in ("W8A8", "W4A4")}
    print("seen-architecture quantized test accuracy", scores, epochs)
    assert min(scores.values()) > 0.3  # ten classes: chance is 0.1
    saved = json.loads((out / "config.json").read_text())
    assert saved["ghn_train"]["quant"] == "mixed" and saved["ghn"]["bit_conditioned"] is True


def test_init_from_starts_at_the_given_ghn_and_refuses_another_shape(qat_ghn, tmp_path) -> None:
    ghn, _, out = qat_ghn
    train = TrainConfig(model="cellnet", dataset="digits", val=True, epochs=1, max_steps=1, lr=1e-12,
                        batch_size=32, optimizer="adamw", num_threads=1)
    cont, _ = train_ghn(train, {"hidden": 32, "decoder_hidden": 64, "rank": 16},
                        GHNTrainConfig(meta_batch=1, pool=1, eval_archs=1, bn_batches=1, quant="w4a4",
                                       init_from=str(out)), tmp_path / "cont", quiet=True)
    assert not cont.config.bit_conditioned
    start = ghn.state_dict()
    assert all(torch.allclose(v, start[k], atol=1e-6) for k, v in cont.state_dict().items())
    with pytest.raises(ConfigError, match="only bit_conditioned may differ"):
        train_ghn(train, {"hidden": 16}, GHNTrainConfig(init_from=str(out)), tmp_path / "bad", quiet=True)


def test_cli_predict_quantized_writes_a_run_that_rebuilds_and_finetunes(qat_ghn, cli, tmp_path, digits) -> None:
    _, _, ghn_run = qat_ghn
    out = tmp_path / "q4"
    code, stdout, stderr = cli("predict", "--ghn", str(ghn_run), "--model", "resnet20", "--wbits", "4", "--abits",
                               "4", "--calib-batches", "2", "--bn-batches", "2", "--threads", "1", "--out", str(out))
    assert code == 0, stderr
    assert "W4A4 with predicted parameters" in stdout and "calibrated on 2 training batches" in stdout
    config = runs.read_config(out)
    assert config["model_transforms"][0]["config"]["weight_bits"] == 4
    rebuilt = runs.load_model(out)
    assert isinstance(rebuilt.get_submodule("layer1.0.conv1"), QuantConv2d)
    assert evaluate_model(rebuilt, digits[1])["acc"] == pytest.approx(config["predicted_test_acc"])
    code, stdout, _ = cli("cost", "--run", str(out), "--json")
    layers = json.loads(stdout)["layers"]
    assert code == 0 and {row["weight_bits"] for row in layers} == {4, 8}
    code, stdout, stderr = cli("predict", "--ghn", str(ghn_run), "--model", "lenet5", "--wbits", "4", "--abits", "4",
                               "--calib-batches", "1", "--bn-batches", "1", "--finetune-epochs", "1", "--threads",
                               "1", "--quiet", "--out", str(tmp_path / "ft"))
    assert code == 0, stderr
    assert "after 1 epoch(s) of QAT fine-tuning" in stdout
    report = (tmp_path / "ft" / "report.md").read_text()
    assert "## GHN prediction" in report and "After 1 epoch(s) of fine-tuning" in report
    assert (tmp_path / "ft" / "predicted_vs_trained.png").is_file() and (out / "report.html").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (("--wbits", "9"), "weight bit width 9 is not supported"),
    (("--calib-batches", "0"), "--calib-batches must be a positive integer"),
    (("--finetune-epochs", "-1"), "--finetune-epochs must be >= 0"),
])
def test_cli_predict_refuses_bad_widths_in_one_line(cli, tmp_path, args, message) -> None:
    code, _, stderr = cli("predict", *args, "--out", str(tmp_path / "x"))
    assert code == 2 and message in stderr and "Traceback" not in stderr


def test_cli_ghn_train_refuses_an_unknown_quant_mode(cli, tmp_path) -> None:
    code, _, stderr = cli("ghn", "train", "--quant", "int4", "--out", str(tmp_path / "x"))
    assert code == 2 and "accepted: none, mixed, wNaM" in stderr


def test_quantized_row_scores_every_source_width_and_qat_start(digits) -> None:
    from bitsmith.methods.ghn.evaluate import architectures, quantized_row

    train_ds, test_ds = digits
    (_, build), = architectures("test", 1, GHNConfig())
    base = TrainConfig(dataset="digits", batch_size=64, num_threads=1)
    row = quantized_row(build, {"a": _ghn(False), "c": _ghn(True)}, ["FP", "W4A4"], base, train_ds, test_ds,
                        sgd_steps=20, qat_steps=3, qat_widths=["W4A4"], calib_batches=1, bn_batches=2)
    sources = ("a", "c", "random", "sgd_20")
    assert set(row) == {f"{s}:{w}" for s in sources for w in ("FP", "W4A4")} | {f"{s}:W4A4:qat" for s in sources}
    assert all(0.0 <= v <= 1.0 for v in row.values())
    assert row["sgd_20:FP"] > row["random:FP"] + 0.2  # the SGD twin is a real reference


@pytest.mark.skipif("digits-q" not in shipped(), reason="no shipped bit-conditioned digits GHN in this checkout")
def test_shipped_bit_conditioned_digits_ghn_predicts_accurate_quantized_parameters(digits) -> None:
    ghn = load_ghn("digits-q")
    assert ghn.config.bit_conditioned and ghn.info["ghn_train"]["quant"] == "mixed"
    train_ds, test_ds = digits
    accs = {label: [] for label in ("W8A8", "W4A4")}
    for spec in space.split("test", 3):
        for label, scores in accs.items():
            model = predict_quantized(space.build_network(spec, 10, 1, 16), ghn, label, train_ds)
            scores.append(evaluate_model(model, test_ds)["acc"])
    assert min(accs["W8A8"]) > 0.8 and min(accs["W4A4"]) > 0.75


def test_a_predicted_quantized_model_exports_to_onnx_with_parity(digits, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from bitsmith.export import to_onnx

    train_ds, test_ds = digits
    qmodel = predict_quantized(space.build_network(space.split("test", 1)[0], 10, 1, 16), _ghn(), "W4A4", train_ds,
                               calib_batches=2, bn_batches=2)
    x, y = test_ds.tensors()
    result = to_onnx(qmodel, tmp_path / "m.onnx", SHAPE, fold_bn=False, data=(x[:128], y[:128]), threads=1)
    assert result.parity is not None and result.parity.agreement >= 0.999
