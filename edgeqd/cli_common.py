"""Helpers shared by every ``edgeqd`` command module: error handling, JSON, tables, progress.

They live apart from :mod:`edgeqd.cli` so that command modules (``cli_devices``,
``cli_distill``, …) can import them without importing the CLI group that imports them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import tempfile
from typing import Any, Callable, Iterator, Optional

import click

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


def console():
    """The rich console for tables (stdout); wide when piped, so tables stay readable in logs."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


@contextlib.contextmanager
def native_logs_captured() -> Iterator[Optional[int]]:
    """Send TensorFlow's and LiteRT's C++ log lines (written straight to fd 2) to a scratch file.

    Yields a duplicate of the real stderr descriptor for our own output (None when
    stderr has no descriptor, e.g. under a test runner). If something other than an
    edgeqd error escapes, the captured lines are replayed: they then matter.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield None
        return
    log = tempfile.TemporaryFile()
    os.dup2(log.fileno(), 2)
    try:
        yield saved
    except EdgeqdError:
        raise
    except BaseException:
        os.dup2(saved, 2)
        log.seek(0)
        sys.stderr.write(log.read().decode("utf-8", "replace"))
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        log.close()


@contextlib.contextmanager
def progress_bar(quiet: bool = False) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on stderr, driven by ``report(step, done, total)`` callbacks.

    Native library log lines are kept off the terminal meanwhile (see :func:`native_logs_captured`).

    Args:
        quiet: show no bar (for ``--json`` output).
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with native_logs_captured() as stderr_fd:
        if quiet:
            yield lambda step, done, total: None
            return
        stream = os.fdopen(os.dup(stderr_fd), "w") if stderr_fd is not None else sys.stderr
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=Console(file=stream), transient=True) as bar:
            task = bar.add_task("starting", total=1)

            def report(step: str, done: int, total: int) -> None:
                bar.update(task, description=step, completed=done, total=total)

            yield report
        if stream is not sys.stderr:
            stream.close()
