"""The device interface every transport implements, and the helpers they share.

A :class:`Device` opens a :class:`Session`: one connection (one multiplexed ssh
master, one adb serial, a local folder) with a private work folder on the device.
The session copies files there (``put``), runs commands with a timeout (``run``)
and removes the folder on close, also after a failure. :meth:`Device.run_job`
ships the runner, the artifact and the data slice, runs the runner and returns
its JSON document; every transport inherits it unchanged, so every device reports
the same schema.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence

from edgeqd.devices.registry import DEVICES
from edgeqd.errors import DeviceError, UsageError

RUNNER = Path(__file__).with_name("runner.py")


class DeviceRunError(DeviceError):
    """One run on a device failed (the row fails; other rows go on)."""


@dataclass
class Completed:
    """A finished command: exit status, output and duration.

    Attributes:
        returncode: the exit status (negative: killed by that signal; None: timed out).
        stdout: standard output, decoded.
        stderr: standard error, decoded.
        seconds: wall time.
        timed_out: whether the timeout ended it.
    """

    returncode: Optional[int]
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False


def run_process(argv: Sequence[str], timeout: float, env: Optional[dict] = None,
                stdin_path: Optional[Path] = None, cwd: Optional[str] = None,
                hold_stdin: bool = False) -> Completed:
    """Run ``argv`` (no shell) with a timeout; on timeout kill its whole process group.

    Args:
        argv: the command and its arguments.
        timeout: seconds before the process group is killed.
        env: environment (None = inherit).
        stdin_path: a file to feed on standard input (None = /dev/null).
        cwd: working folder.
        hold_stdin: keep an open, silent pipe on standard input until the command ends.
            Over ssh and adb the runner watches it: when the connection drops, its stdin
            reaches end-of-file and it stops and removes its work folder.

    >>> run_process(["true"], timeout=5).returncode
    0
    """
    started = time.monotonic()
    if hold_stdin:
        stdin = subprocess.PIPE
    else:
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    try:
        # A new session so that a timeout kills qemu/ssh/adb and everything they started.
        proc = subprocess.Popen(list(argv), stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True)
    except OSError as exc:
        if stdin_path and not hold_stdin:
            stdin.close()
        raise DeviceRunError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}

    def drain(stream, key):
        for block in iter(lambda: stream.read(65536), b""):
            chunks[key].append(block)

    readers = [threading.Thread(target=drain, args=(proc.stdout, "out"), daemon=True),
               threading.Thread(target=drain, args=(proc.stderr, "err"), daemon=True)]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.wait()
        timed_out = True
    finally:
        if hold_stdin:
            try:
                proc.stdin.close()
            except OSError:
                pass
        elif stdin_path:
            stdin.close()
    for reader in readers:
        reader.join(timeout=5)
    return Completed(None if timed_out else proc.returncode,
                     b"".join(chunks["out"]).decode("utf-8", "replace"),
                     b"".join(chunks["err"]).decode("utf-8", "replace"),
                     time.monotonic() - started, timed_out)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the process group of ``proc`` (started with start_new_session)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=3)
    except (ProcessLookupError, subprocess.TimeoutExpired, PermissionError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def tail(text: str, lines: int = 3, width: int = 300) -> str:
    """The last non-empty ``lines`` of ``text`` on one line, at most ``width`` characters.

    Args:
        text: command output.
        lines: how many lines to keep.
        width: how many characters to keep.

    >>> tail("a\\n\\nb\\nc\\n", lines=2)
    'b | c'
    """
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-width:]


@dataclass(frozen=True)
class Job:
    """One runner invocation: an artifact at a thread count with the timing settings.

    Attributes:
        artifact: the artifact on this machine.
        data: the ``.npz`` data slice on this machine, or None.
        threads: CPU threads.
        runs: minimum timed runs.
        warmup: warmup runs.
        min_seconds: minimum timed seconds.
        max_seconds: stop timing after this long even below ``runs``.
        xnnpack: whether LiteRT may use XNNPACK.
        timeout: seconds for the whole invocation on the device.
        profile: also take a per-op profile where the runtime offers one.
        label: the row's name for the artifact (its file name, or folder/name when two
            artifacts share a file name).
    """

    artifact: Path
    data: Optional[Path]
    threads: int = 1
    runs: int = 50
    warmup: int = 5
    min_seconds: float = 1.0
    max_seconds: float = 150.0
    xnnpack: bool = True
    timeout: float = 600.0
    profile: bool = False
    label: str = ""

    @property
    def name(self) -> str:
        """The row's name for the artifact."""
        return self.label or self.artifact.name


