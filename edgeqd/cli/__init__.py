"""The ``edgeqd`` command line: a thin shell over edgeqd's public functions.

The command tree is the folder tree: one module per command (family) in this
package, each registering itself on :data:`cli`. Each command parses its options
(declared once, in :mod:`edgeqd.cli.options`), calls one public function and prints.
Heavy imports (TensorFlow) happen inside commands so ``--help`` stays fast. Errors
raised on purpose (:class:`EdgeqdError`) print one line and exit with their code; no
traceback is shown for a user's mistake, and click's own usage errors get the same
one-line form.
"""

from __future__ import annotations

import sys

import click

from edgeqd import __version__
from edgeqd.cli.common import EXIT_CODES_HELP


class EdgeqdGroup(click.Group):
    """The command group: click's own usage errors become one ``error:`` line too.

    Click prints a usage block and "Error: …" for an option it cannot parse (``--runs abc``,
    ``--max-drop nan``); every other mistake in edgeqd prints one ``error:`` line with
    exit 2, so this does the same for click's.
    """

    def main(self, *args, standalone_mode: bool = True, **kwargs):  # noqa: D102 (click's signature)
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `edgeqd`: the help, not an error
            click.echo(exc.format_message())
            sys.exit(0)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "edgeqd"
            click.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=EdgeqdGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
             epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="edgeqd")
def cli() -> None:
    """Distil, quantize, convert and measure Keras models for edge devices."""


# Each command (family) lives in its own module and registers itself on the group.
from edgeqd.cli import bench as _bench  # noqa: E402
from edgeqd.cli import convert as _convert  # noqa: E402
from edgeqd.cli import data as _data  # noqa: E402
from edgeqd.cli import devices as _devices  # noqa: E402
from edgeqd.cli import distill as _distill  # noqa: E402
from edgeqd.cli import inspect as _inspect  # noqa: E402
from edgeqd.cli import optimize as _optimize  # noqa: E402
from edgeqd.cli import report as _report  # noqa: E402

for _module in (_bench, _convert, _data, _devices, _distill, _inspect, _optimize, _report):
    _module.register(cli)


def main() -> None:
    """Console entry point.

    An interrupted run (exit 130/143; its outputs already removed) ends with ``os._exit`` once the
    streams are flushed: TensorFlow's threads, still alive after an interrupted ``fit``, can crash
    the interpreter's shutdown (SIGSEGV seen in a SIGTERM-during-training test), which would turn
    143 into a signal death.
    """
    import os

    try:
        cli(prog_name="edgeqd")
    except SystemExit as exc:
        if exc.code in (130, 143):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.code)
        raise


if __name__ == "__main__":
    main()
