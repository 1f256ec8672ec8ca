"""``edgeqd bench`` and ``edgeqd devices`` as a user runs them (a subprocess, real exit codes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgeqd.types import EMULATED_LATENCY_NOTE


def edgeqd(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from edgeqd.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=timeout)


FAST = ["--runs", "5", "--warmup", "1", "--min-seconds", "0", "--samples", "100", "-q"]


@pytest.mark.slow
def test_acceptance_local_and_qemu_one_table(models, aarch64_sysroot, tmp_path):
    out = tmp_path / "bench.json"
    done = edgeqd("bench", str(models["int8.tflite"]), str(models["fp32.tflite"]), str(models["int8.onnx"]),
                  "--device", "local", "--device", "qemu-aarch64", "--data", "fashion-mnist",
                  "--json", str(out), *FAST)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert EMULATED_LATENCY_NOTE in done.stdout
    document = json.loads(out.read_text())
    rows = document["rows"]
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    assert document["emulated_latency_note"] == EMULATED_LATENCY_NOTE
    for artifact in ("model_int8.tflite", "model_fp32.tflite", "model_int8.onnx"):
        local, emulated = [r for r in rows if r["artifact"] == artifact]
        assert emulated["accuracy"] == local["accuracy"]
        assert emulated["latency_note"] == EMULATED_LATENCY_NOTE and local["latency_note"] == ""
    # An existing --json file is not overwritten without --force.
    again = edgeqd("bench", str(models["int8.tflite"]), "--device", "local", "--json", str(out), *FAST)
    assert again.returncode == 2 and "--force" in again.stderr


def test_exit_5_only_when_every_row_failed(models, tmp_path):
    unreachable = ["--device", "ssh://nobody@127.0.0.1:1"]
    done = edgeqd("bench", str(models["int8.tflite"]), *unreachable, "--json", "-", *FAST)
    assert done.returncode == 5 and "all 1 row(s) failed" in done.stderr
    assert json.loads(done.stdout)["rows"][0]["status"] == "failed"
    done = edgeqd("bench", str(models["int8.tflite"]), *unreachable, "--device", "local", *FAST)
    assert done.returncode == 0 and "failed" in done.stdout


def test_profile_flag_prints_per_op_tables_and_json(models, tmp_path):
    out = tmp_path / "bench.json"
    done = edgeqd("bench", str(models["int8.onnx"]), str(models["int8.tflite"]), "--device", "local",
                  "--profile", "--json", str(out), *FAST)
    assert done.returncode == 0, done.stderr
    assert "per-op profile: model_int8.onnx on local" in done.stdout and "QuantizeLinear" in done.stdout
    assert "per-op profile: model_int8.tflite on local × 1 thread(s): not available" in done.stdout
    onnx_row, tflite_row = json.loads(out.read_text())["rows"]
    assert onnx_row["profile"]["available"] and onnx_row["profile"]["by_op_type"]
    assert tflite_row["profile"]["available"] is False


def test_usage_errors_are_one_line(models):
    done = edgeqd("bench", str(models["int8.tflite"]), "--device", "toaster")
    assert done.returncode == 2 and done.stderr.startswith("error: unknown device") and "Traceback" not in done.stderr
    done = edgeqd("bench", str(models["int8.tflite"]), "--device", "local", "--threads", "1,x")
    assert done.returncode == 2 and "--threads" in done.stderr


def test_devices_list_and_probe(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("- name: bench-host\n  spec: local\n  notes: on AC power\n")
    done = edgeqd("devices", "list", "--devices", str(fleet), "--json")
    listing = json.loads(done.stdout)
    assert {k["kind"] for k in listing["kinds"]} == {"local", "qemu-aarch64", "qemu-armv7", "ssh", "adb", "tflm"}
    assert listing["configured"][0]["name"] == "bench-host"
    done = edgeqd("devices", "probe", "local")
    assert done.returncode == 0 and json.loads(done.stdout)["device"]["cores"] >= 1
    done = edgeqd("devices", "probe", "ssh://nobody@127.0.0.1:1")
    assert done.returncode == 5 and "ssh connection failed" in done.stderr


def test_same_named_artifacts_from_two_folders_are_two_rows_labelled_by_folder(models, tmp_path):
    """Comparing ptq/model_int8.tflite with qat/model_int8.tflite: one row each, told apart by folder."""
    import shutil

    for folder in ("ptq", "qat"):
        (tmp_path / folder).mkdir()
        shutil.copy(models["int8.tflite"], tmp_path / folder / "model_int8.tflite")
    out = tmp_path / "bench.json"
    done = edgeqd("bench", str(tmp_path / "ptq" / "model_int8.tflite"), str(tmp_path / "qat" / "model_int8.tflite"),
                  "--device", "local", "--out", str(out), *FAST)
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["schema"] == "edgeqd-bench/1"
    assert [r["artifact"] for r in document["rows"]] == ["ptq/model_int8.tflite", "qat/model_int8.tflite"]
    assert "ptq/" in done.stdout and "qat/" in done.stdout  # the table may fold long labels


def test_json_flag_prints_the_document_instead_of_the_table(models):
    done = edgeqd("bench", str(models["int8.tflite"]), "--device", "local", "--json", *FAST)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["schema"] == "edgeqd-bench/1" and document["rows"][0]["status"] == "ok"
    assert document["settings"]["runs"] == 5 and document["settings"]["threads"] == [1]
