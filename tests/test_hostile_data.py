"""Hostile data and messages (issue 10, items 8, 10-14): each bad input is one `error:` line with its
documented exit code, no traceback, and the inputs are byte-identical afterwards.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeqd.cli import cli
from edgeqd.data import load_dataset
from edgeqd.errors import DataError


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@contextlib.contextmanager
def unchanged(*paths):
    """Assert that every input is byte-identical after the block (and still there)."""
    before = {p: _digest(Path(p)) for p in paths}
    yield
    for path, digest in before.items():
        assert Path(path).exists(), f"{path} was removed"
        assert _digest(Path(path)) == digest, f"{path} was modified"


def assert_one_error(result, code: int, pattern: str) -> str:
    """The documented exit code, exactly one `error:` line matching ``pattern``, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    assert re.search(pattern, errors[0]), errors[0]
    return errors[0]


def convert_error(tmp_path, model, data, code, pattern, *extra, inputs=()):
    out = tmp_path / "out"
    with unchanged(model, *(inputs or [data])):
        result = run("convert", model, "--data", data, "--out", out, *extra)
    line = assert_one_error(result, code, pattern)
    assert not out.exists()
    return line


# --------------------------------------------------------------------------- item 8: npz with 0-d arrays

@pytest.mark.parametrize("arrays, pattern", [
    (dict(x=np.float32(1), y=np.arange(3)), r"x is a single number \(shape \(\)\); it needs a sample axis"),
    (dict(x=np.zeros((4, 28, 28, 1), np.float32), y=np.int64(2)), r"labels must have shape \(N,\)"),
    (dict(x=np.zeros((4, 28, 28, 1), np.float32), y=np.zeros(4, int), x_val=np.float32(0), y_val=np.zeros(1, int)),
     r"x_val is a single number"),
    (dict(x=np.zeros((4, 0), np.float32), y=np.zeros(4, int)), r"4 samples of shape \(0,\), which hold no values"),
    (dict(x=np.array(["a", "b"]), y=np.zeros(2, int)), r"x must be numeric, got dtype <U1"),
    (dict(x=np.ones((4, 2), complex)), r"dtype complex128; edgeqd reads numeric, boolean and unicode"),
    (dict(x=np.zeros((4, 2)), y_val=np.zeros(4, int)), r"y_val is given without x_val"),
])
def test_malformed_npz_arrays_are_data_errors(tmp_path, arrays, pattern):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with unchanged(path), pytest.raises(DataError, match=pattern):
        load_dataset(path)


def test_zero_d_x_through_the_cli_is_exit_3(tmp_path, small_model_path):
    path = tmp_path / "scalar.npz"
    np.savez(path, x=np.float32(1), y=np.arange(3))
    convert_error(tmp_path, small_model_path, path, 3, r"x is a single number .* save x with shape \(N, \.\.\.\)")


# --------------------------------------------------------------------------- item 8: damaged IDX files

