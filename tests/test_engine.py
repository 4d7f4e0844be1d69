"""The Trainer on real digits: learning, run directory, determinism, callbacks, checkpoints."""

from __future__ import annotations

import io
import json

import pytest
import torch

from bitsmith import data
from bitsmith.engine import (
    Callback,
    TrainConfig,
    Trainer,
    build_model,
    load_checkpoint,
    save_checkpoint,
    train,
)
from bitsmith.engine.progress import EpochProgress, RunsProgress
from bitsmith.errors import BitsmithError, CheckpointError, ConfigError


def _cfg(**kw) -> TrainConfig:
    base = {"epochs": 3, "seed": 0, "num_threads": 1}
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def digits():
    return data.get("digits", split="train"), {"test": data.get("digits", split="test")}


def test_training_learns_and_writes_a_run_directory(tmp_path):
    result = train(_cfg(epochs=4), tmp_path / "run", quiet=True)
    m = result.metrics
    assert m["test_acc"] > 0.75, m  # chance is 0.10
    history = result.history
    epochs = [r for r in history if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    run = tmp_path / "run"
    assert {"config.json", "metrics.jsonl", "checkpoint.safetensors"} <= {p.name for p in run.iterdir()}
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(history))
    assert sum(r["type"] == "eval" for r in lines) == 4
    config = json.loads((run / "config.json").read_text())
    assert config["command"] == "train" and config["train"]["epochs"] == 4
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_progress_off_a_terminal_is_one_line_per_epoch(capsys):
    train(_cfg(epochs=2), quiet=False)  # capsys's stderr is not a terminal, like a log file or a batch job's
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith("epoch ") and "  step " not in line]  # a slow machine may add in-epoch lines
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"], lines
    assert all("  loss " in line and "  test acc " in line and line.endswith(" s") for line in lines), lines
    train(_cfg(epochs=1), quiet=True)
    assert capsys.readouterr().err == ""


def test_progress_off_a_terminal_reports_within_a_long_epoch():
    log = io.StringIO()
    with EpochProgress(stream=log, every=0.0) as bar:  # every advance is "a minute later"
        bar.start_epoch("epoch 1/2", 3)
        for loss in ("1.0", "0.9", "0.8"):
            bar.advance(f"loss {loss}")
        bar.end_epoch("loss 0.8  test acc 50.00%")
    lines = [line.split("  ") for line in log.getvalue().splitlines()]
    assert [line[:3] for line in lines[:3]] == [["epoch 1/2", f"step {k}/3", f"loss {loss}"]
                                                for k, loss in ((1, "1.0"), (2, "0.9"), (3, "0.8"))]
    assert lines[3][:3] == ["epoch 1/2", "loss 0.8", "test acc 50.00%"] and len(lines) == 4
    quiet_minute = io.StringIO()
    with EpochProgress(stream=quiet_minute) as bar:  # the default minute does not pass in a short epoch
        bar.start_epoch("epoch 1/1", 2)
        bar.advance("loss 1.0")
        bar.advance("loss 0.9")
    assert quiet_minute.getvalue() == ""


def test_progress_on_a_terminal_is_a_live_bar_not_lines():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    with EpochProgress(stream=screen) as bar:
        bar.start_epoch("epoch 1/1", 2)
        bar.advance("loss 1.0")
        bar.end_epoch("loss 1.0")
    assert bar.enabled and not bar.lines and "epoch 1/1" in screen.getvalue()
    assert not EpochProgress(quiet=True, stream=Terminal()).enabled


def test_runs_progress_off_a_terminal_is_one_line_per_run():
    log = io.StringIO()
    with RunsProgress("grid", 2, stream=log) as bar:
        bar.advance("c0-s0: test acc 90.00%")
        bar.advance("c0-s1: test acc 91.00%")
    lines = [line.split("  ") for line in log.getvalue().splitlines()]
    assert [line[:2] for line in lines] == [["grid 1/2", "c0-s0: test acc 90.00%"],
                                            ["grid 2/2", "c0-s1: test acc 91.00%"]]
    assert all(line[2].endswith(" s") for line in lines)
    silent = io.StringIO()
    with RunsProgress("grid", 1, quiet=True, stream=silent) as bar:
        bar.advance("c0-s0")
    assert silent.getvalue() == ""


def test_same_seed_same_numbers_other_seed_other_numbers():
    a = train(_cfg(epochs=2), quiet=True).metrics
    b = train(_cfg(epochs=2), quiet=True).metrics
    c = train(_cfg(epochs=2, seed=1), quiet=True).metrics
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    assert [a[k] for k in keys] == [b[k] for k in keys]
    assert a["train_loss"] != c["train_loss"]


