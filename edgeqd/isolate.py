"""Run the stages that can die in native code in a child process, so that a crash is a message, not silence.

TensorFlow can kill the whole process from C++: oneDNN's AVX-512 weight-gradient kernel
corrupted the heap while training fer's mini-Xception (SIGSEGV/SIGABRT; see
:mod:`edgeqd`), and TFLite's calibrator segfaults on GRU/SimpleRNN while loops. No
Python ``except`` sees that. So the pipeline runs QAT training and TFLite calibration in
a :class:`Worker`: one child Python process per run, started once (its TensorFlow import
is the cost, ~3 s of CPU) and reused by every stage. A stage that crashes the child raises
:class:`~edgeqd.errors.NativeCrashError` naming the stage and the signal ("QAT training
crashed in native code (SIGSEGV)"): a failed row for a converter, one ``error:`` line for
training. The next call starts a fresh child.

The child is a plain ``python -c`` process talking over a socket pair (not
``multiprocessing``'s "spawn", which re-imports the parent's ``__main__`` — for
``python -m edgeqd`` that would run the command again). Functions are sent by reference
(they must be importable module-level functions), arguments and results by pickle
(numpy arrays, settings, bytes). Exceptions come back with their type.

Interrupts: the child ignores SIGINT (a terminal's Ctrl-C reaches the whole process
group); the parent's handler (:mod:`edgeqd.interrupts`) interrupts the wait, the child is
killed, and the run ends with 130/143 as usual. A child whose parent dies is killed
by the kernel (``PR_SET_PDEATHSIG``) or, failing that, notices within a second.

>>> with Worker() as worker:  # doctest: +SKIP
...     worker.call("TFLite int8 calibration", convert_saved_model, export_dir, options, samples)
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable, Optional

from edgeqd.errors import NativeCrashError

__all__ = ["Worker", "describe_exit"]

# What to try when TensorFlow dies natively; the stage's caller may add its own hint.
DEFAULT_HINT = ("TensorFlow died in native code, not in edgeqd; retry with TF_ENABLE_ONEDNN_OPTS=0, "
                "and please report it with the model")
# How often the parent checks that the child is still alive while it waits for an answer.
POLL_SECONDS = 0.2


def describe_exit(returncode: Optional[int]) -> str:
    """How a child process ended, in words: a signal's name or an exit status.

    Args:
        returncode: ``Popen.returncode`` (negative: killed by that signal).

    >>> describe_exit(-11), describe_exit(3)
    ('SIGSEGV', 'exit status 3')
    """
    if returncode is None:
        return "unknown"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return name + (" — out of memory?" if -returncode == signal.SIGKILL else "")
    return f"exit status {returncode}"


class Worker:
    """One child process that runs functions for the parent and may die without taking it along.

    Use it as a context manager (the child is stopped at the end); it starts on the
    first :meth:`call` (or :meth:`start`, to overlap its TensorFlow import with other work).

    Args:
        preload: modules the child imports as soon as it starts.
    """

    def __init__(self, preload: tuple[str, ...] = ("tensorflow",)):
        self.preload = preload
        self._process: Optional[subprocess.Popen] = None
        self._connection: Optional[Connection] = None
        self.starts = 0  # how many children were started (a crash means a restart)

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close(kill=exc_info[0] is not None)

    @property
    def alive(self) -> bool:
        """Whether a child is running."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the child now (no-op when one is running)."""
        if self.alive:
            return
        self.close(kill=True)
        ours, theirs = socket.socketpair()
        code = f"import edgeqd.isolate as i; i._child_main({theirs.fileno()}, {os.getpid()}, {self.preload!r})"
        # The child's stdout goes to our stderr: --json output on stdout must stay clean.
        self._process = subprocess.Popen([sys.executable, "-c", code], pass_fds=(theirs.fileno(),),
                                         stdin=subprocess.DEVNULL, stdout=2, close_fds=True)
        theirs.close()
        self._connection = Connection(ours.detach())
        self._connection.send(list(sys.path))  # so that functions defined where the parent looks resolve
        self.starts += 1

    def call(self, stage: str, fn: Callable, *args: Any, progress: Optional[Callable] = None,
             hint: str = DEFAULT_HINT, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in the child and return its result (or raise its exception).

        Args:
            stage: what runs, for the crash message ("QAT training").
            fn: an importable module-level function.
            *args: its positional arguments (picklable).
            progress: a ``progress(step, done, total)`` callback; the child's ``fn`` gets a
                ``progress`` keyword that forwards to it.
            hint: what to try after a native crash.
            **kwargs: its keyword arguments (picklable).

        Raises:
            NativeCrashError: the child died while running ``fn``.
        """
        self.start()
        answer = None
        try:
            self._connection.send((fn, args, kwargs, progress is not None))
            while answer is None:
                if self._connection.poll(POLL_SECONDS):
                    answer = self._connection.recv()
                    if answer[0] == "progress":
                        progress(*answer[1:])
                        answer = None
                elif self._process.poll() is not None:
                    break
        except (EOFError, ConnectionError):
            pass  # the child is gone: described below
        except BaseException:  # an interrupt (or our own bug) while it runs: it must not outlive us
            self.close(kill=True)
            raise
        if answer is not None:
            if answer[0] == "ok":
                return answer[1]
            raise _rebuild_exception(*answer[1:])  # the child lives on: it was an exception, not a crash
        returncode = self._process.wait()
        self.close(kill=True)
        raise NativeCrashError(f"{stage} crashed in native code ({describe_exit(returncode)}) in edgeqd's "
                               f"child process; {hint}")

    def close(self, kill: bool = False) -> None:
        """Stop the child: ask it to leave (or kill it), and reap it.

        Args:
            kill: kill it at once instead of asking.
        """
        process, connection = self._process, self._connection
        self._process = self._connection = None
        if connection is not None:
            try:
                if not kill and process is not None and process.poll() is None:
                    connection.send(None)
            except OSError:
                pass
            connection.close()
        if process is None:
            return
        try:
            process.wait(timeout=0 if kill else 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _rebuild_exception(module: str, name: str, message: str, pickled: Optional[bytes], child_traceback: str):
    """The child's exception as the parent raises it: the same class where it can be rebuilt."""
    exc = None
    if pickled is not None:
        try:
            exc = pickle.loads(pickled)
        except Exception:
            exc = None
    if exc is None:
        exc = RuntimeError(f"{name}: {message}")
    exc.add_note(f"raised in edgeqd's child process ({module}.{name}):\n{child_traceback}")
    return exc


# --------------------------------------------------------------------------- the child

def _watch_parent(parent_pid: int) -> None:
    """End the child when its parent is gone (where the kernel's death signal is unavailable)."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG: killed when the parent thread ends
    except (OSError, AttributeError):
        pass


def _child_main(fd: int, parent_pid: int, preload: tuple[str, ...]) -> None:
    """The child's loop: receive (function, args, kwargs), send back ("ok", result) or the exception."""
    import faulthandler
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt means
    _die_with_parent()
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="edgeqd-parent-watch", daemon=True).start()
    faulthandler.enable()  # a native crash leaves its stack in the (captured) native log
    connection = Connection(fd)
    sys.path[:] = connection.recv()
    import edgeqd  # noqa: F401  (the environment settings before TensorFlow)

    for module in preload:
        importlib.import_module(module)
    while True:
        try:
            message = connection.recv()
        except EOFError:
            return
        if message is None:
            return
        fn, args, kwargs, wants_progress = message
        if wants_progress:
            kwargs["progress"] = lambda step, done, total: connection.send(("progress", step, done, total))
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # sent back, raised there
            try:
                pickled = pickle.dumps(exc)
            except Exception:
                pickled = None
            connection.send(("error", type(exc).__module__, type(exc).__qualname__,
                             (str(exc).strip().splitlines() or [""])[0], pickled, traceback.format_exc()))
            continue
        connection.send(("ok", result))