def _write_idx(path, array, magic=None):
    header = magic or bytes([0, 0, 8, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture()
def idx_folder(tmp_path, monkeypatch):
    """A small intact Fashion-MNIST copy that EDGEQD_DATA points at."""
    folder = tmp_path / "idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 6)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    monkeypatch.setenv("EDGEQD_DATA", str(folder))
    return folder


def _gz_bytes(folder, name):
    return gzip.decompress((folder / name).read_bytes())


DAMAGE = {
    # name: (file, how to damage its bytes, message)
    "truncated gzip": ("t10k-labels-idx1-ubyte.gz", lambda f, raw: (f.read_bytes()[:20], None),
                       r"corrupt or truncated gzip file \(EOFError"),
    "not gzip": ("train-images-idx3-ubyte.gz", lambda f, raw: (b"<html>404</html>", None),
                 r"corrupt or truncated gzip file \(BadGzipFile"),
    "wrong magic": ("train-images-idx3-ubyte.gz", lambda f, raw: (None, b"\0\0\x0d\x03" + raw[4:]),
                    r"not an IDX file of unsigned bytes with 3 dimension\(s\) \(magic 00000d03"),
    "bytes missing": ("train-images-idx3-ubyte.gz", lambda f, raw: (None, raw[:-100]),
                      r"declares 9,408 bytes of data .* holds 9,308"),
    "bytes extra": ("t10k-labels-idx1-ubyte.gz", lambda f, raw: (None, raw + b"\0"), r"holds 6 and more"),
    "label 10": ("t10k-labels-idx1-ubyte.gz", lambda f, raw: (None, raw[:-1] + b"\x0a"),
                 r"label 10 found; Fashion-MNIST labels are 0\.\.9"),
    "counts differ": ("t10k-labels-idx1-ubyte.gz",
                      lambda f, raw: (None, raw[:4] + (5).to_bytes(4, "big") + raw[8:13]),
                      r"5 labels for 6 images in t10k-images-idx3-ubyte\.gz"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_idx_files_name_the_file_and_the_fix(case, idx_folder):
    name, damage, pattern = DAMAGE[case]
    file = idx_folder / name
    raw_file, raw_data = damage(file, _gz_bytes(idx_folder, name))
    if raw_file is not None:
        file.write_bytes(raw_file)
    else:
        with gzip.open(file, "wb") as handle:
            handle.write(raw_data)
    with unchanged(idx_folder):
        result = run("data", "fetch")  # checks the copy in use; offline, nothing is fetched
    line = assert_one_error(result, 3, pattern)
    assert str(file) in line and "`edgeqd data fetch --force`" in line and "EDGEQD_DATA" in line
    with pytest.raises(DataError, match=pattern):
        load_dataset("fashion-mnist")


def test_damaged_idx_through_convert_is_exit_3(tmp_path, idx_folder, small_model_path):
    file = idx_folder / "train-labels-idx1-ubyte.gz"
    file.write_bytes(file.read_bytes()[:-8])  # the gzip trailer (CRC, length) cut off
    convert_error(tmp_path, small_model_path, "fashion-mnist", 3, r"train-labels-idx1-ubyte\.gz: corrupt or "
                  r"truncated gzip .*edgeqd data fetch --force", inputs=[idx_folder])


def test_data_fetch_force_replaces_a_damaged_cache_copy(tmp_path, monkeypatch):
    """`data fetch --force` downloads Debian's package again into the cache (skipped when apt is offline)."""
    import edgeqd.data.fashion_mnist as fashion_mnist

    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        pytest.skip("needs apt-get and dpkg")
    monkeypatch.delenv("EDGEQD_DATA", raising=False)
    monkeypatch.setenv("EDGEQD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fashion_mnist, "_SYSTEM_DIR", tmp_path / "no-system-copy")  # the cache copy is in use
    copy = tmp_path / "cache" / "fashion-mnist" / "usr/share/datasets/fashion-mnist"
    copy.mkdir(parents=True)
    for name in fashion_mnist._FASHION_FILES.values():
        (copy / name).write_bytes(b"\x1f\x8b damaged")
    damaged = run("data", "fetch")
    assert_one_error(damaged, 3, r"BadGzipFile.*`edgeqd data fetch --force`")
    fetched = run("data", "fetch", "--force")
    if fetched.exit_code != 0 and "fetching failed" in fetched.output:
        pytest.skip(f"apt could not download {fashion_mnist.FASHION_MNIST_PACKAGE}: {fetched.output.strip()}")
    assert fetched.exit_code == 0, fetched.output
    assert fetched.output.strip() == str(copy)
    arrays = fashion_mnist.read_fashion_mnist_files(copy)
    assert arrays["x_train"].shape == (60000, 28, 28) and arrays["y_eval"].shape == (10000,)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".fashion-mnist.tmp-")]


# --------------------------------------------------------------------------- item 10: one-hot width

def test_one_hot_labels_narrower_than_the_model_are_refused(tmp_path, small_model_path, fashion):
    path = tmp_path / "onehot5.npz"
    labels = fashion.y_train[:300] % 5
    np.savez(path, x=fashion.x_train[:300], y=np.eye(5, dtype=np.float32)[labels])
    convert_error(tmp_path, small_model_path, path, 3, r"one-hot with 5 columns but the model has 10 outputs")


def test_one_hot_widths_of_the_two_splits_must_agree(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 2)), y=np.eye(3)[[0, 1, 2, 0]], x_val=np.zeros((2, 2)), y_val=np.eye(4)[[0, 3]])
    with pytest.raises(DataError, match="y is one-hot with 3 columns but y_val with 4"):
        load_dataset(path)
    np.savez(path, x=np.zeros((4, 2)), y=np.eye(3)[[0, 1, 2, 0]])
    assert load_dataset(path).label_width == 3


# --------------------------------------------------------------------------- item 11: class folder names

def _write_png(path, value, size=(28, 28)):
    import tensorflow as tf

    path.write_bytes(tf.io.encode_png(np.full((*size, 1), value, np.uint8)).numpy())


@pytest.mark.parametrize("bad_name", ["bag\nshoe", "bag\rshoe", "tab\there", "line\u2028sep", "nel\x85x"])
def test_class_folder_names_that_would_break_labels_txt_are_refused(tmp_path, bad_name):
    folder = tmp_path / "images"
    for i, name in enumerate(("coat", bad_name, "shirt")):
        (folder / name).mkdir(parents=True)
        _write_png(folder / name / "a.png", 40 * i)
    with unchanged(folder), pytest.raises(DataError) as caught:
        load_dataset(folder)
    assert f"class folder {bad_name!r} contains" in str(caught.value)
    assert "labels.txt" in str(caught.value) and "\n" not in str(caught.value)


def test_newline_class_folder_through_the_cli(tmp_path, small_model_path):
    folder = tmp_path / "images"
    for i, name in enumerate(("coat", "bag\nshoe", "shirt")):
        (folder / name).mkdir(parents=True)
        for j in range(3):
            _write_png(folder / name / f"{j}.png", 40 * i + j)
    convert_error(tmp_path, small_model_path, folder, 3, r"class folder 'bag\\nshoe' contains '\\n'")


# --------------------------------------------------------------------------- item 12: NaN named by file index

def test_nan_is_named_by_its_index_in_the_file(tmp_path, small_model_path, fashion):
    x = fashion.x_train[:100].copy()
    x[5, 3, 3, 0] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, x=x, y=fashion.y_train[:100])  # no x_val: a seeded split shuffles the samples
    convert_error(tmp_path, small_model_path, path, 3,
                  r"1 sample\(s\) of x contain NaN or inf \(first: x\[5\], its index in the file\)")
    x_val = fashion.x_eval[:30].copy()
    x_val[23] = np.inf
    np.savez(path, x=fashion.x_train[:100], y=fashion.y_train[:100], x_val=x_val, y_val=fashion.y_eval[:30])
    with pytest.raises(DataError, match=r"of x_val contain NaN or inf \(first: x_val\[23\]"):
        load_dataset(path)


