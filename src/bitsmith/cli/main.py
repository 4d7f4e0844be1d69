"""Entry point of the ``bitsmith`` command: builds the typer app and turns user errors into exit code 2."""

from __future__ import annotations

import importlib
import sys

import click
import typer

from bitsmith.errors import BitsmithError

app = typer.Typer(
    name="bitsmith",
    help="Compact, low-bit CNNs: train, quantize, search bit widths, and measure cost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Each module defines ``register(app)`` and adds its own sub-commands.
_COMMAND_MODULES = (
    "bitsmith.cli.train",
    "bitsmith.cli.demo",
    "bitsmith.cli.cost",
    "bitsmith.cli.quantize",
    "bitsmith.cli.directq",
    "bitsmith.cli.cgmq",
    "bitsmith.cli.search",
    "bitsmith.cli.rpg",
    "bitsmith.cli.ghn",
    "bitsmith.cli.export",
    "bitsmith.cli.report",
    "bitsmith.cli.sweep",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def fail(message: str) -> None:
    """Print a one-line error and exit with code 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; bad input of any kind ends in one line on stderr and exit code 2, never a traceback."""
    try:
        code = app(args=argv, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError:
        raise SystemExit(0) from None
    except click.UsageError as exc:
        msg = exc.format_message().replace("\n", " ")
        fail(msg)
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Abort:
        fail("aborted")
    except BitsmithError as exc:
        fail(str(exc).replace("\n", " "))
    except KeyboardInterrupt:
        fail("interrupted")
    if isinstance(code, int) and not isinstance(code, bool) and code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
