"""``bitsmith cost``: per-layer and total MACs, BOPs, size, parameters and DoF of a zoo model."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from bitsmith.cost import BitsAssignment, model_cost
from bitsmith.cost.bits import check_bits
from bitsmith.errors import ConfigError

_SHAPE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """Parse ``CxHxW`` (e.g. ``3x32x32``) into positive integers."""
    match = _SHAPE.match(text)
    dims = tuple(int(g) for g in match.groups()) if match else ()
    if len(dims) != 3 or min(dims) <= 0:
        raise ConfigError(f"--input must be CxHxW with positive integers, e.g. 3x32x32; got {text!r}")
    return dims  # type: ignore[return-value]


def parse_bits(text: str | None, option: str) -> int | None:
    """Parse a bit-width option: an integer from 1 to 32 (32 = full precision), or None if not given."""
    if text is None:
        return None
    value: object = int(text) if re.fullmatch(r"\s*[+-]?\d+\s*", text) else text
    return check_bits(value, option)


def cost_command(
    model: str | None = typer.Option(None, "--model", help="zoo model name, e.g. lenet5, resnet20"),
    input_shape: str | None = typer.Option(None, "--input", metavar="CxHxW", help="input shape, e.g. 3x32x32"),
    run: Path | None = typer.Option(None, "--run", help="a run directory: the cost of its model as trained (its "
                                                       "bit widths, pruned filters, RPG ring), instead of --model"),
    num_classes: int = typer.Option(10, "--num-classes", help="number of output classes"),
    wbits: str | None = typer.Option(None, "--wbits", metavar="BITS", help="weight bits for every layer (1-32)"),
    abits: str | None = typer.Option(None, "--abits", metavar="BITS", help="activation bits for every layer (1-32)"),
    bits_file: Path | None = typer.Option(None, "--bits-file", help="bits.json with per-layer/per-channel bits"),
    scale_bits: int = typer.Option(32, "--scale-bits", help="bits of each quantization scale (0: not counted)"),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="one scale per layer instead of per channel"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON only"),
) -> None:
    """Print a model's per-layer cost table and totals (MACs, GBOPs, size in KiB, params, DoF)."""
    from bitsmith.zoo import create_model

    if run is not None:
        if model is not None or input_shape is not None or wbits or abits or bits_file:
            raise ConfigError("--run costs the run's own model; leave out --model, --input, --wbits, --abits and "
                              "--bits-file")
        from bitsmith import runs

        _show(runs.run_cost(run), str(run), {"run": str(run)}, as_json)
        return
    if model is None or input_shape is None:
        raise ConfigError("give --model and --input (e.g. --model resnet20 --input 3x32x32), or --run RUN_DIR")
    channels, height, width = parse_input_shape(input_shape)
    w, a = parse_bits(wbits, "--wbits"), parse_bits(abits, "--abits")
    if bits_file is not None and (w is not None or a is not None):
        raise ConfigError("use either --wbits/--abits or --bits-file, not both")
    bits = BitsAssignment.load(bits_file) if bits_file is not None else None
    net = create_model(model, num_classes=num_classes, in_channels=channels, image_size=(height, width))
    report = model_cost(net, (channels, height, width), bits, weight_bits=32 if w is None else w,
                        act_bits=32 if a is None else a, scale_bits=scale_bits, per_channel=not per_tensor)
    _show(report, f"{model} {input_shape}", {"model": model}, as_json)


def _show(report: Any, title: str, source: dict[str, str], as_json: bool) -> None:
    """The report as JSON (with ``source`` naming what was costed), or as the per-layer table and a summary."""
    if as_json:
        typer.echo(json.dumps({**source, **report.to_dict()}, indent=2))
        return
    console = Console()
    if not console.is_terminal:
        console.width = 160
    console.print(report.table())
    console.print(f"{title}: {report.summary()} | activation peak {report.act_peak_bits / 8192:.2f} KiB",
                  highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the ``cost`` command to the bitsmith app."""
    app.command("cost")(cost_command)
