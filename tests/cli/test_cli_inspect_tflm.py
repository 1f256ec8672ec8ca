"""``edgeqd inspect --target tflm``: TensorFlow Lite Micro compatibility per op, tables and JSON."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from report_fixtures import tiny_run
from report_fixtures import artifact_path as artifact
from tflm_models import gelu_int8

from edgeqd.cli import cli


@pytest.fixture(scope="module")
def run():
    return tiny_run()


def test_runnable_model_lists_each_op_with_its_resolver_method(run):
    path = str(artifact(run, "tflite-int8"))
    table = CliRunner().invoke(cli, ["inspect", path, "--target", "tflm"])
    assert table.exit_code == 0, table.output
    assert "AddConv2D()" in table.output and "TFLM can run it: MicroMutableOpResolver<4>" in table.output
    answer = json.loads(CliRunner().invoke(cli, ["inspect", path, "--target", "tflm", "--json"]).output)["tflm"]
    ops = {row["op"]: row for row in answer["ops"]}
    assert answer["runnable"] and set(ops) == {"CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED"}
    assert ops["FULLY_CONNECTED"]["kernel"] == "cmsis-nn" and ops["RESHAPE"]["kernel"] == "reference"
    assert all(row["status"] == "ok" for row in ops.values())
    # Without --target nothing about TFLM is added.
    assert "tflm" not in json.loads(CliRunner().invoke(cli, ["inspect", path, "--json"]).output)


def test_an_op_tflm_lacks_is_named(tmp_path):
    path = gelu_int8(tmp_path / "gelu_int8.tflite")
    answer = json.loads(CliRunner().invoke(cli, ["inspect", str(path), "--target", "tflm", "--json"]).output)["tflm"]
    gelu = next(row for row in answer["ops"] if row["op"] == "GELU")
    assert not answer["runnable"] and gelu["status"] == "missing" and gelu["method"] == ""
    assert any("GELU" in problem for problem in answer["problems"])
    table = CliRunner().invoke(cli, ["inspect", str(path), "--target", "tflm"])
    assert table.exit_code == 0 and "TFLM cannot run it" in table.output and "AllocateTensors" in table.output


def test_target_tflm_refuses_onnx(run):
    result = CliRunner().invoke(cli, ["inspect", str(artifact(run, "onnx-int8")), "--target", "tflm"])
    assert result.exit_code == 2 and "takes a .tflite file" in result.output and "Traceback" not in result.output


def test_int4_unpack_is_an_upper_bound_on_the_arena_growth(run):
    """TFLM's int4 unpack buffer is planned like a tensor: the arena grows by at most the largest filter."""
    table = CliRunner().invoke(cli, ["inspect", str(artifact(run, "tflite-w4a8")), "--target", "tflm"])
    assert table.exit_code == 0, table.output
    text = " ".join(table.output.split())
    assert "arena scratch buffer: up to +" in text and "bench --device tflm" in text
