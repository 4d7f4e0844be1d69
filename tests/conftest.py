"""Shared test helpers."""

from __future__ import annotations

import pytest
import torch

from bitsmith.cli.main import main


def invoke(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the ``bitsmith`` CLI in-process: (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """``cli(*args) -> (exit code, stdout, stderr)`` of the ``bitsmith`` command run in-process."""
    return lambda *args: invoke(capsys, *args)


@pytest.fixture(scope="session")
def float_run(tmp_path_factory):
    """A trained float LeNet-5 run on digits (8 epochs), shared by the commands that start from one."""
    from bitsmith.cli.main import main as bitsmith_main

    out = tmp_path_factory.mktemp("fp") / "run"
    bitsmith_main(["train", "--epochs", "8", "--threads", "1", "--quiet", "--out", str(out)])
    return out


@pytest.fixture
def interrupted_and_resumed():
    """``f(reference_run, run_dir, stop_epoch) -> TrainResult``: re-train ``reference_run``'s config into
    ``run_dir``, interrupted at the start of epoch ``stop_epoch``, then resume it from its checkpoint."""
    from bitsmith import runs
    from bitsmith.engine import Callback, train

    class Interrupt(Callback):
        def __init__(self, epoch: int) -> None:
            self.epoch = epoch

        def on_epoch_start(self, trainer, epoch):
            if epoch == self.epoch:
                raise KeyboardInterrupt

    def run(reference, run_dir, stop_epoch):
        model, cfg, train_ds = runs.build_run_model(reference)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, run_dir, model=model, run_config=runs.read_config(reference), quiet=True,
                  callbacks=runs.run_callbacks(reference, model, train_ds) + [Interrupt(stop_epoch)])
        model, cfg, train_ds = runs.build_run_model(run_dir)
        return train(cfg, run_dir, model=model, run_config=runs.read_config(run_dir), quiet=True, resume=True,
                     callbacks=runs.run_callbacks(run_dir, model, train_ds))

    return run


def _train_ghn_briefly(out, batch_size: int = 32, **ghn_train: object):
    from bitsmith.engine import TrainConfig
    from bitsmith.methods.ghn import GHNTrainConfig, train_ghn

    train = TrainConfig(model="cellnet", dataset="digits", val=True, epochs=4, batch_size=batch_size, lr=3e-3,
                        optimizer="adamw", scheduler="cosine", grad_clip=5.0, num_threads=1, on_nonfinite="restore",
                        max_nonfinite=2)
    ghn, metrics = train_ghn(train, {"hidden": 32, "decoder_hidden": 64, "rank": 16}, GHNTrainConfig(**ghn_train),
                             out, quiet=True)
    return ghn, metrics, out


@pytest.fixture(scope="session")
def train_ghn_briefly():
    """``f(out, batch_size=32, **GHNTrainConfig fields) -> (ghn, final metrics, out)``: a small GHN (hidden 32)
    trained 4 epochs on digits through the Trainer (AdamW lr 3e-3, cosine)."""
    return _train_ghn_briefly


@pytest.fixture
def one_thread():
    """torch on one thread for the test (timing-free, reproducible sums), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
