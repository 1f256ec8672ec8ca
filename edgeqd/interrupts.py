"""Ctrl-C and SIGTERM: one flag, one exception, and no output committed after either.

Python's default SIGINT handler raises ``KeyboardInterrupt`` wherever the main thread
happens to be, and native code may catch it, delay it or turn it into another error
(TensorFlow's converter swallowed it; a C extension's import turned it into
``ImportError: initialization failed``). SIGTERM, by default, kills the process with no
cleanup at all. While a CLI command runs, :func:`handled` installs one handler for both
signals: it records the signal in a flag and raises :class:`Interrupted`. The flag stays
set even when the exception is swallowed, so

- code that commits outputs (:mod:`edgeqd.atomic`) calls :func:`check` right before it
  renames anything into place, and stage boundaries call it too;
- any exception raised while the flag is set is the interrupt, not a failure of its own
  (see :func:`received`);
- cleanup runs inside :func:`shielded`, where a signal is recorded but raises only once
  the cleanup is done, so a second Ctrl-C cannot leave half-removed temporaries;
- while a C extension module initialises, the signal waits until it is done (re-delivered
  every 50 ms): an exception raised there breaks the module or crashes the process
  (onnx's, interrupted, died with SIGSEGV).

Outside :func:`handled` (the Python API) nothing changes: the flag is never set and
Python's own handlers apply.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import threading
import time
from typing import Iterator, Optional

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was interrupted by SIGINT or SIGTERM.

    A ``KeyboardInterrupt`` so that code which already reacts to Ctrl-C (distillation
    keeps a checkpoint for ``--resume``) reacts to SIGTERM the same way, and so that
    ``except Exception`` in libraries and converters lets it through.

    Args:
        signum: the signal received.

    >>> Interrupted(signal.SIGTERM).exit_code
    143
    """

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = int(signum)
        self.exit_code = exit_code(signum)


class _State:
    signum: Optional[int] = None  # the first signal received while handled
    depth = 0  # nesting of handled()
    shield = 0  # nesting of shielded()
    pending = False  # a signal arrived inside shielded() and has not been raised yet


_state = _State()


def exit_code(signum: Optional[int]) -> int:
    """The shell's exit status for a process ended by ``signum``: 128 + its number (130, 143).

    Args:
        signum: the signal, or None for a plain ``KeyboardInterrupt`` (counted as SIGINT).

    >>> exit_code(signal.SIGINT)
    130
    """
    return 128 + int(signum if signum is not None else signal.SIGINT)


def received() -> Optional[int]:
    """The signal received since the current command started, or None.

    >>> received() is None
    True
    """
    return _state.signum


def check() -> None:
    """Raise :class:`Interrupted` if a signal has been received (even one some library swallowed).

    Call it at stage boundaries and right before committing an output.

    >>> check()
    """
    if _state.signum is not None:
        _state.pending = False
        raise Interrupted(_state.signum)


def _initialising_extension(frame) -> bool:
    """Whether ``frame`` runs inside a C extension module's initialisation (or code it calls back)."""
    from importlib.machinery import ExtensionFileLoader

    while frame is not None:
        code = frame.f_code
        if (code.co_name in ("create_module", "exec_module") and code.co_filename.startswith("<frozen importlib")
                and isinstance(frame.f_locals.get("self"), ExtensionFileLoader)):
            return True
        frame = frame.f_back
    return False


def _poke_until_raised() -> None:
    """Re-deliver a deferred signal every 50 ms until the handler could raise it (or the command ended)."""
    while True:
        time.sleep(0.05)
        if not (_state.pending and _state.depth and _state.signum is not None):
            return
        _thread.interrupt_main(_state.signum)  # runs _handler in the main thread; a no-op once handlers are gone


def _handler(signum: int, frame) -> None:
    if _state.signum is None:
        _state.signum = signum  # the first signal decides the exit code
    # An exception raised while a C extension initialises breaks it ("ImportError: initialization
    # failed") or crashes the process (onnx's module, seen: SIGSEGV). So there the signal waits,
    # re-delivered until the initialisation is over (milliseconds to a second).
    deferred = _state.shield or _initialising_extension(frame)
    if deferred:
        if not _state.pending and not _state.shield:
            threading.Thread(target=_poke_until_raised, name="edgeqd-interrupt", daemon=True).start()
        _state.pending = True
        return
    _state.pending = False
    raise Interrupted(_state.signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Install the SIGINT/SIGTERM handler for the duration of a command; restore the old ones after.

    Re-entrant (only the outermost call installs and clears the flag), and a no-op
    outside the main thread, where Python cannot install signal handlers.

    >>> with handled():
    ...     received() is None
    True
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state.depth:
        _state.depth += 1
        try:
            yield
        finally:
            _state.depth -= 1
        return
    previous = {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS}
    _state.signum, _state.pending, _state.shield = None, False, 0
    for signum in HANDLED_SIGNALS:
        signal.signal(signum, _handler)
    _state.depth = 1
    try:
        yield
    finally:
        _state.depth = 0
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
        _state.signum, _state.pending = None, False


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Run a block (cleanup, a commit's renames) that a signal must not cut in half.

    A signal arriving inside is recorded; :class:`Interrupted` is raised when the
    block ends, unless an exception is already on its way out.

    >>> with shielded():
    ...     pass
    """
    _state.shield += 1
    try:
        yield
    except BaseException:
        _state.shield -= 1
        raise
    _state.shield -= 1
    if not _state.shield and _state.pending:
        _state.pending = False
        raise Interrupted(_state.signum)
