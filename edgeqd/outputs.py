"""Atomic outputs: everything is written under a temporary name and renamed into place.

A crash, a Ctrl-C or an error midway leaves either the old output or none at all,
never half of a new one; an existing output is replaced only with ``force``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgeqd.errors import UsageError


def check_writable(target: Path, force: bool) -> None:
    """Fail early when ``target`` exists without ``force`` or its parent is not writable.

    Args:
        target: the file or folder about to be written.
        force: whether an existing ``target`` may be replaced.

    >>> check_writable(Path("/tmp/edgeqd-doctest-nothing-here"), force=False)
    """
    target = Path(target)
    if target.exists() and not force:
        raise UsageError(f"{target} already exists; pass --force to overwrite it")
    parent = target.absolute().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"cannot create {parent}: {probe} is not a folder; choose another output location")
    try:
        # A real write, not os.access: root passes every permission check but still
        # cannot write to read-only mounts or pseudo file systems.
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to {parent}: {exc.strerror}; choose another output location") from None


@contextlib.contextmanager
def atomic_dir(target: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; rename it to ``target`` on success.

    Args:
        target: the final folder.
        force: replace an existing ``target``.

    >>> with atomic_dir(Path(tempfile.mkdtemp()) / "out") as tmp:
    ...     _ = (tmp / "a.txt").write_text("hi")
    """
    target = Path(target)
    check_writable(target, force)
    target.absolute().parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.absolute().parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        # Swap in two renames so the old output survives until the new one is complete.
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    else:
        os.replace(tmp, target)


@contextlib.contextmanager
def atomic_file(target: Path, force: bool = False, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it to ``target`` on success.

    Args:
        target: the final file.
        force: replace an existing ``target``.
        suffix: ending for the temporary name (some writers pick the format from it,
            e.g. Keras needs ``.keras``).

    >>> with atomic_file(Path(tempfile.mkdtemp()) / "x.txt") as tmp:
    ...     _ = tmp.write_text("hi")
    """
    target = Path(target)
    check_writable(target, force)
    target.absolute().parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=suffix or target.suffix,
                                dir=target.absolute().parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)


def write_bytes_atomic(target: Path, data: bytes, force: bool = False) -> None:
    """Write ``data`` to ``target`` through a temporary file.

    Args:
        target: the final file.
        data: its content.
        force: replace an existing ``target``.
    """
    with atomic_file(target, force=force) as tmp:
        tmp.write_bytes(data)