def test_values_beyond_float32_are_named_too(tmp_path):
    path = tmp_path / "huge.npz"
    x = np.zeros((10, 2))
    x[7, 1] = 1e300  # finite in float64, inf once cast to float32
    np.savez(path, x=x)
    with pytest.raises(DataError, match=r"x contain values beyond float32's range .*first: x\[7\]"):
        load_dataset(path)


# --------------------------------------------------------------------------- item 13: messages

@pytest.mark.parametrize("content, found", [
    ("{}", r"an empty object \{\}"), ("[1, 2]", r"a list of 2 item\(s\)"), ('"text"', r"a str"),
    ('{"artifacts": {}, "data": {}}', r"an object with keys artifacts, data; expected an object with artifacts"),
    ('{"artifacts": [1], "data": {}}', r".*artifacts \(entries must be objects\)"),
])
def test_manifest_that_is_not_an_edgeqd_manifest(tmp_path, content, found):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text(content)
    with unchanged(run_dir):
        for target in (run_dir, run_dir / "manifest.json"):
            result = run("report", target, "-o", tmp_path / "r.html")
            assert_one_error(result, 3, r"manifest\.json: not an edgeqd manifest \(found " + found)
    assert not (tmp_path / "r.html").exists()


def test_manifest_that_is_not_json(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_bytes(b"\xff\xfe not json")
    assert_one_error(run("report", run_dir, "-o", tmp_path / "r.html"), 3, r"manifest\.json: not readable JSON")


def test_inspect_on_a_folder_suggests_its_artifacts(tmp_path, converted):
    with unchanged(converted.out):
        result = run("inspect", converted.out)
    line = assert_one_error(result, 3, r"is a folder, not an artifact; inspect one of the artifacts in it")
    assert "model_int8.tflite" in line and "model_fp32.onnx" in line
    assert_one_error(run("inspect", tmp_path), 3, r"is a folder, not an artifact; it holds no \.tflite or \.onnx")


def test_distill_epochs_error_names_its_own_option(tmp_path, small_model_path, small_npz):
    out = tmp_path / "out"
    with unchanged(small_model_path, small_npz):
        result = run("convert", "--distill-from", small_model_path, "--data", small_npz, "--out", out,
                     "--distill-epochs", -1)
    line = assert_one_error(result, 2, r"--distill-epochs must be >= 1, got -1")
    assert "--epochs" not in line.replace("--distill-epochs", "")
    assert not out.exists()


# --------------------------------------------------------------------------- item 14: markdown, formats, labels

def test_markdown_report_escapes_names_from_the_data(tmp_path, converted):
    run_dir = tmp_path / "<script>alert(1)"
    shutil.copytree(converted.out, run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["input_model"]["name"] = "<img src=x onerror=alert(1)>"
    manifest["artifacts"].append({"format": "tflite-int8", "file": "", "status": "failed",
                                  "reason": "pipe | and `code` and [link](javascript:alert(1))"})
    manifest["problems"] = ["<b>bold</b> & | pipes"]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "r.md"
    with unchanged(run_dir):
        result = run("report", run_dir, "--markdown", "-o", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "<script>" not in text and "<img" not in text and "<b>" not in text
    assert "## Pipeline: &lt;script&gt;alert(1)" in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert not re.search(r"(?<!\\)\]\(javascript:", text)  # escaped brackets: no link
    assert r"\[link\](javascript:" in text and r"\`code\`" in text
    # Every table row keeps its column count: pipes from the data are escaped.
    header = next(line for line in text.splitlines() if line.startswith("| run | artifact"))
    row = next(line for line in text.splitlines() if line.startswith("| ") and "pipe" in line)
    assert len(re.findall(r"(?<!\\)\|", row)) == len(re.findall(r"(?<!\\)\|", header)) == 11, (header, row)


@pytest.mark.parametrize("command", ["convert", "quantize"])
def test_formats_without_a_name_are_refused(tmp_path, small_model_path, small_npz, command):
    out = tmp_path / "out"
    with unchanged(small_model_path, small_npz):
        result = run(command, small_model_path, "--data", small_npz, "--out", out, "--formats", " , ,")
    assert_one_error(result, 2, r"--formats ' , ,': no formats given; choose from .*tflite-int8")
    assert not out.exists()


def test_labels_txt_for_npz_data_without_names(converted):
    """The session's convert run took an .npz without class names: one numbered name per output."""
    assert (converted.out / "labels.txt").read_text().splitlines() == [f"class_{i}" for i in range(10)]
    assert "labels.txt" in converted.manifest["bundle"]
    from edgeqd.artifact_info import inspect_artifact

    metadata = inspect_artifact(converted.out / "model_int8.tflite")["metadata"]
    assert metadata["TFLITE_METADATA"]["description"].startswith("image classification, 10 classes")
    assert [f["name"] for f in metadata["associated_files"]] == ["labels.txt"]


def test_labels_txt_from_npz_class_names(tmp_path, small_model_path, fashion):
    from edgeqd.data import FASHION_MNIST_CLASSES

    path = tmp_path / "named.npz"
    np.savez(path, x=fashion.x_train[:300], y=fashion.y_train[:300], class_names=np.array(FASHION_MNIST_CLASSES))
    out = tmp_path / "out"
    with unchanged(small_model_path, path):
        result = run("convert", small_model_path, "--data", path, "--out", out, "--formats", "tflite-fp32",
                     "--calibration-samples", 50)
    assert result.exit_code == 0, result.output
    assert (out / "labels.txt").read_text().splitlines() == list(FASHION_MNIST_CLASSES)
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO((out / "model_fp32.tflite").read_bytes())) as packed:
        assert packed.read("labels.txt").decode().splitlines() == list(FASHION_MNIST_CLASSES)


@pytest.mark.parametrize("names, pattern", [
    (np.array(["a", "b\nc", "d"]), r"class_names entry 'b\\nc' contains '\\n'"),
    (np.array(["a", "b"]), r"class_names has 2 names but the labels need 3"),
    (np.array([b"a", b"b", b"c"]), r"dtype \|S1; edgeqd reads numeric, boolean and unicode"),
    (np.array([["a", "b", "c"]]), r"class_names must be a non-empty 1-D array of strings"),
])
def test_npz_class_names_are_validated(tmp_path, names, pattern):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((6, 2)), y=np.arange(6) % 3, class_names=names)
    with pytest.raises(DataError, match=pattern):
        load_dataset(path)


def test_terminal_tables_show_markup_from_files_as_text():
    """Names and reasons come from users' files; rich must print "[/]" in them, not parse it."""
    import io

    from rich.console import Console

    from edgeqd.cli.bench import bench_table
    from edgeqd.cli.tables import convert_table
    from edgeqd.types import BenchResult, Status

    bench = bench_table([BenchResult("[/]x.tflite", "[bold]dev", "local", 1, Status.FAILED, reason="bad [/] thing")])
    manifest = {"input_model": {"name": "[/]m"}, "data": {"name": "[red]d"}, "keras": {"accuracy": 0.5, "samples": 2},
                "artifacts": [{"format": "tflite-int8", "status": "failed", "reason": "[/] broke"}]}
    for table in (bench, convert_table(manifest)):
        out = io.StringIO()
        Console(file=out, width=200).print(table)
        assert "[/]" in out.getvalue()
