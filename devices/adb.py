"""``adb[:SERIAL]``: an Android phone or emulator over the Android Debug Bridge.

Android has no Python, so with ``--benchmark-binary`` edgeqd pushes TFLite's native
``benchmark_model`` and the artifact, runs the tool and parses its output into the
same schema (latency and memory; it feeds random inputs, so no accuracy). Without
a binary it runs the Python runner, for devices that have Python (Termux: give
``python`` in the devices file). Files go with ``adb push`` into a ``mktemp -d``
folder under ``/data/local/tmp`` that is removed at the end, also after a failure.
Every shell command is one string built with :func:`shlex.quote` (``adb shell``
hands its arguments to the device's ``sh``); its exit status is read from a marker
line, so devices without adb's shell protocol v2 report it too.

The adb server is the user's: ``ANDROID_ADB_SERVER_PORT`` / ``ADB_SERVER_SOCKET``
choose it as for ``adb`` itself. When no server answers there before edgeqd's first
session, the adb client starts one (a daemon that outlives the run); edgeqd then
stops it with ``adb kill-server`` once its last session on it closes. A server that
was already running (the user's) is left alone.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import threading
from pathlib import Path
from typing import Optional, Sequence

from edgeqd.devices.registry import register_device
from edgeqd.devices.base import Completed, Device, DeviceRunError, Job, Session, run_process, tail
from edgeqd.devices.benchmark_model import BenchmarkModelOutputError, parse_benchmark_model_output
from edgeqd.errors import DeviceError, UsageError

_CONTROL_TIMEOUT = 30
_EXIT_MARKER = "__EDGEQD_EXIT__="
_SERIAL = re.compile(r"^[A-Za-z0-9._:\-\[\]]+$")

# adb servers this process uses: address → open sessions; and those it caused to start.
_SERVER_LOCK = threading.Lock()
_SERVER_SESSIONS: dict[tuple[str, int], int] = {}
_SERVERS_STARTED: set[tuple[str, int]] = set()


def adb_server_address(environ: Optional[dict] = None) -> Optional[tuple[str, int]]:
    """The TCP address the adb client will use for its server, as ``adb`` itself reads it.

    Args:
        environ: the environment (None = this process's).

    Returns:
        (host, port), or None for a server address edgeqd does not judge (not TCP, malformed).

    >>> adb_server_address({})
    ('localhost', 5037)
    >>> adb_server_address({"ADB_SERVER_SOCKET": "tcp:10.0.0.2:5038"})
    ('10.0.0.2', 5038)
    """
    environ = os.environ if environ is None else environ
    spec = environ.get("ADB_SERVER_SOCKET")
    if spec:
        if not spec.startswith("tcp:"):
            return None
        host, _, port = spec[4:].rpartition(":")
        host = host or "localhost"
    else:
        host, port = "localhost", environ.get("ANDROID_ADB_SERVER_PORT") or "5037"
    return (host, int(port)) if port.isdigit() and 0 < int(port) < 65536 else None


def adb_server_running(address: tuple[str, int]) -> bool:
    """Whether an adb server accepts connections at ``address`` (without starting one).

    Args:
        address: (host, port) from :func:`adb_server_address`.
    """
    try:
        with socket.create_connection(address, timeout=2):
            return True
    except OSError:
        return False


def _claim_server() -> Optional[tuple[str, int]]:
    """Count a new session on the adb server; note whether edgeqd is about to start it."""
    address = adb_server_address()
    if address is None:
        return None
    with _SERVER_LOCK:
        if not _SERVER_SESSIONS.get(address) and not adb_server_running(address):
            _SERVERS_STARTED.add(address)  # the next adb call starts it: it is edgeqd's to stop
        _SERVER_SESSIONS[address] = _SERVER_SESSIONS.get(address, 0) + 1
    return address


def _release_server(address: Optional[tuple[str, int]], adb: str) -> None:
    """End a session's claim; stop the server after the last one if edgeqd started it."""
    if address is None:
        return
    with _SERVER_LOCK:
        _SERVER_SESSIONS[address] -= 1
        if _SERVER_SESSIONS[address] > 0:
            return
        del _SERVER_SESSIONS[address]
        if address in _SERVERS_STARTED:
            _SERVERS_STARTED.discard(address)
            try:
                run_process([adb, "kill-server"], timeout=_CONTROL_TIMEOUT)
            except DeviceError:  # adb vanished meanwhile: nothing edgeqd can stop
                pass


class AdbSession(Session):
    """``adb -s SERIAL`` with a work folder under ``/data/local/tmp``.

    Args:
        device: the :class:`AdbDevice`.
    """

    holds_stdin = True

    def __init__(self, device: "AdbDevice") -> None:
        super().__init__()
        self.device = device
        self.python = shlex.split(device.options.get("python", "python3"))
        self._server = _claim_server()
        try:
            self._start()
        except BaseException:
            _release_server(self._server, device.options.get("adb", "adb"))
            self._server = None
            raise

    def _start(self) -> None:
        device = self.device
        state = run_process(device.adb_argv() + ["get-state"], timeout=_CONTROL_TIMEOUT)
        if state.timed_out or state.returncode != 0 or state.stdout.strip() != "device":
            raise DeviceError(f"{device.name}: adb device not available (get-state: "
                              f"{state.stdout.strip() or 'exit ' + str(state.returncode)}): "
                              f"{tail(state.stderr) or 'is it connected and authorised?'}")
        parent = device.options.get("workdir_parent", "/data/local/tmp")
        done = self.shell(f"mktemp -d {shlex.quote(parent.rstrip('/') + '/edgeqd.XXXXXXXX')}",
                          timeout=_CONTROL_TIMEOUT)
        if done.returncode != 0 or not done.stdout.strip():
            raise DeviceError(f"{device.name}: cannot create a work folder under {parent} "
                              f"(exit {done.returncode}): {tail(done.stderr or done.stdout)}")
        self.workdir = done.stdout.strip().splitlines()[-1]

    def shell(self, command: str, timeout: float, hold_stdin: bool = False) -> Completed:
        """Run one device shell command line (every variable part already quoted).

        Args:
            command: the command line for the device's ``sh``.
            timeout: seconds before the adb client is killed.
            hold_stdin: keep stdin open and silent until the command ends.
        """
        # The marker carries the exit status on devices whose adbd lacks shell protocol v2.
        wrapped = f"( {command} ); echo {_EXIT_MARKER}$?"
        done = run_process(self.device.adb_argv() + ["shell", wrapped], timeout=timeout,
                           hold_stdin=hold_stdin)
        if done.timed_out:
            return done
        lines = done.stdout.rstrip("\r\n").split("\n")
        if lines and lines[-1].strip().startswith(_EXIT_MARKER):
            code = lines.pop().strip()[len(_EXIT_MARKER):]
            done.returncode = int(code) if code.isdigit() else done.returncode
            done.stdout = "\n".join(lines) + ("\n" if lines else "")
        elif done.returncode == 0:
            # No marker: the adb connection ended before the command did.
            done.returncode = 255
            done.stderr += "\nadb connection lost before the command finished"
        return done

    def put(self, local: Path, name: str) -> str:
        target = self.remote_join(name)
        # adb push sends the path over the sync protocol, not through a shell: no quoting.
        done = run_process(self.device.adb_argv() + ["push", str(local), target],
                           timeout=_CONTROL_TIMEOUT + local.stat().st_size / 1e6)
        if done.timed_out or done.returncode != 0:
            raise DeviceRunError(f"{self.device.name}: adb push {local.name} failed "
                                 f"(exit {done.returncode}): {tail(done.stderr or done.stdout)}")
        return target

    def run(self, argv: Sequence[str], timeout: float) -> Completed:
        command = "cd " + shlex.quote(self.workdir) + " && " + " ".join(shlex.quote(a) for a in argv)
        return self.shell(command, timeout=timeout, hold_stdin=True)

    def close(self) -> None:
        try:
            if self.workdir:
                try:
                    self.shell(f"rm -rf -- {shlex.quote(self.workdir)}", timeout=_CONTROL_TIMEOUT)
                except DeviceError:
                    pass
        finally:
            server, self._server = self._server, None  # close may run twice: release once
            _release_server(server, self.device.options.get("adb", "adb"))


@register_device("adb")
class AdbDevice(Device):
    """An Android device: ``adb`` (the default device) or ``adb:SERIAL`` (``adb devices`` lists them).

    >>> AdbDevice("adb:emulator-5554").serial
    'emulator-5554'
    """

    option_names = frozenset({"python", "benchmark_binary", "workdir_parent", "adb"})
    description = "adb[:SERIAL] — an Android phone or emulator (benchmark_model, or Python in Termux)"

    def __init__(self, spec: str, name: Optional[str] = None, options: Optional[dict] = None) -> None:
        super().__init__(spec, name, options)
        self.serial = spec[4:] if spec.startswith("adb:") else None
        if self.serial is not None and not _SERIAL.match(self.serial):
            raise UsageError(f"bad adb device {spec!r}: the serial may hold letters, digits and . _ : - "
                             f"(see `adb devices`)")

    @classmethod
    def matches(cls, spec: str) -> bool:
        return spec == "adb" or spec.startswith("adb:")

    def adb_argv(self) -> list[str]:
        """``adb`` with ``-s SERIAL`` when a serial was given."""
        argv = [self.options.get("adb", "adb")]
        return argv + (["-s", self.serial] if self.serial else [])

    def open(self) -> AdbSession:
        if not shutil.which(self.options.get("adb", "adb")):
            raise DeviceError("adb is not installed (Debian: apt-get install adb; or Android's platform-tools)")
        return AdbSession(self)

    def run_job(self, session: Session, job: Job) -> dict:
        binary = self.options.get("benchmark_binary")
        if not binary or job.artifact.suffix != ".tflite":
            return super().run_job(session, job)
        return self._run_benchmark_model(session, Path(binary), job)

    def _run_benchmark_model(self, session: Session, binary: Path, job: Job) -> dict:
        tool = session.ship(binary, "benchmark_model")
        model = session.ship(job.artifact)
        chmod = session.shell(f"chmod 755 {shlex.quote(tool)}", timeout=_CONTROL_TIMEOUT)
        if chmod.returncode != 0:
            raise DeviceRunError(f"{self.name}: chmod of benchmark_model failed: {tail(chmod.stderr)}")
        argv = [tool, f"--graph={model}", f"--num_threads={job.threads}", f"--num_runs={job.runs}",
                f"--warmup_runs={max(1, job.warmup)}", f"--min_secs={job.min_seconds}",
                f"--max_secs={job.max_seconds}", f"--use_xnnpack={'true' if job.xnnpack else 'false'}"]
        if job.profile:
            argv.append("--enable_op_profiling=true")
        done = session.run(argv, timeout=job.timeout)
        if done.timed_out:
            raise DeviceRunError(f"{self.name}: benchmark_model timed out after {done.seconds:.0f} s")
        try:
            parsed = parse_benchmark_model_output(done.stdout + "\n" + done.stderr)
        except BenchmarkModelOutputError as exc:
            raise DeviceRunError(f"{self.name}: {exc} (exit {done.returncode})") from None
        if done.returncode != 0:
            raise DeviceRunError(f"{self.name}: benchmark_model exit {done.returncode}: {tail(done.stderr)}")
        info = self._identity(session)
        return {"ok": True, "runtime": {"name": "benchmark_model", "version": ""},
                "threads": parsed["threads"] or job.threads, "xnnpack": parsed["xnnpack"],
                "timings_ms": parsed["timings_ms"], "memory_mb": parsed["memory_mb"],
                "artifact": {"file": job.artifact.name, "bytes": job.artifact.stat().st_size},
                # benchmark_model feeds random inputs: no accuracy from this path.
                "quality": None, "device": info, "profile": parsed["profile"],
                "benchmark_model_output": done.stdout[-4000:]}

    def _identity(self, session: Session) -> dict:
        keys = ("ro.product.model", "ro.build.version.release", "ro.product.cpu.abi", "ro.soc.model")
        command = "; ".join(f"echo \"{key}=$(getprop {key} 2>/dev/null)\"" for key in keys)
        command += "; echo \"machine=$(uname -m)\"; echo \"cores=$(nproc 2>/dev/null)\""
        done = session.shell(command, timeout=_CONTROL_TIMEOUT)
        values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        cores = values.get("cores", "")
        return {"machine": values.get("machine", ""), "cpu": values.get("ro.soc.model", ""),
                "android_model": values.get("ro.product.model", ""),
                "os": ("Android " + values["ro.build.version.release"])
                if values.get("ro.build.version.release") else "",
                "abi": values.get("ro.product.cpu.abi", ""),
                "cores": int(cores) if cores.isdigit() else None, "emulated": False}
