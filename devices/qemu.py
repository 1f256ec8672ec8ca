"""``qemu-aarch64`` and ``qemu-armv7``: emulated Raspberry Pi userlands under qemu-user.

No board, no root, no chroot: Debian's ``qemu-user-static`` runs ARM binaries from a
*sysroot*, a folder holding an ARM Debian bookworm userland (Python 3.11 and its
libraries, unpacked with ``dpkg-deb -x`` from packages that ``apt-get download``
fetched with a private ``APT_CONFIG``) plus the runtime's wheels installed with
``pip --target``. Debian bookworm arm64 is Raspberry Pi OS 64-bit's userland, and
the CPU is emulated as a Cortex-A72, so this is an honest emulated Raspberry Pi 4 for
functional and accuracy checks. **Its latency means nothing** and is labelled so.

Traps this module handles (see GUIDE §3):

* ``pip download`` must list every manylinux tag 2_17 … 2_36 explicitly, or pip
  silently picks an old ai-edge-litert.
* ai-edge-litert and onnxruntime read ``/proc/cpuinfo`` and
  ``/sys/devices/system/cpu/{possible,present}`` and crash on the host's x86
  contents; qemu's ``-L`` looks paths up in the sysroot first, so the sysroot
  carries its own ARM descriptions of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from edgeqd.devices.registry import register_device
from edgeqd.devices.base import Device, run_process, tail
from edgeqd.devices.local import LocalSession
from edgeqd.errors import DeviceError

DEBIAN_MIRROR = os.environ.get("EDGEQD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_SECURITY = os.environ.get("EDGEQD_DEBIAN_SECURITY", "http://deb.debian.org/debian-security")
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Dependencies that Python does not need at run time but apt's closure drags in (perl through
# mailcap, dpkg through install-info): leaving them out halves the download.
_EXCLUDED_PACKAGES = {"perl", "perl-base", "perl-modules-5.36", "libperl5.36", "dpkg", "tar",
                      "install-info", "mailcap", "mime-support", "libgdbm-compat4", "debconf",
                      "python3-distutils", "python3-lib2to3", "libpython3-stdlib", "debianutils"}
_SETUP_TIMEOUT = 900


@dataclass(frozen=True)
class SysrootRecipe:
    """How to build one emulated userland.

    Attributes:
        kind: the device kind it serves.
        debian_arch: Debian's architecture name.
        qemu: the qemu-user binary.
        cpu: the ``-cpu`` model qemu emulates.
        python: the interpreter inside the sysroot.
        packages: Debian packages whose dependency closure is unpacked.
        wheel_platform: pip's platform suffix (``aarch64``, ``armv7l``).
        wheels: pip requirements installed with ``--target``.
        cpu_part: ARM "CPU part" written into the sysroot's /proc/cpuinfo.
        cpu_features: its "Features" line.
        board: the board the emulation stands for (the cpuinfo "Model" line).
    """

    kind: str
    debian_arch: str
    qemu: str
    cpu: str
    python: str
    packages: tuple[str, ...]
    wheel_platform: str
    wheels: tuple[str, ...]
    cpu_part: str
    cpu_features: str
    board: str
    cores: int = 4

    def digest(self) -> str:
        """A short hash of the recipe: a changed recipe rebuilds the cached sysroot."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:12]


RECIPES: dict[str, SysrootRecipe] = {
    "qemu-aarch64": SysrootRecipe(
        kind="qemu-aarch64", debian_arch="arm64", qemu="qemu-aarch64-static", cpu="cortex-a72",
        python="python3.11", packages=("python3.11", "libstdc++6", "base-files"),
        wheel_platform="aarch64",
        wheels=("ai-edge-litert>=2.3,<3", "onnxruntime>=1.20,<2", "numpy>=1.26,<2.3"),
        cpu_part="0xd08", cpu_features="fp asimd evtstrm crc32 cpuid",
        board="Raspberry Pi 4 Model B (emulated by qemu-user)"),
    "qemu-armv7": SysrootRecipe(
        kind="qemu-armv7", debian_arch="armhf", qemu="qemu-arm-static", cpu="cortex-a7",
        # tflite-runtime's armv7l wheel needs numpy<2: Debian's own python3-numpy (1.24) fits.
        python="python3.11", packages=("python3.11", "python3-numpy", "libstdc++6", "base-files"),
        wheel_platform="armv7l", wheels=("tflite-runtime>=2.14,<2.15",),
        cpu_part="0xc07",
        cpu_features="half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm",
        board="Raspberry Pi 2 Model B (emulated by qemu-user)"),
}


