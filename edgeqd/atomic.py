"""Atomic outputs: everything is written under a temporary name and renamed into place.

A crash, a Ctrl-C, SIGTERM, a full disk or an error midway leaves either the old
output or none at all, never half of a new one; an existing output is replaced only
with ``force``, and never when it is, holds or sits inside one of the run's inputs
(:func:`check_output_safe`).

Temporary names carry the writer's process id (``.NAME.tmp-PID-XXXX`` beside the
output, ``edgeqd-work-PID-XXXX`` in ``$TMPDIR``) so that the temporaries of a run
killed with SIGKILL, which can clean nothing, are removed by the next run once that
process is gone (:func:`remove_stale_temporaries`); a live process's are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Optional

from edgeqd import interrupts
from edgeqd.errors import EdgeqdError, UsageError

# Errors that say "this location cannot take the output", not "edgeqd is broken".
_NO_ROOM = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system"}


class NoRoomError(UsageError):
    """The output's location is full, over quota or read-only (exit 2, like any unusable output path)."""


def _real(path: Path) -> Path:
    """``path`` absolute with every symlink of its existing part resolved."""
    return Path(os.path.realpath(os.path.abspath(path)))


def _within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or inside it (both resolved)."""
    return path == folder or folder in path.parents


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:  # hard links, bind mounts
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_location(out: Path, real: Path, option: str) -> None:
    """Refuse outputs that would replace the filesystem root, HOME or the current folder."""
    if real == Path(real.anchor):
        raise UsageError(f"{option} {out} is the filesystem root; choose a new folder for the output")
    cwd = _real(Path.cwd())
    if _within(cwd, real):
        where = "the current folder" if real == cwd else f"an ancestor of the current folder {cwd}"
        raise UsageError(f"{option} {out} is {where}: --force would replace it; choose a new folder, e.g. ./out")
    try:
        home = _real(Path.home())
    except (KeyError, RuntimeError):  # no HOME and no passwd entry
        return
    if _within(home, real):
        where = "your home folder" if real == home else f"an ancestor of your home folder {home}"
        raise UsageError(f"{option} {out} is {where}: --force would replace it; choose a new folder, e.g. ./out")


def check_output_safe(out: str | os.PathLike, inputs: Iterable[object] = (), *, file: bool = False,
                      option: str = "--out") -> None:
    """Refuse an output that would destroy the run's own inputs or a folder that is not its to replace.

    Checked on resolved real paths (symlinks, ``..`` and hard links seen through):
    the output must not be an input, hold an input, or sit inside an input folder
    (a SavedModel, an image folder); it must not be the filesystem root, HOME, the
    current folder or an ancestor of either; a file output must not be an existing
    folder (a folder is never deleted to put a file in its place). Stale temporaries
    of earlier, dead runs writing the same output are removed.

    Args:
        out: the output file or folder.
        inputs: every input of the run; items that are not paths (a loaded model, a
            dataset name such as ``fashion-mnist``) or do not exist are skipped.
        file: the output is a file.
        option: the option naming the output, for the message.

    Raises:
        UsageError: the output is unsafe (exit 2).

    >>> check_output_safe("/tmp/edgeqd-doctest/out", ["/tmp/edgeqd-doctest/model.keras"])
    """
    out = Path(out)
    real = _real(out)
    _check_location(out, real, option)
    for item in inputs:
        if item is None or not isinstance(item, (str, os.PathLike)) or not os.path.lexists(item):
            continue
        source = _real(Path(item))
        if _same(real, source):
            raise UsageError(f"{option} {out} is the input {item}: writing it would destroy the input; "
                             "choose another output path")
        if _within(real, source):
            raise UsageError(f"{option} {out} is inside the input folder {item}; choose an output outside it")
        if _within(source, real):
            raise UsageError(f"{option} {out} holds the input {item}: --force would delete it; "
                             "choose another output folder")
    if file and out.is_dir() and not out.is_symlink():
        raise UsageError(f"{option} {out} is a folder; give a file path (a folder is never replaced by a file)")
    remove_stale_temporaries(out)


def check_writable(target: Path, force: bool) -> None:
    """Fail early when ``target`` exists without ``force`` or its parent is not writable.

    Args:
        target: the file or folder about to be written.
        force: whether an existing ``target`` may be replaced.

    >>> check_writable(Path("/tmp/edgeqd-doctest-nothing-here"), force=False)
    """
    target = Path(target)
    if os.path.lexists(target) and not force:
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


def no_room(exc: BaseException) -> Optional[OSError]:
    """The full-disk (or quota, or read-only) OSError behind ``exc``, following its causes; else None.

    Libraries wrap it (TensorFlow raises its own errors carrying the text), so the
    message is matched too.

    Args:
        exc: any exception.

    >>> no_room(OSError(errno.ENOSPC, "No space left on device")).errno == errno.ENOSPC
    True
    """
    seen = set()
    while exc is not None and id(exc) not in seen and not isinstance(exc, UsageError):
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
            return exc
        if not isinstance(exc, EdgeqdError):  # our own messages are already user-facing
            text = str(exc)
            for code in _NO_ROOM:
                if os.strerror(code) in text:
                    return OSError(code, os.strerror(code))
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
    return None


def no_room_error(error: OSError, folder: Path) -> NoRoomError:
    """The one-line error for a full disk, exceeded quota or read-only file system.

    Args:
        error: the OSError (see :func:`no_room`).
        folder: the output's folder (used when the error names no file).

    >>> str(no_room_error(OSError(errno.EROFS, "Read-only file system"), Path("/")))[:42]
    'cannot write the output in /: read-only fi'
    """
    folder = Path(os.path.abspath(folder))
    where = folder
    if getattr(error, "filename", None):  # a scratch file elsewhere (e.g. in $TMPDIR) names its own folder
        written = Path(os.path.abspath(error.filename)).parent
        where = folder if _within(written, folder) else written
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = f"{shutil.disk_usage(probe).free / 1024:,.0f} KiB free"
    except OSError:
        free = "free space unknown"
    return NoRoomError(f"cannot write the output in {where}: {_NO_ROOM.get(error.errno, error.strerror)} "
                      f"({free}); free some space or choose another output location")




def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove temporaries that dead runs left beside ``target`` (``.NAME.tmp-PID-*``, ``.NAME.old-PID``).

    A ``.old-PID`` (the previous output moved aside while the new one is renamed in)
    is removed only when ``target`` exists again: otherwise it is the only copy.

    Args:
        target: an output file or folder.

    Returns:
        What was removed.

    >>> remove_stale_temporaries("/tmp/edgeqd-doctest-nothing-here")
    []
    """
    target = Path(os.path.abspath(target))
    removed = []
    if not target.name or not target.parent.is_dir():
        return removed
    # Exactly the names atomic_dir/atomic_file make (mkstemp's 8 random characters, the
    # target's suffix): never a temporary of another output whose name merely starts alike.
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:tmp-(\d+)-[a-z0-9_]{{8}}(?:{re.escape(target.suffix)})?"
                         rf"|old-(\d+))")
    for candidate in target.parent.glob(f".{glob_escape(target.name)}.*"):
        match = pattern.fullmatch(candidate.name)
        if not match or _alive(int(match.group(1) or match.group(2))):
            continue
        if match.group(2) and not os.path.lexists(target):  # the previous output's only copy
            continue
        _remove(candidate)
        removed.append(candidate)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters escaped (``[`` ``*`` ``?``)."""
    return re.sub(r"([\[\]*?])", r"[\1]", name)


@contextlib.contextmanager
def scratch_dir(prefix: str = "edgeqd-work") -> Iterator[Path]:
    """A private scratch folder ``$TMPDIR/PREFIX-PID-XXXX``, removed on exit however the block ends.

    Scratch folders of dead processes with the same prefix are removed first.

    Args:
        prefix: the folder name's start.

    >>> with scratch_dir("edgeqd-doctest") as folder:
    ...     folder.is_dir()
    True
    """
    base = Path(tempfile.gettempdir())
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)-")
    for candidate in base.glob(f"{glob_escape(prefix)}-*"):
        match = pattern.match(candidate.name)
        if match and not _alive(int(match.group(1))):
            _remove(candidate)
    folder = None
    try:
        with interrupts.shielded():
            folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-", dir=base))
        yield folder
    finally:
        if folder is not None:
            with interrupts.shielded():
                shutil.rmtree(folder, ignore_errors=True)


def _prepare(target: Path, force: bool) -> Path:
    """Checks shared by :func:`atomic_dir` and :func:`atomic_file`; returns the absolute target."""
    target = Path(os.path.abspath(target))
    _check_location(target, _real(target), "output")
    check_writable(target, force)
    remove_stale_temporaries(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _failed(exc: BaseException, tmp: Optional[Path], target: Path) -> Optional[UsageError]:
    """Remove ``tmp`` (shielded from signals); the UsageError to raise instead of ``exc``, if any."""
    with interrupts.shielded():
        if tmp is not None:
            _remove(tmp)
    full = None if interrupts.received() is not None else no_room(exc)
    return no_room_error(full, target.parent) if full is not None else None


@contextlib.contextmanager
def atomic_dir(target: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; rename it to ``target`` on success.

    Nothing is renamed into place after an interrupt (:func:`edgeqd.interrupts.check`);
    a full disk becomes a one-line :class:`UsageError` naming the folder. A symlink
    ``target`` is replaced by the new folder; what it pointed to is left alone.

    Args:
        target: the final folder.
        force: replace an existing ``target``.

    >>> with atomic_dir(Path(tempfile.mkdtemp()) / "out") as tmp:
    ...     _ = (tmp / "a.txt").write_text("hi")
    """
    target = _prepare(target, force)
    tmp = None
    try:
        with interrupts.shielded():
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
        yield tmp
        with interrupts.shielded():  # the renames must not be cut in half
            interrupts.check()
            if os.path.lexists(target):
                # Swap in two renames so the old output survives until the new one is complete.
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, old)
                os.replace(tmp, target)
                tmp = None
                _remove(old)
            else:
                os.replace(tmp, target)
                tmp = None
    except BaseException as exc:
        error = _failed(exc, tmp, target)
        if error is not None:
            raise error from None
        raise


