"""``ssh://[user@]host[:port]``: a Raspberry Pi or any Linux board over OpenSSH.

edgeqd drives the system ``ssh`` client, so the user's ``~/.ssh/config``, keys,
agent and host-key checking apply unchanged (``BatchMode=yes``: a password prompt
or an unknown host key fails the row instead of hanging). One multiplexed master
connection (``ControlMaster``) carries every command of a run. Each remote
command is one string built with :func:`shlex.quote`, files travel as
``cat > 'quoted path'`` over that connection (no scp/sftp needed on the board), and
the run's folder from ``mktemp -d`` is removed at the end — also after a failure,
over a fresh connection if the first one dropped; the runner itself removes it
when the connection drops mid-run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlsplit

from edgeqd.devices.registry import register_device
from edgeqd.devices.base import RUNNER, Completed, Device, DeviceRunError, Session, run_process, tail
from edgeqd.errors import DeviceError, UsageError

SSH_CONNECT_TIMEOUT = 10
_CONTROL_TIMEOUT = 30


def parse_ssh_spec(spec: str) -> tuple[Optional[str], str, Optional[int]]:
    """Split ``ssh://[user@]host[:port]`` into (user, host, port).

    Args:
        spec: the device spec.

    >>> parse_ssh_spec("ssh://pi@raspberrypi.local:2222")
    ('pi', 'raspberrypi.local', 2222)
    """
    try:
        parts = urlsplit(spec)
    except ValueError:  # e.g. "Invalid IPv6 URL" for an unbalanced [
        raise UsageError(f"bad ssh device {spec!r}: write ssh://[user@]host[:port]") from None
    if parts.scheme != "ssh" or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(f"bad ssh device {spec!r}: write ssh://[user@]host[:port]")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"bad ssh device {spec!r}: the port must be a number from 1 to 65535") from None
    host = parts.hostname
    if not host or host.startswith("-"):
        raise UsageError(f"bad ssh device {spec!r}: no host name")
    user = parts.username
    if user is not None and (not user or user.startswith("-")):
        raise UsageError(f"bad ssh device {spec!r}: bad user name")
    return user, host, port


class SshSession(Session):
    """One ControlMaster connection and a ``mktemp -d`` folder on the board.

    Args:
        device: the :class:`SshDevice`.
    """

    holds_stdin = True

    def __init__(self, device: "SshDevice") -> None:
        super().__init__()
        self.device = device
        self.python = shlex.split(device.options.get("python", "python3"))
        # Unix socket paths are limited to ~100 bytes: keep the folder short.
        self._socket_dir = tempfile.mkdtemp(prefix="eqssh-", dir="/tmp" if os.path.isdir("/tmp") else None)
        self.control_path = os.path.join(self._socket_dir, "m")
        self._master: Optional[subprocess.Popen] = None
        try:
            self._start_master()
            parent = device.options.get("workdir_parent")
            template = (shlex.quote(parent.rstrip("/") + "/edgeqd.XXXXXXXX") if parent
                        else '"${TMPDIR:-/tmp}/edgeqd.XXXXXXXX"')
            done = self.shell(f"mktemp -d {template}", timeout=_CONTROL_TIMEOUT)
            if done.returncode != 0 or not done.stdout.strip():
                raise DeviceError(f"{device.name}: cannot create a work folder (mktemp exit "
                                  f"{done.returncode}): {tail(done.stderr)}")
            self.workdir = done.stdout.strip().splitlines()[-1]
        except BaseException:
            self._stop_master()
            raise

    # ---------------------------------------------------------------- connection

    def _start_master(self) -> None:
        argv = self.device.ssh_argv(self.control_path, master=True)
        self._master = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + self.device.connect_timeout + 5
        while time.monotonic() < deadline:
            if self._master.poll() is not None:
                error = self._master.stderr.read().decode("utf-8", "replace")
                raise DeviceError(f"{self.device.name}: ssh connection failed (exit "
                                  f"{self._master.returncode}): {tail(error) or 'no message'}")
            check = run_process(self._control("check"), timeout=5)
            if check.returncode == 0:
                return
            time.sleep(0.1)
        self._stop_master()
        raise DeviceError(f"{self.device.name}: ssh connection not up after "
                          f"{self.device.connect_timeout + 5} s")

    def _stop_master(self) -> None:
        if self._master is not None:
            if self._master.poll() is None:
                run_process(self._control("exit"), timeout=10)
                try:
                    self._master.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._master.kill()
                    self._master.wait()
            if self._master.stderr:
                self._master.stderr.close()
            self._master = None
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def _control(self, operation: str) -> list[str]:
        """``ssh -O operation`` for the master (argv without the trailing ``-- host``)."""
        return self.device.ssh_argv(self.control_path)[:-2] + ["-O", operation, "--", self.device.host]

    def connected(self) -> bool:
        """Whether the master connection is still up."""
        return self._master is not None and self._master.poll() is None

    # ---------------------------------------------------------------- commands

    def shell(self, command: str, timeout: float, stdin_path: Optional[Path] = None,
              hold_stdin: bool = False) -> Completed:
        """Run one remote shell command string (already quoted) over the master connection.

        Args:
            command: the remote command line; every variable part must be :func:`shlex.quote`-d.
            timeout: seconds before the local ssh client (and so the channel) is killed.
            stdin_path: a local file to stream to the command's stdin.
            hold_stdin: keep stdin open and silent until the command ends.
        """
        if not self.connected():
            raise DeviceRunError(f"{self.device.name}: ssh connection lost")
        done = run_process(self.device.ssh_argv(self.control_path) + [command], timeout=timeout,
                           stdin_path=stdin_path, hold_stdin=hold_stdin)
        if done.returncode == 255 and not self.connected():
            raise DeviceRunError(f"{self.device.name}: ssh connection lost during the run "
                                 f"({tail(done.stderr) or 'exit 255'})")
        return done

    def put(self, local: Path, name: str) -> str:
        target = self.remote_join(name)
        done = self.shell(f"cat > {shlex.quote(target)}", timeout=_CONTROL_TIMEOUT + local.stat().st_size / 1e6,
                          stdin_path=local)
        if done.timed_out or done.returncode != 0:
            raise DeviceRunError(f"{self.device.name}: copying {local.name} failed "
                                 f"(exit {done.returncode}): {tail(done.stderr)}")
        return target

    def run(self, argv: Sequence[str], timeout: float) -> Completed:
        command = "cd " + shlex.quote(self.workdir) + " && " + " ".join(shlex.quote(a) for a in argv)
        return self.shell(command, timeout=timeout, hold_stdin=True)

    def close(self) -> None:
        remove = f"rm -rf -- {shlex.quote(self.workdir)}" if self.workdir else ""
        try:
            if remove and self.connected():
                self.shell(remove, timeout=_CONTROL_TIMEOUT)
            elif remove:
                # The master died mid-run: one fresh, unmultiplexed connection to clean up.
                run_process(self.device.ssh_argv(None) + [remove], timeout=_CONTROL_TIMEOUT)
        except DeviceError:
            pass
        finally:
            self._stop_master()


@register_device("ssh")
class SshDevice(Device):
    """A Linux board reachable with ``ssh``; Python 3 and numpy on it, the runtime installable.

    >>> SshDevice("ssh://pi@raspberrypi.local").host
    'raspberrypi.local'
    """

    option_names = frozenset({"python", "ssh_config", "identity_file", "workdir_parent",
                              "connect_timeout", "ssh_options"})
    description = "ssh://[user@]host[:port] — a Raspberry Pi or Linux board over OpenSSH"

    def __init__(self, spec: str, name: Optional[str] = None, options: Optional[dict] = None) -> None:
        super().__init__(spec, name, options)
        self.user, self.host, self.port = parse_ssh_spec(spec)
        try:
            self.connect_timeout = int(self.options.get("connect_timeout", SSH_CONNECT_TIMEOUT))
        except (TypeError, ValueError):
            raise UsageError(f"{spec}: connect_timeout must be whole seconds") from None
        extra = self.options.get("ssh_options", [])
        if not isinstance(extra, list) or not all(isinstance(o, str) and "=" in o for o in extra):
            raise UsageError(f"{spec}: ssh_options must be a list of Key=Value ssh options")

    @classmethod
    def matches(cls, spec: str) -> bool:
        return spec.startswith("ssh://")

    def ssh_argv(self, control_path: Optional[str], master: bool = False) -> list[str]:
        """The ``ssh`` command line up to and including the host.

        Args:
            control_path: the multiplexing socket (None: a plain connection).
            master: start the master connection (``-N``) instead of using it.
        """
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                # A board that stops answering is noticed within ~15 s, not at the TCP timeout.
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        config = self.options.get("ssh_config") or os.environ.get("EDGEQD_SSH_CONFIG")
        if config:
            argv += ["-F", os.path.expanduser(str(config))]
        if self.options.get("identity_file"):
            argv += ["-i", os.path.expanduser(str(self.options["identity_file"]))]
        for option in self.options.get("ssh_options", []):
            argv += ["-o", option]
        if control_path is None:
            argv += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
        elif master:
            argv += ["-o", "ControlMaster=yes", "-o", f"ControlPath={control_path}",
                     "-o", "ControlPersist=no", "-N"]
        else:
            argv += ["-o", "ControlMaster=no", "-o", f"ControlPath={control_path}"]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.user:
            argv += ["-l", self.user]
        # "--" ends ssh's options: a host can never be read as one.
        return argv + ["--", self.host]

    def open(self) -> SshSession:
        if not shutil.which("ssh"):
            raise DeviceError("the ssh client is not installed (Debian: apt-get install openssh-client)")
        return SshSession(self)

    def setup(self, force: bool = False) -> str:
        """Check Python on the board and install the runtime with ``pip --user`` when missing.

        Args:
            force: unused: a board's runtime is checked every time.
        """
        with self.open() as session:
            runner = session.ship(RUNNER)
            probe = session.run(session.python + [runner, "--probe"], timeout=120)
            if probe.returncode != 0:
                raise DeviceError(f"{self.name}: {' '.join(session.python)} does not run the probe "
                                  f"(exit {probe.returncode}): {tail(probe.stderr) or 'is Python 3 installed?'}")
            from edgeqd.devices.base import parse_runner_output

            runtimes = parse_runner_output(probe, self.name).get("runtimes", {})
            if "ai_edge_litert" in runtimes or "tflite_runtime" in runtimes:
                return f"{self.name}: ready ({', '.join(f'{k} {v}' for k, v in runtimes.items())})"
            attempts = []
            for package in ("ai-edge-litert", "tflite-runtime"):
                done = session.run(session.python + ["-m", "pip", "install", "--user", "--quiet",
                                                     package], timeout=900)
                if done.returncode == 0:
                    return f"{self.name}: installed {package} with pip --user"
                attempts.append(f"{package}: exit {done.returncode} {tail(done.stderr, 1)}")
            raise DeviceError(f"{self.name}: could not install a TFLite runtime with pip --user "
                              f"({'; '.join(attempts)})")