def test_training_asks_for_deterministic_kernels_without_the_memory_fill():
    """The fill of every new tensor costs 5-8 % of a CPU step and adds no determinism to kernels that write
    memory before reading it; the same-seed test above and the resume tests hold with it off."""
    train(_cfg(epochs=1), quiet=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory is False


@pytest.mark.parametrize("optimizer,scheduler", [("sgd", "cosine"), ("adamw", "step")])
def test_optimizers_and_schedulers(digits, optimizer, scheduler):
    train_ds, evals = digits
    cfg = _cfg(epochs=2, optimizer=optimizer, scheduler=scheduler, lr=0.05 if optimizer == "sgd" else 1e-3,
               step_size=1, gamma=0.5, label_smoothing=0.1, grad_clip=1.0)
    trainer = Trainer(build_model(cfg, train_ds), cfg, train_ds, evals, quiet=True)
    result = trainer.fit()
    lrs = [r["lr"] for r in trainer.history if r["type"] == "epoch"]
    assert lrs[1] < lrs[0]
    assert result["test_acc"] > 0.3


class _Recorder(Callback):
    """Counts hooks, adds a penalty, owns a parameter group and carries state."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.counter = 0

    def _hit(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def param_groups(self, model):
        return [{"params": [self.scale], "lr": 0.0}]

    def on_fit_start(self, trainer):
        self._hit("fit_start")

    def before_step(self, trainer, inputs, targets):
        self._hit("before_step")

    def extra_loss(self, trainer, outputs, targets):
        self._hit("extra_loss")
        return 0.0 * self.scale

    def after_backward(self, trainer):
        self._hit("after_backward")
        assert self.scale.grad is not None

    def after_step(self, trainer, step, loss):
        self._hit("after_step")
        self.counter += 1

    def after_epoch(self, trainer, epoch, metrics):
        self._hit("after_epoch")
        metrics["recorder_steps"] = self.counter

    def state_dict(self):
        return {"counter": self.counter, "scale": self.scale.detach().clone()}

    def load_state_dict(self, state):
        self.counter = state["counter"]


def test_callback_hooks_param_groups_and_state(digits, tmp_path):
    train_ds, evals = digits
    cfg = _cfg(epochs=2)
    cb = _Recorder()
    trainer = Trainer(build_model(cfg, train_ds), cfg, train_ds, evals, out_dir=tmp_path, callbacks=[cb], quiet=True)
    trainer.fit()
    steps = trainer.global_step
    assert steps == 2 * -(-len(train_ds) // cfg.batch_size)
    assert cb.calls["before_step"] == cb.calls["after_step"] == cb.calls["extra_loss"] == steps
    assert cb.calls["after_epoch"] == 2 and cb.calls["fit_start"] == 1
    assert any(g["lr"] == 0.0 and g["params"][0] is cb.scale for g in trainer.optimizer.param_groups)
    assert [r.get("recorder_steps") for r in trainer.history if r["type"] == "epoch"] == [steps // 2, steps]
    state = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert state["callbacks"][0]["counter"] == steps


def test_checkpoint_round_trip_and_refusals(tmp_path):
    state = {"a": torch.arange(3.0), "nested": {1: {"x": torch.ones(2, 2)}, "b": [1, 2.5, "s", None]}, "e": 3}
    path = save_checkpoint(tmp_path / "c.safetensors", state)
    back = load_checkpoint(path)
    assert torch.equal(back["a"], state["a"]) and torch.equal(back["nested"][1]["x"], torch.ones(2, 2))
    assert back["nested"]["b"] == [1, 2.5, "s", None] and back["e"] == 3
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    pickled = tmp_path / "evil.safetensors"
    torch.save({"model": torch.ones(1)}, pickled)
    with pytest.raises(CheckpointError):
        load_checkpoint(pickled)


def test_refuses_to_overwrite_a_run_and_bad_configs(tmp_path):
    train(_cfg(epochs=1), tmp_path, quiet=True)
    with pytest.raises(BitsmithError, match="already holds a run"):
        train(_cfg(epochs=1), tmp_path, quiet=True)
    for bad in ({"epochs": 0}, {"optimizer": "lion"}, {"lr": -1.0}, {"label_smoothing": 1.0}, {"batch_size": 0}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)


def test_non_finite_loss_stops_with_clear_error(digits, tmp_path):
    train_ds, evals = digits

    class Explode(Callback):
        def extra_loss(self, trainer, outputs, targets):
            return torch.tensor(float("nan")) if trainer.epoch == 1 else None

    cfg = _cfg(epochs=3)
    trainer = Trainer(build_model(cfg, train_ds), cfg, train_ds, evals, out_dir=tmp_path, callbacks=[Explode()],
                      quiet=True)
    with pytest.raises(BitsmithError, match="loss became nan at epoch 2"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "checkpoint.safetensors")["epoch"] == 0
