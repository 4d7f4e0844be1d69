"""Shared test helpers."""

from __future__ import annotations

import pytest

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
