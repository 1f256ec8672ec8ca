"""The ``edgeqd`` command line: a thin shell over edgeqd's public functions.

Each command parses its options, calls one public function with the same
parameter names, and prints. Heavy imports (TensorFlow) happen inside commands so
``--help`` stays fast. Errors raised on purpose (:class:`EdgeqdError`) print one
line and exit with their code; no traceback is shown for a user's mistake.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import click

from edgeqd import __version__
from edgeqd.errors import EdgeqdError

EXIT_CODES_HELP = "Exit codes: 0 ok, 2 usage, 3 bad data or model, 4 conversion failure, 5 device failure."


def handle_errors(func: Callable) -> Callable:
    """Turn :class:`EdgeqdError` into a one-line message and its exit code.

    Args:
        func: a click command callback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EdgeqdError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def print_json(data: Any) -> None:
    """Print machine output: indented JSON on stdout.

    Args:
        data: anything ``json.dumps`` accepts (non-JSON values are turned into strings).
    """
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
             epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="edgeqd")
def cli() -> None:
    """Distil, quantize, convert and measure Keras models for edge devices."""


@cli.group()
def data() -> None:
    """Provide and inspect datasets."""


@data.command("fetch")
@handle_errors
def data_fetch() -> None:
    """Make the built-in Fashion-MNIST available (Debian's dataset-fashion-mnist)."""
    from edgeqd.data import provide_fashion_mnist

    click.echo(str(provide_fashion_mnist()))


def main() -> None:
    """Console entry point."""
    cli(prog_name="edgeqd")


if __name__ == "__main__":
    main()
