"""A guarded reader for ``.npz`` archives a user hands edgeqd.

``numpy.load`` trusts the archive: a member that is not an ``.npy`` comes back as raw
bytes, a header may declare a shape of terabytes (numpy allocates it before it reads a
byte), and an archive may decompress to far more than it weighs. This reader checks
every member's header before reading any data: names, pickle-free dtypes, a declared
size that matches the bytes the member holds, and a total no larger than the machine's
memory. Only then are the bytes read, exactly as many as the header declares.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Collection, NamedTuple, Optional

import numpy as np
import numpy.lib.format as npy_format

from edgeqd.errors import DataError

# Kinds of dtype an edgeqd archive may hold: numbers, booleans and fixed-width unicode (names).
ALLOWED_KINDS = "iufbU"
# What a damaged or crafted zip raises while it is read (zlib errors, CRC mismatch, cut-off
# streams, unsupported compression or encryption).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError,
               ValueError, KeyError, UnicodeDecodeError, struct.error)


_CHUNK = 1 << 22  # bytes per read while filling an array


class _Member(NamedTuple):
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    nbytes: int


def memory_limit() -> int:
    """The most bytes of arrays edgeqd reads from one archive: the machine's physical memory."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # no sysconf: a generous fixed cap
        return 64 << 30


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n:,} bytes"


def _read_header(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> _Member:
    """Parse and check one member's ``.npy`` header without reading its data."""
    with archive.open(info) as handle:
        try:
            version = npy_format.read_magic(handle)
        except ValueError:
            raise DataError(f"{path}: member {info.filename!r} is not a .npy array; save the archive with "
                            "numpy.savez") from None
        try:
            # Format 3.0 only differs from 2.0 in the header's text encoding (utf-8 vs latin-1).
            reader = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, fortran_order, dtype = reader(handle)
        except ValueError as exc:
            raise DataError(f"{path}: array {name!r} has a malformed .npy header ({str(exc)[:150]})") from None
        header_bytes = handle.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: array {name!r} holds Python objects (dtype {dtype}), which can only be read "
                        "by unpickling; edgeqd reads without pickle: save plain numeric arrays")
    if (dtype.names is not None or dtype.subdtype is not None or dtype.kind not in ALLOWED_KINDS
            or dtype.itemsize == 0):
        raise DataError(f"{path}: array {name!r} has dtype {dtype}; edgeqd reads numeric, boolean and "
                        "unicode-string arrays only")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise DataError(f"{path}: array {name!r} declares an invalid shape {shape}")
    nbytes = int(np.prod(shape, dtype=object) if shape else 1) * dtype.itemsize  # Python ints: no overflow
    held = info.file_size - header_bytes
    if nbytes != held:
        raise DataError(f"{path}: array {name!r} declares shape {shape} of {dtype} ({_gib(nbytes)}) but the "
                        f"archive holds {_gib(max(held, 0))} for it: truncated or corrupt")
    return _Member(info, tuple(shape), bool(fortran_order), dtype, nbytes)


def read_npz(path: str | os.PathLike, allowed: Collection[str], max_bytes: Optional[int] = None
             ) -> dict[str, np.ndarray]:
    """Read the arrays of an ``.npz`` archive after checking every header.

    Args:
        path: the archive.
        allowed: the array names it may hold (``"x"`` for the member ``x.npy``); any other
            member is refused.
        max_bytes: the most bytes of array data to read in all (default: :func:`memory_limit`).

    Returns:
        The arrays by name.

    Raises:
        DataError: not a zip, a member that is not an allowed ``.npy`` array, an object
            (pickled) or structured dtype, a declared size that does not match the stored
            bytes, a total above ``max_bytes``, or a corrupt compressed stream (exit 3).

    >>> read_npz("data.npz", {"x", "y"})["x"].shape  # doctest: +SKIP
    (100, 28, 28, 1)
    """
    path = Path(path)
    limit = memory_limit() if max_bytes is None else max_bytes
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:  # e.g. a "zip file version 25.5" Python cannot read
        raise DataError(f"{path}: not an .npz archive ({type(exc).__name__}: {str(exc)[:120]}); save the "
                        "arrays with numpy.savez") from None
    with archive:
        infos = archive.infolist()
        names = [info.filename[:-4] if info.filename.endswith(".npy") else info.filename for info in infos]
        unknown = sorted(set(names) - set(allowed))
        if unknown:
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise DataError(f"{path}: unexpected arrays {unknown[:5]}{more}; allowed are {', '.join(allowed)}")
        if len(set(names)) != len(names):
            raise DataError(f"{path}: an array name appears twice in the archive: corrupt or crafted")
        try:
            members = {name: _read_header(path, archive, info, name) for name, info in zip(names, infos)}
            total = sum(m.nbytes for m in members.values())
            if total > limit:
                raise DataError(f"{path}: the arrays declare {_gib(total)} in all, more than the "
                                f"{_gib(limit)} edgeqd reads from one archive (this machine's memory)")
            return {name: _read_data(archive, member) for name, member in members.items()}
        except DataError:
            raise
        except _ZIP_ERRORS as exc:
            raise DataError(f"{path}: corrupt .npz archive ({type(exc).__name__}: {str(exc)[:150]})") from None
        except MemoryError:
            raise DataError(f"{path}: not enough memory to read the arrays") from None


def _read_data(archive: zipfile.ZipFile, member: _Member) -> np.ndarray:
    """Read exactly the bytes a checked header declares and view them as the array."""
    with archive.open(member.info) as handle:
        handle.read(member.info.file_size - member.nbytes)  # the header, validated already
        data = bytearray(member.nbytes)  # filled in chunks: one large read() of a deflated member is slow
        view, filled = memoryview(data), 0
        while filled < member.nbytes:
            chunk = handle.read(min(_CHUNK, member.nbytes - filled))
            if not chunk:
                raise EOFError(f"{member.info.filename}: {filled} of {member.nbytes} bytes")
            view[filled:filled + len(chunk)] = chunk
            filled += len(chunk)
        if handle.read(1):  # also makes zipfile check the CRC at the end of the stream
            raise zipfile.BadZipFile(f"{member.info.filename}: data after the array")
    array = np.frombuffer(data, dtype=member.dtype) if member.nbytes else np.zeros(0, member.dtype)
    return array.reshape(member.shape, order="F" if member.fortran_order else "C")
