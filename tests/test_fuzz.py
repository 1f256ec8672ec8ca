"""Bounded fuzz loops (issue 10): mutated and crafted .npz archives give DataError, never a crash.

Each loop has a fixed seed and a fixed count (200) so a failure replays exactly; the
failing iteration and its mutation are in the assertion message. The mutations are in
tests/fuzz_helpers.py; the loops over ``edgeqd inspect`` are in
tests/artifact_info/test_artifact_info_fuzz.py.
"""

from __future__ import annotations

import io
import random
import struct
import time
import zipfile
from collections import Counter

import numpy as np
import pytest
from fuzz_helpers import ITERATIONS, SECONDS, mutate

from edgeqd.data import load_dataset
from edgeqd.errors import DataError
from edgeqd.data.npz import read_npz


# --------------------------------------------------------------------------- npz

def _npz_bytes(compressed: bool) -> bytes:
    x = np.random.default_rng(0).random((20, 3, 2)).astype(np.float32)
    y = np.arange(20) % 4
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, x=x, y=y, x_val=x[:5], y_val=y[:5],
                                                       class_names=np.array(["a", "b", "c", "d"]))
    return buffer.getvalue()


@pytest.mark.parametrize("compressed, seed", [(False, 5), (True, 6)])
def test_npz_fuzz_only_data_errors(tmp_path, compressed, seed):
    source = _npz_bytes(compressed)
    path = tmp_path / "d.npz"
    rng = random.Random(seed)
    outcomes: Counter = Counter()
    started = time.perf_counter()
    for i in range(ITERATIONS):
        data, what = mutate(source, rng)
        path.write_bytes(data)
        try:
            load_dataset(path)
            outcomes["loaded"] += 1
        except DataError:
            outcomes["DataError"] += 1
        except Exception as exc:  # noqa: BLE001  (the point: nothing but DataError may escape)
            pytest.fail(f"iteration {i} ({what}): {type(exc).__name__}: {exc}")
    assert time.perf_counter() - started < SECONDS
    assert outcomes["DataError"] >= ITERATIONS // 2, outcomes


