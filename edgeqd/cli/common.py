"""Helpers shared by every ``edgeqd`` command module: error handling, JSON, tables, progress.

They live apart from :mod:`edgeqd.cli` so that command modules (``cli.devices``,
``cli.distill``, …) can import them without importing the CLI group that imports them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import click

from edgeqd.errors import EdgeqdError

EXIT_CODES_HELP = ("Exit codes: 0 ok, 2 usage, 3 bad data or model, 4 conversion failure, 5 device failure, "
                   "130/143 interrupted (SIGINT/SIGTERM).")


def handle_errors(func: Callable) -> Callable:
    """Turn :class:`EdgeqdError` into a one-line message and its exit code; handle SIGINT and SIGTERM.

    While the command runs, SIGINT and SIGTERM raise :class:`edgeqd.interrupts.Interrupted`
    (outputs in progress are removed, nothing is committed); the command then prints
    "interrupted" and exits 130 (SIGINT) or 143 (SIGTERM) — also when a library swallowed
    the interrupt or turned it into an error of its own. A full disk (or quota, or a
    read-only file system) that escaped as an OSError is one ``error:`` line, exit 2.

    Args:
        func: a click command callback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from edgeqd import interrupts
        from edgeqd.atomic import no_room, no_room_error

        with interrupts.handled():
            try:
                result = func(*args, **kwargs)
                interrupts.check()  # an interrupt some library swallowed still ends the run
                return result
            except BaseException as exc:
                with interrupts.shielded():  # a second Ctrl-C must not turn this into a traceback
                    signum = interrupts.received()
                    if signum is not None or isinstance(exc, KeyboardInterrupt):
                        click.echo("interrupted", err=True)
                        sys.exit(interrupts.exit_code(signum))
                    if isinstance(exc, EdgeqdError):
                        click.echo(f"error: {exc}", err=True)
                        sys.exit(exc.exit_code)
                    full = no_room(exc) if isinstance(exc, Exception) else None
                    if full is not None:
                        error = no_room_error(full, Path.cwd())
                        click.echo(f"error: {error}", err=True)
                        sys.exit(error.exit_code)
                raise

    return wrapper


def print_json(data: Any) -> None:
    """Print machine output: indented JSON on stdout.

    Args:
        data: anything ``json.dumps`` accepts (non-JSON values are turned into strings;
            NaN and infinities are refused, as they are not JSON).
    """
    from edgeqd.documents import to_json

    click.echo(to_json(data, "JSON output"))


def console(markup: bool = True):
    """The rich console for tables (stdout); wide when piped, so tables stay readable in logs.

    Args:
        markup: interpret ``[style]`` markup in strings; off for text read from files
            (an artifact's tensor names), which must be shown as they are.
    """
    from rich.console import Console

    return Console(markup=markup) if sys.stdout.isatty() else Console(width=160, markup=markup)


@contextlib.contextmanager
def native_logs_captured() -> Iterator[Optional[int]]:
    """Send TensorFlow's and LiteRT's C++ log lines (written straight to fd 2) to a scratch file.

    Yields a duplicate of the real stderr descriptor for our own output (None when
    stderr has no descriptor, e.g. under a test runner). If something other than an
    edgeqd error escapes, the captured lines are replayed: they then matter.

    A native crash (SIGSEGV, SIGABRT, …) kills the process before anything is replayed,
    so meanwhile :mod:`faulthandler` writes its report to the *real* stderr: the user
    sees "Fatal Python error: Segmentation fault" and the Python stack, not silence.
    """
    import faulthandler

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield None
        return
    log = tempfile.TemporaryFile()
    os.dup2(log.fileno(), 2)
    # faulthandler keeps the file's descriptor, not the object: hand it its own duplicate.
    real_stderr = os.fdopen(os.dup(saved), "w")
    was_enabled = faulthandler.is_enabled()
    faulthandler.enable(file=real_stderr)
    try:
        yield saved
    except (EdgeqdError, KeyboardInterrupt, SystemExit):  # ours, Ctrl-C/SIGTERM: the log says nothing new
        raise
    except BaseException as exc:
        from edgeqd import interrupts
        from edgeqd.atomic import no_room

        if interrupts.received() is not None or (isinstance(exc, Exception) and no_room(exc) is not None):
            raise  # caused by the interrupt or a full disk: handle_errors prints one line
        os.dup2(saved, 2)
        log.seek(0)
        sys.stderr.write(log.read().decode("utf-8", "replace"))
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        log.close()
        faulthandler.disable()
        real_stderr.close()
        if was_enabled:  # PYTHONFAULTHANDLER=1 or a test runner had it on: back to the process's stderr
            with contextlib.suppress(Exception):  # a stderr without a descriptor: leave it off
                faulthandler.enable(file=sys.__stderr__)


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


class FiniteFloat(click.ParamType):
    """A float option that refuses ``nan``, ``inf`` and ``-inf`` (and, optionally, a range).

    ``float("nan") < 0`` is False, so a plain ``type=float`` with a later ``value < 0``
    check lets ``nan`` through (``--max-drop nan`` turned the gate off). Every float
    option of every command uses this type; a test walks the commands to keep it so.

    Args:
        min: smallest allowed value (None = no bound).
        max: largest allowed value (None = no bound).
        min_open: exclude ``min`` itself (``> min`` instead of ``>= min``).
        max_open: exclude ``max`` itself.

    >>> FiniteFloat(min=0, min_open=True).convert("2.5", None, None)
    2.5
    """

    name = "float"

    def __init__(self, min: Optional[float] = None, max: Optional[float] = None,
                 min_open: bool = False, max_open: bool = False) -> None:
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        import math

        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        too_low = self.min is not None and (number <= self.min if self.min_open else number < self.min)
        too_high = self.max is not None and (number >= self.max if self.max_open else number > self.max)
        if too_low or too_high:
            self.fail(f"must be {self._describe()}, got {number:g}", param, ctx)
        return number

    def _describe(self) -> str:
        if self.max is None:
            return f"{'>' if self.min_open else '>='} {self.min:g}" if self.min is not None else "finite"
        if self.min is None:
            return f"{'<' if self.max_open else '<='} {self.max:g}"
        return (f"within {'(' if self.min_open else '['}{self.min:g}, "
                f"{self.max:g}{')' if self.max_open else ']'}")

    def __repr__(self) -> str:
        return f"FiniteFloat({self._describe()})"
