"""``edgeqd distill`` as a user runs it: exit codes, one-line errors, files written or not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgeqd  # noqa: F401
from distill_helpers import fashion_slices, image_teacher_path
from edgeqd.cli import cli
from edgeqd.data import find_fashion_mnist

pytestmark = pytest.mark.skipif(find_fashion_mnist() is None,
                                reason="Fashion-MNIST not installed: run `make data`")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    data = fashion_slices()[1]
    path = tmp_path_factory.mktemp("data") / "slice.npz"
    np.savez(path, x=data.x_train, y=data.y_train, x_val=data.x_eval, y_val=data.y_eval)
    return path


@pytest.fixture(scope="module")
def unlabelled_npz(tmp_path_factory):
    data = fashion_slices()[1]
    path = tmp_path_factory.mktemp("data") / "unlabelled.npz"
    np.savez(path, x=data.x_train)
    return path


def test_list_students_for_the_teacher_and_data(npz):
    result = run("distill", "--list-students", "--teacher", image_teacher_path(), "--data", npz, "--json")
    assert result.exit_code == 0, result.output
    listing = json.loads(result.output)
    assert listing["input_shape"] == [28, 28, 1] and listing["num_classes"] == 10
    rows = {r["family"]: r for r in listing["students"]}
    assert rows["cnn"]["fits"] and not rows["conv1d"]["fits"]
    assert 1 / 20 <= rows["cnn"]["fraction_of_teacher"] <= 1 / 10
    table = run("distill", "--list-students")
    assert table.exit_code == 0 and "mobilenet" in table.output and "params" in table.output


def test_distill_command_writes_student_and_report(npz, tmp_path):
    out = tmp_path / "student.keras"
    result = run("distill", "--teacher", image_teacher_path(), "--data", npz, "--student", "mlp", "--out", out,
                 "--epochs", 2, "--batch-size", 64, "--quiet", "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["student_path"] == str(out) and out.is_file()
    assert (tmp_path / "student.distill.json").is_file()
    assert figures["settings"]["student"] == "mlp" and figures["epochs_run"] == 2
    again = run("distill", "--teacher", image_teacher_path(), "--data", npz, "--out", out, "--quiet")
    assert again.exit_code == 2 and "already exists" in again.output and "--force" in again.output


def test_no_label_data_through_the_command(unlabelled_npz, tmp_path):
    result = run("distill", "--teacher", image_teacher_path(), "--data", unlabelled_npz, "--student", "mlp",
                 "--out", tmp_path / "s.keras", "--epochs", 1, "--quiet", "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["student_accuracy"] is None and figures["settings"]["labels"] is False


@pytest.mark.parametrize("args, code, words", [
    (["--temperature", "0"], 2, "--temperature must be a finite number > 0, got 0.0"),
    (["--alpha", "2"], 2, "--alpha must be within [0, 1], got 2.0"),
    (["--width", "0"], 2, "--width must be a finite number > 0, got 0.0"),
    (["--feature", "nope:relu1"], 3, "has no layer 'nope'; its layers are: t_conv1"),
    (["--feature", "no-colon"], 2, "write it as teacher_layer:student_layer"),
    (["--student", "resnet"], 2, "unknown student 'resnet'"),
])
def test_bad_input_is_one_line_with_its_exit_code(npz, tmp_path, args, code, words):
    out_dir = tmp_path / "out"
    result = run("distill", "--teacher", image_teacher_path(), "--data", npz, "--out", out_dir / "s.keras",
                 "--quiet", *args)
    assert result.exit_code == code, result.output
    assert words in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1
    assert not out_dir.exists()


def test_missing_options_are_named():
    result = run("distill", "--data", "fashion-mnist")
    assert result.exit_code == 2 and "missing --teacher, --out" in result.output