@contextlib.contextmanager
def atomic_file(target: Path, force: bool = False, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it to ``target`` on success.

    Nothing is renamed into place after an interrupt; a full disk becomes a one-line
    :class:`UsageError`; an existing folder at ``target`` is refused, never deleted.

    Args:
        target: the final file.
        force: replace an existing ``target``.
        suffix: ending for the temporary name (some writers pick the format from it,
            e.g. Keras needs ``.keras``).

    >>> with atomic_file(Path(tempfile.mkdtemp()) / "x.txt") as tmp:
    ...     _ = tmp.write_text("hi")
    """
    if Path(target).is_dir() and not Path(target).is_symlink():
        raise UsageError(f"{target} is a folder; give a file path (a folder is never replaced by a file)")
    target = _prepare(target, force)
    tmp = None
    try:
        with interrupts.shielded():
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-{os.getpid()}-", suffix=suffix or target.suffix,
                                        dir=target.parent)
            os.close(fd)
            tmp = Path(name)
        yield tmp
        with interrupts.shielded():
            interrupts.check()
            os.replace(tmp, target)
            tmp = None
    except BaseException as exc:
        error = _failed(exc, tmp, target)
        if error is not None:
            raise error from None
        raise


def write_bytes_atomic(target: Path, data: bytes, force: bool = False) -> None:
    """Write ``data`` to ``target`` through a temporary file.

    Args:
        target: the final file.
        data: its content.
        force: replace an existing ``target``.
    """
    with atomic_file(target, force=force) as tmp:
        tmp.write_bytes(data)
