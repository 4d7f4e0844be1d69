"""``bitsmith demo``: the README's main job. A small sweep of LeNet-5 on the embedded digits (FP32, uniform LSQ,
DirectQ, CGMQ, RPG) over a few seeds, ending in the accuracy-vs-BOPs chart and the run reports."""

from __future__ import annotations

from pathlib import Path

import typer

from bitsmith.cli._common import check_writable_out, console

#: The demo's sweep; written beside its runs as sweep.toml so `bitsmith sweep` can re-run or extend it.
DEMO_SWEEP = """# The demo of `bitsmith demo`: re-run or extend it with `bitsmith sweep {out}/sweep.toml`.
[sweep]
out = "{out}"
seeds = {seeds}
threads = 1

[defaults]
model = "lenet5"
dataset = "digits"

[runs.fp32]
command = "train"
epochs = {epochs}

[runs.lsq-ptq]
command = "quantize"
from = "fp32"
wbits = 8
abits = 8
ptq = true

[runs.lsq]
command = "quantize"
from = "fp32"
grid = [{{wbits = 4, abits = 4}}, {{wbits = 2, abits = 2}}]
epochs = {qat_epochs}

[runs.directq]
command = "directq"
from = "fp32"
wbits = 2
abits = 2
epochs = {qat_epochs}

[runs.cgmq]
command = "cgmq"
from = "fp32"
bop-budget = 0.376
relative-to = "w8a8"
epochs = {qat_epochs}

[runs.rpg]
command = "rpg"
dof-ratio = 0.25
epochs = {epochs}
"""


def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), help="folder for the demo's runs"),
    epochs: int = typer.Option(30, help="FP32 (and RPG) training epochs"),
    qat_epochs: int = typer.Option(10, help="epochs of quantization-aware fine-tuning from the FP32 run"),
    seeds: int = typer.Option(2, help="seeds per setting (0, 1, ...)"),
    workers: int | None = typer.Option(None, help="runs at once (default: one per CPU core)"),
) -> None:
    """The README's main job: LeNet-5 on the embedded digits in FP32, W8A8 PTQ, W4A4/W2A2 LSQ QAT, DirectQ W2A2,
    CGMQ under the W4A4 model's BOPs and RPG at 25 % DoF, over a few seeds; ends with the accuracy-vs-BOPs chart.
    Finished runs are re-used, so running it again is instant."""
    from bitsmith import _io, sweeps
    from bitsmith.cli.sweep import command_table, run_with_progress
    from bitsmith.errors import BitsmithError

    for name, value in (("--epochs", epochs), ("--qat-epochs", qat_epochs), ("--seeds", seeds)):
        if value < 1:
            raise BitsmithError(f"{name} must be a positive integer, got {value}")
    check_writable_out(out)
    text = DEMO_SWEEP.format(out=out.as_posix(), seeds=list(range(seeds)), epochs=epochs, qat_epochs=qat_epochs)
    config = _io.write_text(out / "sweep.toml", text)
    commands = command_table()
    result = run_with_progress(sweeps.load_sweep(config, commands, workers=workers), commands)
    if result.compare is None:
        raise BitsmithError(f"no demo run finished; see the logs in {out / sweeps.LOG_DIR}")
    console.print(f"chart: {out / sweeps.COMPARE_DIR / 'pareto.png'}")
    console.print("reports: " + ", ".join(str(r.out / "report.html") for r in result.done if r.id.endswith("seed0")))
    if result.failed or result.blocked:
        raise BitsmithError(f"{len(result.failed) + len(result.blocked)} demo run(s) did not finish; see the logs "
                            f"in {out / sweeps.LOG_DIR}")


def register(app: typer.Typer) -> None:
    """Add ``bitsmith demo``."""
    app.command("demo")(demo_cmd)