def sysroot_dir(kind: str) -> Path:
    """Where the sysroot of ``kind`` is cached: ``<edgeqd cache>/sysroots/<kind>``.

    Args:
        kind: "qemu-aarch64" or "qemu-armv7".

    >>> sysroot_dir("qemu-aarch64").name
    'qemu-aarch64'
    """
    from edgeqd.data import cache_dir

    return cache_dir() / "sysroots" / kind


def _stamp(root: Path) -> Path:
    return root / ".edgeqd-sysroot.json"


def sysroot_ready(kind: str) -> bool:
    """Whether a complete sysroot for the current recipe of ``kind`` is cached.

    Args:
        kind: "qemu-aarch64" or "qemu-armv7".
    """
    stamp = _stamp(sysroot_dir(kind))
    try:
        return json.loads(stamp.read_text()).get("recipe") == RECIPES[kind].digest()
    except (OSError, ValueError):
        return False


def qemu_missing_reason(kind: str) -> Optional[str]:
    """Why ``kind`` cannot run here (qemu or apt tools missing), or None.

    Args:
        kind: "qemu-aarch64" or "qemu-armv7".

    >>> qemu_missing_reason("qemu-aarch64") is None or True
    True
    """
    recipe = RECIPES[kind]
    if not shutil.which(recipe.qemu):
        return (f"{recipe.qemu} is not installed: install Debian's qemu-user-static "
                f"(apt-get install qemu-user-static, or `make system-deps`)")
    if not sysroot_ready(kind):
        for tool in ("apt-get", "apt-cache", "dpkg-deb"):
            if not shutil.which(tool):
                return f"{tool} is missing: building the {kind} sysroot needs Debian's apt tools"
    return None


def python_command(kind: str) -> list[str]:
    """The argv prefix that starts the sysroot's Python under qemu (the sysroot must exist).

    Args:
        kind: "qemu-aarch64" or "qemu-armv7".

    >>> python_command("qemu-aarch64")[:3]
    ['qemu-aarch64-static', '-cpu', 'cortex-a72']
    """
    recipe = RECIPES[kind]
    root = sysroot_dir(kind)
    # -E -s: ignore the host's PYTHON* variables and user site-packages (x86 wheels).
    return [recipe.qemu, "-cpu", recipe.cpu, "-L", str(root),
            str(root / "usr" / "bin" / recipe.python), "-E", "-s"]


