"""The CLI's contract: --help everywhere, exit codes, one-line errors, nothing half-written.

Each bad input from the convert issue gets a case: a typed error, its exit code, a
message that names the problem, no traceback and no output folder left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from edgeqd.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _all_commands(group, prefix=()):
    for name, command in sorted(group.commands.items()):
        yield prefix + (name,)
        if hasattr(command, "commands"):
            yield from _all_commands(command, prefix + (name,))


def test_help_on_every_command():
    commands = list(_all_commands(cli))
    assert ("convert",) in commands
    for path in commands:
        result = run(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and "edgeqd" in result.output


@pytest.fixture()
def bad_npz(tmp_path, small_npz):
    """Write a variant of the small dataset with one thing wrong."""

    def make(**changes):
        arrays = dict(np.load(small_npz, allow_pickle=False))
        arrays.update(changes)
        path = tmp_path / "bad.npz"
        np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
        return path

    return make


def _corrupt_model(tmp_path):
    path = tmp_path / "corrupt.keras"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    return path


def _lambda_model(tmp_path):
    import tf_keras as keras

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(lambda x: x * 2, name="double"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    return path


def _wrong_input_model(tmp_path):
    import tf_keras as keras

    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    path = tmp_path / "rgb32.keras"
    model.save(path)
    return path


CASES = {
    # name: (builder(tmp_path, small_model_path, small_npz, bad_npz) -> extra args, exit code, message regex)
    "missing model": (lambda t, m, d, b: [t / "nope.keras", "--data", d], 3, r"model not found: .*nope\.keras"),
    "corrupt model": (lambda t, m, d, b: [_corrupt_model(t), "--data", d], 3, r"corrupt or unreadable model"),
    "lambda layer": (lambda t, m, d, b: [_lambda_model(t), "--data", d], 3,
                     r"double \(Lambda\).*--unsafe-deserialization"),
    "input shape mismatch": (lambda t, m, d, b: [_wrong_input_model(t), "--data", d], 3,
                             r"expects inputs of shape \(32, 32, 3\) but .* \(28, 28, 1\)"),
    "labels out of range": (lambda t, m, d, b: [m, "--data", b(y=np.full(1500, 12))], 3,
                            r"labels go up to 12 but the model has 10 outputs"),
    # Real-valued y is a regression target: on a 10-class model the message says how to give either.
    "real-valued y on a classifier": (lambda t, m, d, b: [m, "--data", b(y=np.full(1500, 0.5))], 3,
                                      r"y holds real values \(regression targets, 1 per sample\) but the model has "
                                      r"10 outputs; give integer class labels 0\.\.9"),
    "NaN in data": (lambda t, m, d, b: [m, "--data", b(x=np.full((1500, 28, 28, 1), np.nan, np.float32))], 3,
                    r"1500 sample\(s\) of x contain NaN or inf \(first: x\[0\]"),
    "empty data": (lambda t, m, d, b: [m, "--data", b(x=np.zeros((0, 28, 28, 1), np.float32), y=np.zeros(0, int))],
                   3, r"training split is empty \(0 samples\)"),
    "unknown format": (lambda t, m, d, b: [m, "--data", d, "--formats", "tflite-int8,coreml"], 2,
                       r"unknown format\(s\) coreml; choose from"),
    "missing data": (lambda t, m, d, b: [m, "--data", t / "none.npz"], 3, r"data not found"),
    "pickled data": (lambda t, m, d, b: [m, "--data", _pickled_npz(t)], 3, r"without pickle"),
}


def _pickled_npz(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_a_one_line_typed_error(case, tmp_path, small_model_path, small_npz, bad_npz):
    build, code, pattern = CASES[case]
    out = tmp_path / "out"
    result = run("convert", *build(tmp_path, small_model_path, small_npz, bad_npz), "--out", out)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.output
    import re

    assert re.search(pattern, error_lines[0]), error_lines[0]
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp folder left


def test_unwritable_output_folder(tmp_path, small_model_path, small_npz):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run("convert", small_model_path, "--data", small_npz, "--out", blocker / "out")
    assert result.exit_code == 2
    assert "is not a folder" in result.output


def test_existing_output_needs_force(tmp_path, small_model_path, small_npz):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run("convert", small_model_path, "--data", small_npz, "--out", out)
    assert result.exit_code == 2 and "--force" in result.output
    assert (out / "keep.txt").read_text() == "mine"


def test_json_output_is_the_manifest(tmp_path, small_model_path, small_npz):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["convert", str(small_model_path), "--data", str(small_npz), "--out", str(out),
                                      "--formats", "tflite-int8", "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["artifacts"][0]["inputs"][0]["dtype"] == "int8"


@pytest.mark.slow
def test_real_process_exit_code_and_no_traceback(tmp_path, small_npz):
    """The installed console script, in its own process: exit 3 and one line on stderr."""
    proc = subprocess.run([sys.executable, "-m", "edgeqd", "convert", str(tmp_path / "missing.h5"),
                           "--data", str(small_npz), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert "error: model not found" in proc.stderr


def test_unknown_npz_keys_are_refused(tmp_path, small_model_path):
    path = tmp_path / "extra.npz"
    np.savez(path, x=np.zeros((4, 28, 28, 1), np.float32), y=np.zeros(4, int), labels=np.zeros(4))
    result = run("convert", small_model_path, "--data", path, "--out", tmp_path / "o")
    assert result.exit_code == 3 and "unexpected arrays ['labels']" in result.output


def test_zip_without_config_is_a_corrupt_model(tmp_path, small_npz):
    path = tmp_path / "empty.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("nothing.txt", "")
    result = run("convert", path, "--data", small_npz, "--out", tmp_path / "o")
    assert result.exit_code == 3 and "corrupt or unreadable" in result.output


def test_convert_distill_from_runs_distill_then_convert(tmp_path, small_model_path, small_npz):
    """One command: a student distilled from the tiny CNN, converted and verified, kept beside the artifacts."""
    out = tmp_path / "out"
    result = run("convert", "--distill-from", small_model_path, "--student", "mlp", "--distill-epochs", 1,
                 "--data", small_npz, "--out", out, "--formats", "tflite-int8", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    distillation = manifest["distillation"]
    assert distillation["student_path"] == "student.keras" and (out / "student.keras").exists()
    assert (out / "student.distill.json").exists()
    assert distillation["student_params"] == manifest["input_model"]["params"]
    from edgeqd.models import load_model

    assert distillation["teacher_params"] == load_model(small_model_path).count_params()
    assert manifest["artifacts"][0]["status"] == "ok"


def test_convert_needs_a_model_or_a_teacher(tmp_path, small_model_path, small_npz):
    result = run("convert", "--data", small_npz, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "give MODEL, or --distill-from" in result.output
    result = run("convert", small_model_path, "--distill-from", small_model_path, "--data", small_npz,
                 "--out", tmp_path / "o")
    assert result.exit_code == 2 and "not both" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args", [["bench", "x.tflite", "--device", "local", "--runs", "abc"],
                                  ["convert", "m.keras", "--data", "d.npz", "--out", "o", "--max-drop", "nan"],
                                  ["convert", "--no-such-option"], ["no-such-command"]])
def test_click_usage_errors_are_one_error_line(args):
    """Options click itself rejects get the same one-line error and exit 2 as edgeqd's own checks."""
    result = run(*args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0], result.output


def test_bare_command_prints_help_and_succeeds():
    result = run()
    assert result.exit_code == 0 and "Usage:" in result.output and "Commands:" in result.output


def test_more_calibration_samples_than_data_calibrates_on_all_with_a_note(tmp_path, small_model_path, small_npz):
    out = tmp_path / "out"
    result = run("convert", small_model_path, "--data", small_npz, "--out", out, "--formats", "tflite-int8",
                 "--calibration-samples", 5000)
    assert result.exit_code == 0, result.output
    assert "note: calibrated on all 1500 training samples (5000 asked for)" in result.output
    calibration = json.loads((out / "manifest.json").read_text())["calibration"]
    assert calibration["samples"] == 1500 and "5000 asked for" in calibration["note"]
