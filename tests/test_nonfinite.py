"""Numerical guards: a NaN/Inf loss, gradient or weight stops the run with one line and the last good checkpoint
intact (or the step is skipped with --on-nonfinite skip); a budget no configuration can meet is refused before
training starts."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bitsmith import _config, runs
from bitsmith.engine import Callback, NonFiniteLossError, TrainConfig, Trainer, build_model, faults, load_checkpoint
from bitsmith.engine import run as engine_run
from bitsmith.errors import ConfigError
from bitsmith.graph import trace
from bitsmith.zoo import create_model

STEPS_PER_EPOCH = 23  # digits train split (1437 images) at batch 64
BAD_STEP = 50  # in epoch 3


class NaNAt(nn.Module):
    """A model whose training forward returns NaN logits at its ``step``-th call (a stand-in for a diverging
    model or a poisoned batch)."""

    def __init__(self, inner: nn.Module, step: int) -> None:
        super().__init__()
        self.inner = inner
        self.step = step
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls == self.step:
                return out * float("nan")
        return out


@pytest.fixture
def nan_at_step(monkeypatch):
    """Every model ``bitsmith train`` builds (and rebuilds for eval/report) returns NaN at training call BAD_STEP."""
    real = engine_run.build_model

    def build(cfg, train_ds):
        return NaNAt(real(cfg, train_ds), BAD_STEP)

    monkeypatch.setattr(engine_run, "build_model", build)
    monkeypatch.setattr(runs, "build_model", build)


def _epochs(run) -> list[int]:
    return [r["epoch"] for r in runs.read_metrics(run) if r["type"] == "epoch"]


def test_nan_loss_stops_the_cli_with_one_line_and_the_last_good_checkpoint(cli, nan_at_step, tmp_path):
    run = tmp_path / "run"
    code, _, err = cli("train", "--epochs", "4", "--threads", "1", "--quiet", "--out", str(run))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"training stopped: loss became nan at epoch 3, step {BAD_STEP}" in err
    assert "holds epoch 2, the last good state" in err and "--on-nonfinite skip" in err
    state = load_checkpoint(run / "checkpoint.safetensors")
    assert state["epoch"] == 1 and state["global_step"] == 2 * STEPS_PER_EPOCH
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert _epochs(run) == [1, 2] and faults.run_dir_problems(run) == [] and not faults.temp_files(run)
    code, out, err = cli("eval", str(run), "--json")
    assert code == 0 and json.loads(out)["acc"] > 0.3, err  # the checkpoint loads and predicts


def test_skip_drops_the_bad_step_and_finishes(cli, nan_at_step, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", "--epochs", "4", "--threads", "1", "--quiet", "--on-nonfinite", "skip", "--out",
                         str(run))
    assert code == 0, err
    records = runs.read_metrics(run)
    skipped = [r for r in records if r["type"] == "skip"]
    assert skipped == [{"type": "skip", "epoch": 3, "step": BAD_STEP - 1, "what": "loss", "count": 1}]
    assert _epochs(run) == [1, 2, 3, 4]
    assert records[-2]["step"] == 4 * STEPS_PER_EPOCH - 1  # one optimizer step fewer
    assert runs.train_config(run).on_nonfinite == "skip"


def _digits_trainer(tmp_path, callbacks, **cfg) -> Trainer:
    from bitsmith.engine import build_datasets

    config = TrainConfig(epochs=2, num_threads=1, **cfg)
    train_ds, evals = build_datasets(config)
    return Trainer(build_model(config, train_ds), config, train_ds, evals, out_dir=tmp_path, callbacks=callbacks,
                   quiet=True)


class PoisonGradient(Callback):
    """A NaN gradient on the first parameter at one optimizer step; the loss stays finite."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.handle = None
        self.done = False

    def before_step(self, trainer, inputs, targets):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        if trainer.global_step == self.step and not self.done:
            self.done = True
            self.handle = next(trainer.model.parameters()).register_hook(lambda g: g * float("nan"))


