"""``edgeqd report``: the shell over write_report (exit codes, the line it prints)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from report_fixtures import tiny_run

from edgeqd.cli import cli


@pytest.fixture(scope="module")
def run():
    return tiny_run()


def test_cli_report(run, tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.html"
    result = runner.invoke(cli, ["report", str(run["dir"]), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    again = runner.invoke(cli, ["report", str(run["dir"]), "-o", str(out)])
    assert again.exit_code == 2 and "Traceback" not in again.output
    missing = runner.invoke(cli, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2


def test_cli_report_markdown_and_title(run, tmp_path):
    out = tmp_path / "r.md"
    result = CliRunner().invoke(cli, ["report", str(run["dir"]), "--markdown", "--title", "T", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("# T") and (tmp_path / "r_files").is_dir()