def emulated_env() -> dict:
    """The environment emulated runs get: a plain one, marked as emulated for the runner."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/tmp"),
            "EDGEQD_EMULATED": "1"}


def write_python_shim(kind: str, path: Path) -> Path:
    """Write an executable ``python3`` script that runs the sysroot's Python under qemu.

    Used to put ARM Python behind other transports (an sshd ``ForceCommand``, the adb
    test fixture), so those paths run ARM code for real.

    Args:
        kind: "qemu-aarch64" or "qemu-armv7".
        path: where to write the script.

    >>> write_python_shim("qemu-aarch64", Path(tempfile.mkdtemp()) / "python3").name
    'python3'
    """
    import shlex

    command = " ".join(shlex.quote(part) for part in python_command(kind))
    path.write_text(f"#!/bin/sh\nEDGEQD_EMULATED=1 exec {command} \"$@\"\n")
    path.chmod(0o755)
    return path


def _cpuinfo(recipe: SysrootRecipe) -> str:
    blocks = []
    architecture = "8" if recipe.debian_arch == "arm64" else "7"
    for index in range(recipe.cores):
        blocks.append(f"processor\t: {index}\nBogoMIPS\t: 108.00\nFeatures\t: {recipe.cpu_features}\n"
                      f"CPU implementer\t: 0x41\nCPU architecture: {architecture}\nCPU variant\t: 0x0\n"
                      f"CPU part\t: {recipe.cpu_part}\nCPU revision\t: 3\n")
    return "\n".join(blocks) + f"\nHardware\t: BCM2835\nModel\t\t: {recipe.board}\n"


def _run(argv: list[str], what: str, env: Optional[dict] = None, cwd: Optional[Path] = None,
         timeout: float = _SETUP_TIMEOUT) -> str:
    done = run_process(argv, timeout=timeout, env=env, cwd=str(cwd) if cwd else None)
    if done.timed_out:
        raise DeviceError(f"{what}: timed out after {done.seconds:.0f} s")
    if done.returncode != 0:
        raise DeviceError(f"{what} failed (exit {done.returncode}): {tail(done.stderr or done.stdout)}")
    return done.stdout


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock file, so two edgeqd processes never build the same sysroot at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_sysroot(kind: str, force: bool = False, log=None) -> Path:
    """Build (or find cached) the emulated userland of ``kind``; idempotent, needs no root.

    Args:
        kind: "qemu-aarch64" or "qemu-armv7".
        force: rebuild even when a complete sysroot is cached.
        log: callable taking one line of progress (None = quiet).

    Returns:
        The sysroot folder.

    >>> build_sysroot("qemu-aarch64")  # doctest: +SKIP
    PosixPath('/root/.cache/edgeqd/sysroots/qemu-aarch64')
    """
    recipe = RECIPES[kind]
    say = log or (lambda line: None)
    reason = qemu_missing_reason(kind)
    if reason and not (reason.startswith(("apt", "dpkg")) and sysroot_ready(kind)):
        raise DeviceError(reason)
    root = sysroot_dir(kind)
    with _locked(root.parent / f".{kind}.lock"):
        if sysroot_ready(kind) and not force:
            return root
        say(f"building the {kind} sysroot in {root} (Debian bookworm {recipe.debian_arch}, "
            f"{', '.join(recipe.wheels)}); about 30 s and 100–300 MB, once")
        work = Path(tempfile.mkdtemp(prefix=f".{kind}.build-", dir=root.parent))
        try:
            new_root = work / "root"
            _download_debs(recipe, work, new_root, say)
            _install_wheels(recipe, work, new_root, say)
            _describe_cpu(recipe, new_root)
            _smoke_test(kind, recipe, new_root)
            _stamp(new_root).write_text(json.dumps({"recipe": recipe.digest(), "kind": kind}))
            if root.exists():
                shutil.rmtree(root)
            os.replace(new_root, root)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    say(f"{kind} sysroot ready: {root}")
    return root


def _download_debs(recipe: SysrootRecipe, work: Path, new_root: Path, say) -> None:
    apt = work / "apt"
    for sub in ("state/lists/partial", "cache/archives/partial", "etc/parts", "debs"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "state" / "status").touch()
    signed = f"[arch={recipe.debian_arch} signed-by={DEBIAN_KEYRING}]" if Path(DEBIAN_KEYRING).exists() \
        else f"[arch={recipe.debian_arch}]"
    (apt / "sources.list").write_text(
        f"deb {signed} {DEBIAN_MIRROR} bookworm main\n"
        f"deb {signed} {DEBIAN_MIRROR} bookworm-updates main\n"
        f"deb {signed} {DEBIAN_SECURITY} bookworm-security main\n")
    # A private apt: its own architecture, state and sources, so the host's apt is untouched
    # and no root is needed.
    (apt / "apt.conf").write_text("\n".join([
        f'APT::Architecture "{recipe.debian_arch}";',
        f'APT::Architectures {{ "{recipe.debian_arch}"; }};',
        f'Dir::State "{apt}/state";', f'Dir::State::status "{apt}/state/status";',
        f'Dir::Cache "{apt}/cache";', f'Dir::Etc::SourceList "{apt}/sources.list";',
        f'Dir::Etc::SourceParts "{apt}/etc/parts";', f'Dir::Etc::Preferences "{apt}/etc/prefs";',
        f'Dir::Etc::PreferencesParts "{apt}/etc/parts";', 'Acquire::Languages "none";',
        'APT::Sandbox::User "root";' if os.geteuid() == 0 else "", ""]))
    env = dict(os.environ, APT_CONFIG=str(apt / "apt.conf"), DEBIAN_FRONTEND="noninteractive")
    say(f"  apt-get update ({recipe.debian_arch})")
    _apt_update(env, recipe.kind, say)
    listing = _run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                    "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *recipe.packages],
                   "apt-cache depends", env=env)
    packages = sorted({line.strip() for line in listing.splitlines()
                       if line and not line.startswith((" ", "<"))} - _EXCLUDED_PACKAGES)
    say(f"  apt-get download: {len(packages)} packages")
    _run(["apt-get", "download", "-q", *packages], "apt-get download", env=env, cwd=apt / "debs")
    new_root.mkdir()
    for deb in sorted((apt / "debs").glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(new_root)], f"dpkg-deb -x {deb.name}")
    _link_alternatives(new_root)


def _link_alternatives(new_root: Path) -> None:
    """The links ``update-alternatives`` would make for BLAS and LAPACK.

    ``dpkg-deb -x`` runs no maintainer scripts, so libblas3 leaves its library in
    ``usr/lib/<triplet>/blas/`` with no ``libblas.so.3`` where Debian's numpy looks for it.
    """
    for folder in [*new_root.glob("usr/lib/*/blas"), *new_root.glob("usr/lib/*/lapack")]:
        for library in folder.glob("lib*.so.3"):
            link = folder.parent / library.name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(f"{folder.name}/{library.name}")


_FAILED_FETCH = re.compile(r"Failed to fetch (\S+)")


def optional_index_failures(apt_output: str) -> list[str]:
    """The URLs apt failed to fetch, if every one is an update or security index; else [].

    Args:
        apt_output: what ``apt-get update`` printed.

    >>> optional_index_failures("E: Failed to fetch http://m/debian-security/dists/bookworm-security/x.xz  size")
    ['http://m/debian-security/dists/bookworm-security/x.xz']
    >>> optional_index_failures("E: Failed to fetch http://m/debian/dists/bookworm/main/x.xz  404")
    []
    """
    failed = _FAILED_FETCH.findall(apt_output)
    if failed and all(re.search(r"/dists/bookworm-(security|updates)/", url) for url in failed):
        return failed
    return []


def _apt_update(env: dict, kind: str, say) -> None:
    """``apt-get update``, tolerating a stale update/security index but never a missing main one.

    A mirror in the middle of a sync (seen here: bookworm-security's armhf ``Packages``
    with the wrong size) fails the whole update. The sysroot is an emulated test userland:
    after one retry it is built from ``bookworm main`` alone, saying so, rather than not
    at all; a failure of ``bookworm main`` itself stays an error.

    Args:
        env: environment with the sysroot's private ``APT_CONFIG``.
        kind: the device kind being built (named in the warning).
        say: callable taking one line of progress.
    """
    for _ in range(2):
        done = run_process(["apt-get", "update", "-q"], timeout=_SETUP_TIMEOUT, env=env)
        if done.timed_out:
            raise DeviceError(f"apt-get update for the sysroot: timed out after {done.seconds:.0f} s")
        if done.returncode == 0:
            return
        failed = optional_index_failures(done.stderr + done.stdout)
        if not failed:
            raise DeviceError(f"apt-get update for the sysroot failed (exit {done.returncode}): "
                              f"{tail(done.stderr or done.stdout)}")
    say(f"  warning: {len(failed)} update/security index(es) failed to download "
        f"({', '.join(url.split('/dists/')[-1] for url in failed)}); building from bookworm main "
        f"without them — run `edgeqd devices setup {kind} --force` later for the updates")


def _pip_platform_args(recipe: SysrootRecipe) -> list[str]:
    # Every manylinux tag must be listed, or pip settles for an old wheel that lists only 2_17.
    args = []
    for minor in range(17, 37):
        args += ["--platform", f"manylinux_2_{minor}_{recipe.wheel_platform}"]
    args += ["--platform", f"manylinux2014_{recipe.wheel_platform}",
             "--platform", f"linux_{recipe.wheel_platform}"]
    return args + ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                   "--only-binary=:all:"]


def _install_wheels(recipe: SysrootRecipe, work: Path, new_root: Path, say) -> None:
    wheels = work / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    say(f"  pip download ({recipe.wheel_platform}): {', '.join(recipe.wheels)}")
    deps = [] if recipe.kind != "qemu-armv7" else ["--no-deps"]
    _run(pip + ["download", *_pip_platform_args(recipe), *deps, "-d", str(wheels), *recipe.wheels],
         "pip download of the sysroot's wheels")
    target = new_root / "usr" / "lib" / "python3" / "dist-packages"
    _run(pip + ["install", *_pip_platform_args(recipe), "--no-deps", "--no-index", "--target",
                str(target), *map(str, sorted(wheels.glob("*.whl")))], "pip install --target")


def _describe_cpu(recipe: SysrootRecipe, new_root: Path) -> None:
    # qemu -L resolves these paths in the sysroot first; the runtimes crash on x86 contents.
    (new_root / "proc").mkdir(exist_ok=True)
    (new_root / "proc" / "cpuinfo").write_text(_cpuinfo(recipe))
    cpus = new_root / "sys" / "devices" / "system" / "cpu"
    cpus.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (cpus / name).write_text(f"0-{recipe.cores - 1}\n")


def _smoke_test(kind: str, recipe: SysrootRecipe, new_root: Path) -> None:
    module = "ai_edge_litert.interpreter" if kind == "qemu-aarch64" else "tflite_runtime.interpreter"
    argv = [recipe.qemu, "-cpu", recipe.cpu, "-L", str(new_root),
            str(new_root / "usr" / "bin" / recipe.python), "-E", "-s", "-c",
            f"import numpy, platform, {module}; print(platform.machine())"]
    _run(argv, f"the {kind} sysroot's smoke test (import numpy and {module})", env=emulated_env(),
         timeout=300)


class QemuDevice(Device):
    """An emulated ARM userland under qemu-user; its latency is not a device latency."""

    emulated = True
    shares_host = True
    option_names = frozenset()

    def setup(self, force: bool = False) -> str:
        was_ready = sysroot_ready(self.kind) and not force
        root = build_sysroot(self.kind, force=force, log=self.log)
        return f"{self.kind}: sysroot {'already ' if was_ready else ''}ready at {root}"

    def open(self) -> LocalSession:
        if not sysroot_ready(self.kind):
            self.log(f"{self.kind}: no sysroot yet; building it now (`edgeqd devices setup {self.kind}` "
                     f"does this ahead of time)")
            self.setup()
        return LocalSession(python_command(self.kind), env=emulated_env(), prefix=f"edgeqd-{self.kind}-")


@register_device("qemu-aarch64")
class QemuAarch64Device(QemuDevice):
    """Emulated Raspberry Pi 4: Cortex-A72, Debian bookworm arm64 (Raspberry Pi OS 64-bit userland)."""

    description = "emulated Raspberry Pi 4 (Cortex-A72, bookworm arm64) under qemu-user"


@register_device("qemu-armv7")
class QemuArmv7Device(QemuDevice):
    """Emulated 32-bit Raspberry Pi: Cortex-A7, Debian bookworm armhf, tflite-runtime."""

    description = "emulated 32-bit Raspberry Pi (Cortex-A7, bookworm armhf, tflite-runtime) under qemu-user"