class Session:
    """A connection to a device with a private work folder there.

    Subclasses set ``python`` (argv prefix that starts Python on the device) and
    ``workdir``, and implement :meth:`put`, :meth:`run` and :meth:`close`.
    """

    python: list[str] = []
    workdir: str = ""
    # Remote sessions keep the runner's stdin open; its end means the connection is gone.
    holds_stdin: bool = False

    def __init__(self) -> None:
        self._shipped: dict[Path, str] = {}

    def put(self, local: Path, name: str) -> str:
        """Copy ``local`` into the work folder as ``name``; return its path on the device."""
        raise NotImplementedError

    def run(self, argv: Sequence[str], timeout: float) -> Completed:
        """Run ``argv`` on the device (each argument quoted for the remote shell where there is one)."""
        raise NotImplementedError

    def close(self) -> None:
        """Remove the work folder and end the connection; must not raise."""

    def ship(self, local: Path, name: Optional[str] = None) -> str:
        """Like :meth:`put`, but only once per file and session."""
        local = Path(local).resolve()
        if local not in self._shipped:
            self._shipped[local] = self.put(local, name or local.name)
        return self._shipped[local]

    def remote_join(self, name: str) -> str:
        """The device path of ``name`` inside the work folder (POSIX paths on every device)."""
        return self.workdir.rstrip("/") + "/" + name

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Device:
    """A place to measure artifacts. Subclasses register with ``@register_device("kind")``.

    Args:
        spec: the device spec as the user wrote it ("local", "ssh://pi@raspberrypi").
        name: a display name (a devices file's ``name``); defaults to ``spec``.
        options: kind-specific, validated settings (``python``, ``ssh_config``, …).

    Class attributes:
        kind: the registered name.
        emulated: latency measured here is not a device latency.
        shares_host: runs on this machine's CPU, so it never runs concurrently with
            another device that does (their latencies would disturb each other).
        option_names: the keys a devices file may give for this kind.
        single_threaded: runs one thread whatever ``--threads`` says, so bench gives it one row per artifact.
    """

    kind: ClassVar[str] = ""
    emulated: ClassVar[bool] = False
    shares_host: ClassVar[bool] = False
    option_names: ClassVar[frozenset[str]] = frozenset()
    description: ClassVar[str] = ""
    latency_note: ClassVar[str] = ""  # what an emulated kind's latency is instead ("" = the emulated note)
    single_threaded: ClassVar[bool] = False  # runs one thread whatever --threads says (TFLM)

    def __init__(self, spec: str, name: Optional[str] = None, options: Optional[dict] = None) -> None:
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            raise UsageError(f"device {spec}: unknown option(s) {', '.join(unknown)}; "
                             f"{self.kind} accepts {', '.join(sorted(self.option_names)) or 'none'}")
        self.spec = spec
        self.name = name or spec
        self.options = options
        # Progress lines (a sysroot being built on first use); bench() points this at its log.
        self.log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)

    @classmethod
    def matches(cls, spec: str) -> bool:
        """Whether ``spec`` names this kind (the default: the spec is the kind's name)."""
        return spec == cls.kind

    def open(self) -> Session:
        """Connect and create the work folder; raise :class:`DeviceError` when that fails."""
        raise NotImplementedError

    def setup(self, force: bool = False) -> str:
        """Make the device ready (build a sysroot, install a runtime); return what was done.

        Args:
            force: redo it even when the device is ready (rebuild a cached sysroot).
        """
        return f"{self.name}: nothing to set up"

    def probe(self, timeout: float = 120.0) -> dict:
        """What the device offers: identity, Python, runtimes (the runner's ``--probe``).

        Args:
            timeout: seconds for the whole probe (a finite number > 0).
        """
        if not 0 < timeout < math.inf:  # NaN fails too
            raise UsageError(f"--timeout must be a finite number of seconds > 0, got {timeout}")
        with self.open() as session:
            runner = session.ship(RUNNER)
            done = session.run(session.python + [runner, "--probe"], timeout=timeout)
            return parse_runner_output(done, self.name)

    def run_job(self, session: Session, job: Job) -> dict:
        """Ship the runner, the artifact and the data, run the runner, return its JSON document.

        Args:
            session: an open session on this device.
            job: what to run.
        """
        runner = session.ship(RUNNER)
        model = session.ship(job.artifact)
        argv = session.python + [runner, "--model", model, "--threads", str(job.threads),
                                 "--runs", str(job.runs), "--warmup", str(job.warmup),
                                 "--min-seconds", repr(float(job.min_seconds)),
                                 "--max-seconds", repr(float(job.max_seconds)),
                                 # If the connection drops, the runner removes the work folder itself.
                                 "--cleanup-on-signal", session.workdir]
        if job.data is not None:
            argv += ["--data", session.ship(job.data)]
        if not job.xnnpack:
            argv.append("--no-xnnpack")
        if job.profile:
            argv.append("--profile")
        if session.holds_stdin:
            argv.append("--watch-stdin")
        argv += self.runner_args()
        done = session.run(argv, timeout=job.timeout)
        return parse_runner_output(done, self.name)

    def runner_args(self) -> list[str]:
        """Extra runner arguments of this kind (``tflm``: ``--runtime tflm``)."""
        return []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def parse_runner_output(done: Completed, device: str) -> dict:
    """The runner's JSON document from a finished command, or :class:`DeviceRunError` saying why not.

    Args:
        done: the finished runner command.
        device: the device's name, for messages.

    >>> parse_runner_output(Completed(0, '{"ok": true}', "", 0.1), "local")
    {'ok': True}
    """
    if done.timed_out:
        raise DeviceRunError(f"{device}: timed out after {done.seconds:.0f} s; stderr: {tail(done.stderr)}")
    document = None
    for line in reversed(done.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                document = json.loads(line)
                break
            except ValueError:
                continue
    if document is None:
        code = done.returncode
        how = f"exit {code}"
        if code is not None and code < 0:
            how = f"killed by signal {-code} ({signal.Signals(-code).name})" if -code in \
                signal.valid_signals() else f"killed by signal {-code}"
        elif code is not None and code > 128 and code - 128 in signal.valid_signals():
            how = f"exit {code} (signal {signal.Signals(code - 128).name})"
        raise DeviceRunError(f"{device}: runner gave no result ({how}); "
                             f"{tail(done.stderr) or tail(done.stdout) or 'no output'}")
    if not document.get("ok"):
        raise DeviceRunError(f"{device}: {document.get('error', 'runner failed')}")
    return document


def device_from_spec(spec: str, name: Optional[str] = None, options: Optional[dict] = None) -> Device:
    """Build the device a spec names: ``local``, ``qemu-aarch64``, ``ssh://pi@host``, ``adb:SERIAL``.

    Args:
        spec: the device spec.
        name: display name (defaults to the spec).
        options: kind-specific settings from a devices file.

    >>> device_from_spec("local").kind
    'local'
    """
    for cls in DEVICES.values():
        if cls.matches(spec):
            return cls(spec, name=name, options=options)
    raise UsageError(f"unknown device {spec!r}; give one of: local, qemu-aarch64, qemu-armv7, "
                     f"ssh://[user@]host[:port], adb[:SERIAL] (registered kinds: {', '.join(sorted(DEVICES))})")