def _npy(array: np.ndarray, header_shape: str | None = None) -> bytes:
    """An .npy file; ``header_shape`` rewrites the shape its header declares (same header length)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    raw = buffer.getvalue()
    if header_shape is None:
        return raw
    length = struct.unpack("<H", raw[8:10])[0]
    header = raw[10:10 + length].decode("latin1")
    start = header.index("'shape': ") + len("'shape': ")
    end = header.index(")", start) + 1
    new = header[:start] + header_shape + header[end:]
    new = new.rstrip("\n ")[: length - 1].ljust(length - 1) + "\n"  # keep the padded length
    return raw[:10] + new.encode("latin1") + raw[10 + length:]


def _zip(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _unsupported_version(path) -> None:
    """A valid archive whose central directory asks for zip version 25.5 (Python's zipfile raises
    NotImplementedError while opening it, before any member is read)."""
    raw = bytearray(_npz_bytes(False))
    central = raw.index(b"PK\x01\x02")
    raw[central + 6:central + 8] = struct.pack("<H", 255)
    path.write_bytes(bytes(raw))


def _declare_size(path, size: int) -> None:
    """Rewrite the uncompressed size a one-member zip declares (local header and central directory)."""
    raw = bytearray(path.read_bytes())
    raw[22:26] = struct.pack("<I", size)  # local file header
    central = raw.rindex(b"PK\x01\x02")
    raw[central + 24:central + 28] = struct.pack("<I", size)
    path.write_bytes(bytes(raw))


X = np.zeros((4, 2), np.float32)
CRAFTED = {
    # name: (writer(path), message)
    "pickled object array": (lambda p: np.savez(p, x=np.array([{"a": 1}, None], dtype=object)),
                             r"holds Python objects \(dtype object\), which can only be read by unpickling"),
    "0-d x": (lambda p: np.savez(p, x=np.float32(1)), r"x is a single number"),
    "huge declared shape": (lambda p: _zip(p, {"x.npy": _npy(X, "(1000000000000, 1000)")}),
                            r"declares shape \(1000000000000, 1000\) of float32 .* but the archive holds 32 bytes"),
    "negative dimension": (lambda p: _zip(p, {"x.npy": _npy(X, "(-4, 2)")}), r"declares an invalid shape \(-4, 2\)"),
    "string x": (lambda p: np.savez(p, x=np.array([b"ab", b"cd"])), r"dtype \|S2"),
    "datetime x": (lambda p: np.savez(p, x=np.array(["2020-01-01"], "datetime64[D]")), r"dtype datetime64"),
    "structured x": (lambda p: np.savez(p, x=np.zeros(3, [("a", "f4"), ("b", "i4")])), r"dtype \[\('a'"),
    "not an npy member": (lambda p: _zip(p, {"x.npy": b"just text"}), r"member 'x\.npy' is not a \.npy array"),
    "unexpected member": (lambda p: _zip(p, {"x.npy": _npy(X), "../../evil.sh": b"rm -rf"}),
                          r"unexpected arrays \['\.\./\.\./evil\.sh'\]"),
    "not a zip": (lambda p: p.write_bytes(b"\x93NUMPY" + b"\0" * 50), r"not an \.npz archive \(BadZipFile"),
    "empty file": (lambda p: p.write_bytes(b""), r"not an \.npz archive"),
    "unsupported zip version": (_unsupported_version,
                                r"not an \.npz archive \(NotImplementedError: zip file version 25\.5"),
    "bad CRC": (lambda p: p.write_bytes(_npz_bytes(False).replace(_npy(np.arange(20) % 4)[-8:], b"\x07" * 8, 1)),
                r"corrupt \.npz archive \(BadZipFile: Bad CRC-32"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_npz_is_a_data_error(tmp_path, case):
    write, pattern = CRAFTED[case]
    path = tmp_path / "d.npz"
    write(path)
    before = path.read_bytes()
    with pytest.raises(DataError, match=pattern):
        load_dataset(path)
    assert path.read_bytes() == before


def test_zip_bomb_declaring_a_terabyte_is_refused_before_reading(tmp_path):
    """A header declaring 4 TB (and an entry declaring 4 GiB of a few kB stored): refused from the headers alone.

    The cap itself (the machine's memory) is checked with a small ``max_bytes``: a test cannot write
    an archive larger than the memory of the machine that runs it.
    """
    path = tmp_path / "bomb.npz"
    shape = "(1000000000000,)"  # float32: 4 TB
    header_only = _npy(np.zeros(1, np.float32), shape)[:-4]
    _zip(path, {"x.npy": header_only + bytes(4096)}, zipfile.ZIP_DEFLATED)
    _declare_size(path, 0xFFFFFFFF)  # the most a plain zip entry can declare: 4 GiB
    with pytest.raises(DataError, match=r"declares shape \(1000000000000,\) of float32 \(3725\.29 GiB\)"):
        load_dataset(path)
    started = time.perf_counter()
    small = tmp_path / "small.npz"
    np.savez(small, x=np.zeros((1000, 100), np.float32))
    with pytest.raises(DataError, match=r"declare 400,000 bytes in all, more than the 1,000 bytes"):
        read_npz(small, {"x"}, max_bytes=1000)
    assert time.perf_counter() - started < 1.0


def test_member_that_inflates_past_its_declared_size_is_cut_off(tmp_path):
    """Header and zip entry agree on 36 kB but the stream inflates to 40 kB: zipfile stops at the
    declared size, the CRC check fails, and nothing past it is read."""
    path = tmp_path / "liar.npz"
    _zip(path, {"x.npy": _npy(np.zeros((1000, 10), np.float32), "(900, 10)")}, zipfile.ZIP_DEFLATED)
    header_bytes = 128
    _declare_size(path, 900 * 10 * 4 + header_bytes)
    with pytest.raises(DataError, match=r"corrupt \.npz archive \(BadZipFile: Bad CRC-32 for file 'x\.npy'\)"):
        load_dataset(path)