@pytest.mark.parametrize("action", ["stop", "skip", "restore"])
def test_a_nan_gradient_is_never_applied(tmp_path, action):
    trainer = _digits_trainer(tmp_path, [PoisonGradient(30)], on_nonfinite=action)
    if action == "stop":
        with pytest.raises(NonFiniteLossError, match="gradient norm became nan at epoch 2, step 31.*holds epoch 1"):
            trainer.fit()
        assert load_checkpoint(tmp_path / "checkpoint.safetensors")["epoch"] == 0
    else:
        trainer.fit()
        assert [r["type"] for r in trainer.history].count(action) == 1
        assert trainer.global_step == 2 * STEPS_PER_EPOCH - 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_skip_stops_after_max_nonfinite_steps(tmp_path):
    class AlwaysNaN(Callback):
        def extra_loss(self, trainer, outputs, targets):
            return torch.tensor(float("nan")) if trainer.epoch == 1 else None

    trainer = _digits_trainer(tmp_path, [AlwaysNaN()], on_nonfinite="skip", max_nonfinite=3)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 24, after 3 dropped step\(s\) \(max_nonfinite 3\)"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "checkpoint.safetensors")["epoch"] == 0


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    class Corrupt(Callback):
        def after_train_epoch(self, trainer, epoch):
            if epoch == 1:
                with torch.no_grad():
                    next(trainer.model.parameters())[0].fill_(float("inf"))

    trainer = _digits_trainer(tmp_path, [Corrupt()])
    with pytest.raises(NonFiniteLossError, match=r"weights features\.0\.weight became non-finite in epoch 2 "
                                                 r"\(not checkpointed\).*holds epoch 1"):
        trainer.fit()
    state = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert state["epoch"] == 0 and all(torch.isfinite(t).all() for t in state["model"].values())


def test_old_nonfinite_restores_configs_still_load_and_bad_actions_are_refused(cli, tmp_path):
    assert _config.from_dict(TrainConfig, {"nonfinite_restores": 5}) == TrainConfig(on_nonfinite="restore",
                                                                                    max_nonfinite=5)
    assert _config.from_dict(TrainConfig, {"nonfinite_restores": 0}) == TrainConfig()
    with pytest.raises(ConfigError, match="accepted: stop, skip, restore"):
        TrainConfig(on_nonfinite="ignore")
    with pytest.raises(ConfigError, match="max nonfinite must be >= 0"):
        TrainConfig(max_nonfinite=-1)
    code, _, err = cli("train", "--on-nonfinite", "ignore", "--out", str(tmp_path / "x"))
    assert code == 2 and "accepted: stop, skip, restore" in err and len(err.strip().splitlines()) == 1


# -- budgets no configuration can meet ---------------------------------------------------------------------------
def _lenet() -> nn.Module:
    torch.manual_seed(0)
    return create_model("lenet5", num_classes=10, in_channels=1, image_size=16)


def test_cgmq_budget_at_the_minimum_is_accepted_and_one_bop_less_is_refused():
    from bitsmith.methods import cgmq

    shape = (1, 16, 16)
    minimum = cgmq.BopConstraint(cgmq.prepare(_lenet(), cgmq.CGMQConfig(), shape), shape, cgmq.CGMQConfig()).min_bops
    cgmq.prepare(_lenet(), cgmq.CGMQConfig(bop_budget=minimum, relative_to="absolute"), shape)
    with pytest.raises(ConfigError, match=f"below the cheapest configuration the gates can reach \\({minimum:.6g}"):
        cgmq.prepare(_lenet(), cgmq.CGMQConfig(bop_budget=minimum - 1, relative_to="absolute"), shape)


@pytest.mark.parametrize("prune", [False, True])
def test_dnas_budget_at_the_minimum_is_accepted_and_one_bop_less_is_refused(prune):
    from bitsmith.methods import dnas

    shape = (1, 16, 16)
    config = dnas.DNASConfig(budget_bops=1.0, prune=prune)
    space = dnas.SearchSpace(dnas.prepare(_lenet(), config, shape), shape, config)
    assert space.min_bops == space.bops(space.cheapest()) > 0
    dnas.prepare(_lenet(), dnas.DNASConfig(budget_bops=space.min_bops, relative_to="absolute", prune=prune), shape)
    with pytest.raises(ConfigError, match="below the cheapest configuration of the search space"):
        dnas.prepare(_lenet(), dnas.DNASConfig(budget_bops=space.min_bops - 1, relative_to="absolute", prune=prune),
                     shape)
    assert len(trace(_lenet(), shape).layers()) == len(space.layers)


@pytest.mark.parametrize("command", [["cgmq", "--bop-budget"], ["search", "--budget-bops"]])
def test_an_unreachable_budget_is_refused_before_any_training(cli, tmp_path, monkeypatch, command):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(engine_run.Trainer, "fit", no_training)
    out = tmp_path / "out"
    code, _, err = cli(*command, "1000", "--relative-to", "absolute", "--epochs", "1", "--quiet", "--out", str(out))
    assert code == 2 and "below the cheapest configuration" in err and "raise the budget" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not list(out.rglob("*.safetensors")) and not list(out.rglob("config.json"))
