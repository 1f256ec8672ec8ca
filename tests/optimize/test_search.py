"""``edgeqd optimize`` end to end on a tiny real search: outputs, --resume, exit 4, refused latency budgets."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

import edgeqd  # noqa: F401
from edgeqd.cli import cli
from optimize_helpers import TINY, candidates, teacher, write_npz


def run(*args):
    return CliRunner().invoke(cli, ["optimize", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_npz(tmp_path_factory.mktemp("data"))


@pytest.mark.slow
def test_tiny_search_ships_a_verified_artifact_within_budget_and_resumes(npz, tmp_path):
    out = tmp_path / "opt"
    result = run("--teacher", teacher(), "--data", npz, "--out", out, "--device", "local", "--trials", "2",
                 "--max-size-kb", "16", *TINY)
    assert result.exit_code == 0, result.output
    document = candidates(out)
    assert (out / "study.db").is_file() and (out / "report.html").is_file()
    assert "data:image/png;base64" in (out / "report.html").read_text()  # the Pareto plots are drawn
    trained = [r for r in document["candidates"] if r["status"] == "trained"]
    assert len(trained) == 2
    for row in trained:
        # The size measured before training is the shipped size: same graph, same tensors; only the
        # digits of the I/O scales written as text into the metadata differ (8 bytes seen).
        assert abs(row["size_untrained_bytes"] - row["size_bytes"]) <= 64
        assert row["latency_ms"] > 0  # measured on the local device
    chosen = next(r for r in trained if r["number"] == document["chosen"])
    shipped = out / "best" / chosen["file"]
    assert shipped.stat().st_size == chosen["size_bytes"] <= 16 * 1024
    assert (out / "best" / "manifest.json").is_file() and (out / "best" / "INTEGRATION.md").is_file()
    held = document["held_out"]
    assert held["trial"] == chosen["number"] and held["samples"] == 60  # half of the 120 held-out samples
    assert document["objectives"] == ["drop_pts", "size_kb", "latency_ms"]
    assert document["teacher"]["accuracy_selection"] > 0.9  # the teacher solves the task

    again = run("--teacher", teacher(), "--data", npz, "--out", out, "--device", "local", "--trials", "2",
                "--max-size-kb", "16", *TINY)
    assert again.exit_code == 2 and "--resume" in again.output  # never overwritten silently

    resumed = run("--teacher", teacher(), "--data", npz, "--out", out, "--device", "local", "--trials", "3",
                  "--max-size-kb", "16", "--resume", *TINY)
    assert resumed.exit_code == 0, resumed.output
    rows = candidates(out)["candidates"]
    assert [r["number"] for r in rows[:len(document["candidates"])]] == [r["number"] for r in document["candidates"]]
    assert sum(r["status"] == "trained" for r in rows) == 3  # the same study, one more trained candidate


@pytest.mark.slow
def test_an_impossible_budget_exits_4_with_the_closest_candidate_and_what_to_relax(npz, tmp_path):
    from edgeqd.distillation.students import build_student

    student = tmp_path / "mine.keras"
    build_student("mlp", (64, 2), 3, width=0.125).save(student)
    out = tmp_path / "opt"
    result = run("--teacher", teacher(), "--data", npz, "--out", out, "--trials", "1", "--max-size-kb", "1",
                 "--family", "mlp", "--student", student, *TINY)
    assert result.exit_code == 4, result.output
    assert "no candidate meets the budget" in result.output and "--max-size-kb" in result.output
    document = candidates(out)
    assert document["chosen"] is None and not (out / "best").exists()
    statuses = {r["status"] for r in document["candidates"]}
    assert "trained" not in statuses and "pruned" in statuses  # pruned on their exact size, never trained
    assert any(re.search(r"[0-9,]+ B > --max-size-kb 1 \(1,024 B; exact", r["reason"] or "")
               for r in document["candidates"])
    mine = document["candidates"][0]  # the user's student is tried first, measured like every candidate
    assert mine["candidate"]["family"] == "file" and mine["status"] == "pruned" and mine["size_kb"] > 1


@pytest.mark.slow
def test_a_mixed_candidate_is_pruned_on_its_int4_lower_bound_and_ships_its_searched_bits(npz, tmp_path):
    """precision mixed: its bits are searched after training (--precision auto), so before training only
    its all-int4 twin's size is known (a lower bound); its latency is measured on the shipped file."""
    out = tmp_path / "opt"
    options = [o if o != "int8" else "mixed" for o in TINY]  # --precisions mixed
    result = run("--teacher", teacher(), "--data", npz, "--out", out, "--device", "local", "--trials", "1",
                 "--family", "mlp", "--max-size-kb", "64", *options)
    assert result.exit_code == 0, result.output
    trained = [r for r in candidates(out)["candidates"] if r["status"] == "trained"]
    assert len(trained) == 1 and trained[0]["candidate"]["precision"] == "mixed"
    row = trained[0]
    assert row["file"] == "model_mixed.tflite" and row["latency_ms"] > 0
    assert row["size_bytes"] >= row["size_untrained_bytes"] - 64  # int4 everywhere is the smallest it can be
    manifest = json.loads((out / "best" / "manifest.json").read_text())
    layers = manifest["artifacts"][0]["details"]["layers"]
    assert layers and all(layer["bits"] in (4, 8) for layer in layers)


def test_an_emulated_device_cannot_satisfy_a_latency_budget(npz, tmp_path):
    out = tmp_path / "opt"
    result = run("--teacher", teacher(), "--data", npz, "--out", out, "--device", "qemu-aarch64",
                 "--max-latency-ms", "5")
    assert result.exit_code == 2
    assert "emulated" in result.output and "cannot satisfy --max-latency-ms" in result.output
    assert not out.exists()


def test_a_latency_budget_needs_a_device(npz, tmp_path):
    result = run("--teacher", teacher(), "--data", npz, "--out", tmp_path / "opt", "--max-latency-ms", "5")
    assert result.exit_code == 2 and "needs --device" in result.output
