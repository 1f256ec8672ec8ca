"""Bounded fuzz loops (issue 10): mutated artifacts and archives give typed errors, never a crash.

Each loop has a fixed seed and a fixed count (200) so a failure replays exactly; the
failing iteration and its mutation are in the assertion message. Mutations: flipped
bytes, truncation, inserted and deleted runs, and 32-bit words set to extremes (the
offsets and lengths flatbuffers, protobuf and zip headers are built from); a share of
them aims at the file's tail, where a ``.tflite`` keeps its packed labels zip.
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
from click.testing import CliRunner

from edgeqd.cli import cli
from edgeqd.data import load_dataset
from edgeqd.errors import DataError
from edgeqd.data.npz import read_npz

ITERATIONS = 200
SECONDS = 10  # each loop must stay well inside this on the 2-core CI machines


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One random mutation of ``data`` and a short description of it."""
    b = bytearray(data)
    if rng.random() < 0.3 and len(b) > 64:  # the tail: a .tflite's labels zip, a zip's central directory
        cut = len(b) - min(len(b) // 2, 400)
        tail, what = mutate(bytes(b[cut:]), rng)
        return bytes(b[:cut]) + tail, f"tail {cut}: {what}"
    kind = rng.randrange(5)
    if kind == 0:
        positions = [rng.randrange(len(b)) for _ in range(rng.randint(1, 8))]
        for pos in positions:
            b[pos] = rng.randrange(256)
        return bytes(b), f"bytes set at {positions}"
    if kind == 1:
        keep = rng.randrange(len(b))
        return bytes(b[:keep]), f"truncated to {keep}"
    if kind == 2:
        pos = rng.randrange(len(b) + 1)
        b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        return bytes(b), f"inserted at {pos}"
    if kind == 3:
        pos, n = rng.randrange(len(b)), rng.randint(1, 64)
        del b[pos:pos + n]
        return bytes(b), f"deleted {n} at {pos}"
    pos = rng.randrange(max(len(b) - 4, 1))
    word = rng.choice([b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\x00\x00\x00\x00",
                       rng.randrange(1 << 32).to_bytes(4, "little")])
    b[pos:pos + 4] = word
    return bytes(b), f"word {word.hex()} at {pos}"


# --------------------------------------------------------------------------- inspect

@pytest.mark.parametrize("artifact, seed", [("model_int8.tflite", 1), ("model_fp32.tflite", 2),
                                            ("model_int8.onnx", 3), ("model_fp32.onnx", 4)])
def test_inspect_fuzz_only_typed_errors(tmp_path, converted, artifact, seed):
    """`edgeqd inspect` (parse, then the terminal tables) on mutated real artifacts: exit 0 or 3, nothing else."""
    source = (converted.out / artifact).read_bytes()
    target = tmp_path / artifact
    rng = random.Random(seed)
    codes: Counter = Counter()
    started = time.perf_counter()
    for i in range(ITERATIONS):
        data, what = mutate(source, rng)
        target.write_bytes(data)
        result = CliRunner().invoke(cli, ["inspect", str(target)])
        codes[result.exit_code] += 1
        assert result.exit_code in (0, 3) and (result.exception is None or isinstance(result.exception, SystemExit)), \
            f"iteration {i} ({what}): exit {result.exit_code}, {result.exception!r}\n{result.output[-800:]}"
        if result.exit_code == 3:
            assert result.output.startswith("error: ") and "Traceback" not in result.output
    elapsed = time.perf_counter() - started
    assert elapsed < SECONDS * 3, f"{ITERATIONS} iterations took {elapsed:.1f} s"  # generous: shared CPUs
    # The loop reached both outcomes: mutations the parsers refuse and ones they accept (weights, names).
    assert codes[3] >= ITERATIONS // 10 and codes[0] >= 1, codes


def test_inspect_shows_names_from_the_file_as_text(tmp_path):
    """Names in an ONNX file that look like rich markup, or are not UTF-8, are shown, not interpreted."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["[/]in"], ["[bold]out"])], "g",
                              [helper.make_tensor_value_info("[/]in", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("[bold]out", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="note", value="[/red]")
    raw = model.SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(raw.replace(b"note", b"n\xffte"))  # a metadata key that is not UTF-8
    onnx.load_model_from_string(raw)  # the unmodified model is valid
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 0, (result.exception, result.output)
    assert "[/]in" in result.output and "[bold]out" in result.output and "[/red]" in result.output
    assert "n\ufffdte" in result.output


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
