"""Fixtures of the device tests: tiny real models, the qemu sysroot, an sshd and an adb fixture.

Everything is real: TensorFlow's converter and tf2onnx build the models, qemu-user
runs the ARM sysroot, Debian's openssh-server and adb client carry the transports.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from models_for_tests import build_models  # noqa: E402


@pytest.fixture(scope="session")
def dataset():
    from edgeqd.data import load_dataset

    return load_dataset("fashion-mnist")


@pytest.fixture(scope="session")
def models(tmp_path_factory, dataset) -> dict[str, Path]:
    """model_fp32/int8 .tflite and .onnx of a tiny CNN trained briefly on Fashion-MNIST."""
    return build_models(tmp_path_factory.mktemp("models"), dataset.x_train, dataset.y_train)


@pytest.fixture(scope="session")
def odd_named_int8(models, tmp_path_factory) -> Path:
    """The int8 model under a name with spaces, quotes and $(): quoting is tested on every transport."""
    folder = tmp_path_factory.mktemp("odd dir $(touch pwned) 'q'")
    target = folder / "my model's \"int8\" $(touch pwned).tflite"
    shutil.copyfile(models["int8.tflite"], target)
    return target


@pytest.fixture(scope="session")
def aarch64_sysroot() -> Path:
    """The cached qemu-aarch64 sysroot (built on first use); skipped without qemu-user-static."""
    from edgeqd.devices.qemu import build_sysroot, qemu_missing_reason

    reason = qemu_missing_reason("qemu-aarch64")
    if reason:
        pytest.skip(reason)
    return build_sysroot("qemu-aarch64", log=lambda line: print(line, file=sys.stderr))


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1, outside adb's emulator scan range 5555–5585."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if not 5555 <= port <= 5585:
            return port


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


class Sshd:
    """Debian's sshd on 127.0.0.1 with generated keys; optionally a ForceCommand."""

    def __init__(self, folder: Path, force_command: str | None = None) -> None:
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not os.path.exists(sshd) or not shutil.which("ssh-keygen"):
            pytest.skip("openssh-server is not installed (apt-get install openssh-server)")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)],
                           check=True, timeout=30)
        (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
        self.port = free_port()
        self.remote_tmp = folder / "remote tmp"
        self.remote_tmp.mkdir()
        lines = [f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}",
                 f"PidFile {folder / 'sshd.pid'}", f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                 "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
                 "StrictModes no", "PermitRootLogin prohibit-password", "LogLevel ERROR",
                 "MaxSessions 20"]
        if force_command:
            lines.append(f"ForceCommand {force_command}")
        (folder / "sshd_config").write_text("\n".join(lines) + "\n")
        host_pub = (folder / "host_key.pub").read_text().split()
        (folder / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.ssh_config = folder / "ssh_config"
        self.ssh_config.write_text(
            f"Host 127.0.0.1\n  IdentityFile {folder / 'client_key'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {folder / 'known_hosts'}\n  StrictHostKeyChecking yes\n")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation folder
        self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(folder / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(folder / "sshd.log", "wb"))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.proc.poll() is not None:
                pytest.fail(f"sshd exited: {(folder / 'sshd.log').read_text()}")
            time.sleep(0.05)
        import getpass

        self.user = getpass.getuser()
        self.spec = f"ssh://{self.user}@127.0.0.1:{self.port}"

    def options(self, **extra) -> dict:
        """Device options that point edgeqd's ssh at this server's config and a private remote tmp."""
        return {"ssh_config": str(self.ssh_config), "workdir_parent": str(self.remote_tmp), **extra}

    def drop_connections(self) -> None:
        """Kill the per-connection sshd processes: the network connection dies mid-run."""
        for pid in children_of(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self.drop_connections()
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """sshd running commands with the host's shell (the device's python is given explicitly)."""
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def arm_sshd(tmp_path_factory, aarch64_sysroot):
    """sshd whose ForceCommand puts the qemu-aarch64 sysroot's ARM Python first on PATH."""
    from edgeqd.devices.qemu import write_python_shim

    folder = tmp_path_factory.mktemp("arm-sshd")
    shims = folder / "bin"
    shims.mkdir()
    write_python_shim("qemu-aarch64", shims / "python3")
    shell = folder / "armshell.sh"
    shell.write_text(f"#!/bin/sh\nPATH='{shims}':/usr/bin:/bin; export PATH\n"
                     f"exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n")
    shell.chmod(0o755)
    server = Sshd(folder / "server", force_command=str(shell))
    yield server
    server.stop()


class AdbSetup:
    """Debian's adb server on a private port, connected to an :class:`AdbProtocolFixture`."""

    def __init__(self, folder: Path, python_shim: Path | None = None) -> None:
        from adb_fixture import AdbProtocolFixture

        if not shutil.which("adb"):
            pytest.skip("adb is not installed (apt-get install adb)")
        self.folder = folder
        self.remote_tmp = folder / "data local tmp"
        self.remote_tmp.mkdir(parents=True)
        bin_dir = folder / "bin"
        bin_dir.mkdir()
        if python_shim is None:
            # A script, not a symlink: the venv is found from the interpreter's own path.
            (bin_dir / "python3").write_text(f"#!/bin/sh\nexec '{sys.executable}' \"$@\"\n")
            (bin_dir / "python3").chmod(0o755)
        else:
            shutil.copy(python_shim, bin_dir / "python3")
        env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin")
        self.fixture = AdbProtocolFixture(env).start()
        self.server_port = free_port()
        # Every adb call (the tests' and edgeqd's) reaches this private adb server.
        self._saved = os.environ.get("ANDROID_ADB_SERVER_PORT")
        os.environ["ANDROID_ADB_SERVER_PORT"] = str(self.server_port)
        self.serial = f"127.0.0.1:{self.fixture.port}"
        self.adb("start-server")
        out = self.adb("connect", self.serial)
        if "connected" not in out:
            pytest.fail(f"adb connect failed: {out}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.adb("-s", self.serial, "get-state").strip() != "device":
            time.sleep(0.2)
        self.spec = f"adb:{self.serial}"

    def adb(self, *args: str) -> str:
        done = subprocess.run(["adb", *args], capture_output=True, text=True, timeout=60)
        return done.stdout + done.stderr

    def options(self, **extra) -> dict:
        return {"workdir_parent": str(self.remote_tmp), **extra}

    def stop(self) -> None:
        self.adb("disconnect", self.serial)
        self.adb("kill-server")
        self.fixture.stop()
        if self._saved is None:
            os.environ.pop("ANDROID_ADB_SERVER_PORT", None)
        else:
            os.environ["ANDROID_ADB_SERVER_PORT"] = self._saved


@pytest.fixture(scope="session")
def adb_setup():
    """The :class:`AdbSetup` class, for a test that starts its own (``from conftest import`` would find
    whichever conftest module was imported first)."""
    return AdbSetup


@pytest.fixture(scope="module")
def adb_device(tmp_path_factory):
    """An adb 'device' backed by the host: the ADB protocol fixture (not Android)."""
    setup = AdbSetup(tmp_path_factory.mktemp("adb"))
    yield setup
    setup.stop()


def eval_arrays(dataset, samples: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """The first evaluation samples, as bench ships them."""
    return dataset.x_eval[:samples], dataset.y_eval[:samples]
