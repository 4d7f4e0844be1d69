"""PTQ: calibrate() on a LeNet-5 trained on real digits keeps its accuracy; MSE beats min/max at 4 bits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bitsmith
from bitsmith import data
from bitsmith.errors import ConfigError
from bitsmith.quant import MinMaxQuantizer, QConfig, calibrate, quantize


@pytest.fixture(scope="module")
def trained():
    """A float LeNet-5 trained for 6 epochs on the digits training split, and the test split."""
    x, y = data.get("digits", split="train").tensors()
    x_test, y_test = data.get("digits", split="test").tensors()
    assert x.shape == (1437, 1, 16, 16) and x_test.shape == (360, 1, 16, 16)
    torch.manual_seed(0)
    model = bitsmith.create_model("lenet5", num_classes=10, in_channels=1, image_size=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(0)
    for _ in range(6):
        for idx in torch.randperm(len(x), generator=order).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval(), (x, y), (x_test, y_test)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _loader(x: torch.Tensor, y: torch.Tensor, batch: int = 64):
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]


def test_ptq_w8a8_keeps_float_accuracy(trained):
    model, (x, y), (x_test, y_test) = trained
    float_acc = _accuracy(model, x_test, y_test)
    assert float_acc > 0.9
    for method in ("minmax", "lsq"):
        qmodel = quantize(model, QConfig(weight_bits=8, act_bits=8, method=method))
        calibrate(qmodel, _loader(x, y), num_batches=8)
        assert abs(_accuracy(qmodel.eval(), x_test, y_test) - float_acc) <= 0.01, method


def test_mse_observer_beats_minmax_on_w4a4_logits(trained):
    model, (x, y), (x_test, _) = trained
    with torch.no_grad():
        ref = model(x_test)
    errors = {}
    for observer in ("minmax", "percentile", "mse"):
        qmodel = quantize(model, QConfig(weight_bits=4, act_bits=4, method="minmax", first_last_bits=None))
        calibrate(qmodel, _loader(x, y), num_batches=8, observer=observer)
        with torch.no_grad():
            errors[observer] = float((qmodel.eval()(x_test) - ref).square().mean())
    assert errors["mse"] < errors["minmax"], errors
    assert errors["percentile"] < errors["minmax"] * 1.5, errors


def test_calibrate_sets_every_range_and_restores_modes(trained):
    model, (x, y), _ = trained
    qmodel = quantize(model, QConfig(weight_bits=4, act_bits=4, method="minmax")).train()
    quantizers = [m for m in qmodel.modules() if isinstance(m, MinMaxQuantizer)]
    assert not any(q.is_initialized for q in quantizers)
    out = calibrate(qmodel, iter(_loader(x, y)), num_batches=2, observer="percentile", percentile=99.0)
    assert out is qmodel and qmodel.training  # train/eval flags restored
    assert all(q.is_initialized for q in quantizers)
    first = qmodel.features[0].act_quant
    assert first.signed is False  # the digits input has no negative value
    assert 0.0 < float(first.max_val) <= float(x[:128].max())
    weight_scales = qmodel.features[3].weight_quant.scale.clone()
    calibrate(qmodel, [x[:64]], weights=False)  # plain tensors are batches too
    assert torch.equal(qmodel.features[3].weight_quant.scale, weight_scales)


def test_calibrate_errors(trained):
    model, (x, y), _ = trained
    qmodel = quantize(model)
    with pytest.raises(ConfigError, match="unknown observer 'kl'; accepted: minmax, percentile, mse"):
        calibrate(qmodel, _loader(x, y), observer="kl")
    with pytest.raises(ConfigError, match="num_batches"):
        calibrate(qmodel, _loader(x, y), num_batches=0)
    with pytest.raises(ConfigError, match="no batches"):
        calibrate(qmodel, [])
    with pytest.raises(ConfigError, match="tensor or an \\(inputs, targets\\) pair"):
        calibrate(qmodel, [{"x": x}])
    with pytest.raises(ConfigError, match="no quantizers"):
        calibrate(model, _loader(x, y))
