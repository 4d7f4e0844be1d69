"""bfloat16 autocast training (TrainConfig.precision) and NHWC memory order (TrainConfig.channels_last):
convolutions really run in bfloat16 / on NHWC batches while training, while quantizers, the loss and evaluation stay
float32; runs learn, resume exactly, record their settings and pass them on."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from bitsmith import _config, data, runs
from bitsmith.engine import TrainConfig, build_model, train
from bitsmith.errors import ConfigError
from bitsmith.quant import fake_quant


def _conv_output_dtypes(model: nn.Module) -> dict[bool, set[torch.dtype]]:
    """Record the output dtype of every conv call, keyed by whether the model was training."""
    seen: dict[bool, set[torch.dtype]] = {True: set(), False: set()}
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, inp, out: seen[mod.training].add(out.dtype))
    return seen


def test_bf16_training_learns_with_bf16_convs_and_float32_evaluation(tmp_path):
    cfg = TrainConfig(epochs=3, seed=0, num_threads=1, precision="bf16")
    model = build_model(cfg, data.get("digits", split="train"))
    seen = _conv_output_dtypes(model)
    result = train(cfg, tmp_path / "run", model=model, quiet=True)
    assert result.metrics["test_acc"] > 0.75, result.metrics  # chance is 0.10
    assert seen == {True: {torch.bfloat16}, False: {torch.float32}}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["precision"] == "bf16"
    assert _config.from_dict(TrainConfig, saved) == cfg


def test_channels_last_bf16_quantized_run_learns_and_resumes_exactly(tmp_path, interrupted_and_resumed):
    from bitsmith.methods.directq import DirectQConfig

    base = TrainConfig(model="lenet5", dataset="digits", epochs=4, num_threads=1, precision="bf16",
                       channels_last=True)
    model_seen: list[bool] = []
    ref = runs.method_run("directq", DirectQConfig(weight_bits=4, act_bits=4), tmp_path / "ref", base=base,
                          quiet=True)
    assert ref["test_acc"] > 0.5  # chance is 0.1
    assert runs.train_config(tmp_path / "ref").channels_last
    resumed = interrupted_and_resumed(tmp_path / "ref", tmp_path / "cut", 2)
    assert resumed.metrics["test_acc"] == ref["test_acc"]
    model = runs.build_run_model(tmp_path / "ref")[0]
    cfg = runs.train_config(tmp_path / "ref")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_pre_hook(lambda mod, inp: model_seen.append(
                inp[0].is_contiguous(memory_format=torch.channels_last) and inp[0].shape[1] > 1))
    train(dataclasses.replace(cfg, epochs=1, max_steps=2), model=model, quiet=True)
    assert model_seen and all(model_seen[1::2]), model_seen  # the second conv reads NHWC activations


def test_precision_is_validated():
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; accepted: fp32, bf16"):
        TrainConfig(precision="fp16")


def test_fake_quant_of_a_bf16_input_is_computed_in_float32():
    torch.manual_seed(0)
    x = (torch.randn(4, 3, 5, 5) * 40).to(torch.bfloat16).requires_grad_()
    scale = torch.tensor(0.25, requires_grad=True)  # 0-d: type promotion alone would keep bfloat16
    y = fake_quant(x, scale, None, -128, 127)
    assert y.dtype == torch.float32
    assert torch.equal(y, fake_quant(x.detach().float(), scale.detach(), None, -128, 127))
    codes = y.detach() / 0.25
    assert torch.equal(codes, codes.round()) and len(codes.unique()) > 128  # an 8-bit grid that bf16 cannot hold
    y.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16 and scale.grad is not None


def test_a_quantized_run_inherits_the_source_runs_precision_and_memory_order(tmp_path, cli):
    source = tmp_path / "fp"
    code, _, err = cli("train", "--epochs", "2", "--threads", "1", "--precision", "bf16", "--channels-last",
                       "--quiet", "--out", str(source))
    assert code == 0, err
    out = tmp_path / "w4a4"
    code, _, err = cli("quantize", "--from", str(source), "--wbits", "4", "--abits", "4", "--epochs", "1",
                       "--threads", "1", "--quiet", "--out", str(out))
    assert code == 0, err
    assert runs.train_config(out).precision == "bf16" and runs.train_config(out).channels_last
    assert runs.final_run_metrics(out)["test_acc"] > 0.5
    code, _, err = cli("quantize", "--from", str(source), "--wbits", "4", "--abits", "4", "--epochs", "1",
                       "--threads", "1", "--precision", "fp32", "--no-channels-last", "--quiet", "--out",
                       str(tmp_path / "fp32"))
    assert code == 0, err
    assert runs.train_config(tmp_path / "fp32").precision == "fp32"
    assert not runs.train_config(tmp_path / "fp32").channels_last
    code, _, err = cli("quantize", "--from", str(source), "--precision", "half", "--out", str(tmp_path / "bad"))
    assert code == 2 and "unknown precision 'half'; accepted: fp32, bf16" in err


def test_ghn_training_under_bf16_keeps_the_hypernetwork_in_float32():
    from bitsmith.methods.ghn import GHNTrainConfig, train_ghn

    train_cfg = TrainConfig(model="cellnet", dataset="digits", image_size=8, val=True, epochs=1, batch_size=512,
                            optimizer="adamw", num_threads=1, precision="bf16")
    ghn, metrics = train_ghn(train_cfg, {"hidden": 16, "decoder_hidden": 32, "rank": 8},
                             GHNTrainConfig(meta_batch=2, eval_archs=1), quiet=True)
    assert math.isfinite(metrics["train_loss"]) and metrics["epoch"] == 1
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in ghn.parameters())
