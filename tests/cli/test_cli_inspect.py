"""``edgeqd inspect``: tables and JSON from the CLI, exit 3 without a traceback on a broken file."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from report_fixtures import tiny_run
from report_fixtures import artifact_path as artifact

from edgeqd.cli import cli
from edgeqd.cli.inspect import inspect_tables
from edgeqd.artifact_info import inspect_artifact


@pytest.fixture(scope="module")
def run():
    return tiny_run()


def test_cli_table_and_json(run):
    runner = CliRunner()
    path = str(artifact(run, "tflite-int8"))
    table = runner.invoke(cli, ["inspect", path])
    assert table.exit_code == 0, table.output
    assert "CONV_2D" in table.output and "full-int8" in table.output
    as_json = runner.invoke(cli, ["inspect", path, "--json"])
    assert json.loads(as_json.output)["quantization"] == "full-int8"


def test_cli_broken_file_exits_3_without_traceback(tmp_path):
    path = tmp_path / "junk.tflite"
    path.write_bytes(b"\x00" * 100)
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 3
    assert "Traceback" not in result.output and "not a TFLite flatbuffer" in result.output


def test_tables_name_every_section_of_the_answer(run):
    from rich.console import Console

    info = inspect_artifact(run["dynamic"])
    console = Console(record=True, width=200)
    for renderable in inspect_tables(info):
        console.print(renderable)
    text = console.export_text()
    assert info["quantization"] == "dynamic-range" and info["float_ops"] and info["metadata"]
    for expected in ("dynamic-range", "inputs and outputs", f"operators ({info['operator_count']})",
                     "ops computing in float", "embedded metadata", "hybrid"):
        assert expected in text
