"""``make demo``'s chain on a tiny budget: teacher → distilled QAT student → bench → report → summary.

The summary must not be able to print invented numbers: every figure it prints is parsed
back and compared with the manifests and the bench document the run wrote.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeqd import demo
from edgeqd.devices.bench import artifact_labels
from edgeqd.documents import read_document
from edgeqd.settings import BenchSettings, QATSettings

# One epoch on a thousand images: the chain, not the accuracy, is under test.
TINY = demo.DemoBudget(teacher_epochs=1, teacher_samples=1000, train_samples=1000,
                       distill=demo.DemoBudget().distill.replace(epochs=1),
                       qat=QATSettings(epochs=1, train_samples=500), eval_samples=300,
                       bench=BenchSettings(threads=(1,), runs=5, warmup=1, min_seconds=0.0, samples=100))

ROW = re.compile(r"^(teacher fp32|student int8)\s+([\d,]+)\s+([\d.]+) (MiB|KiB)\s+([\d.]+) %\s+([\d.]+) ms\s+([\d.]+) ms$")
STORY = re.compile(r"^student: ([\d.]+)× fewer parameters, ([\d.]+)× smaller, ([−+][\d.]+) pts accuracy, "
                   r"([\d.]+)× faster \(p50 LiteRT, this host\)$")


def _artifact(manifest: dict, name: str) -> dict:
    return next(row for row in manifest["artifacts"] if row["format"] == name)


def _p50(rows: list[dict], label: str) -> float:
    return next(row["p50_ms"] for row in rows if row["artifact"] == label and row["kind"] == "local")


def _close(printed: str, value: float) -> bool:
    """Whether ``printed`` is ``value`` rounded to the decimals printed."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return abs(float(printed) - value) <= 0.5 * 10 ** -decimals + 1e-12


@pytest.mark.slow
def test_demo_prints_the_figures_its_files_hold(fashion, tmp_path, monkeypatch, capsys):
    out, teacher = tmp_path / "demo_out", tmp_path / "cache" / "teacher.keras"
    monkeypatch.setenv("EDGEQD_DEMO_OUT", str(out))

    assert demo.main(budget=TINY, teacher=teacher) == 0
    printed = capsys.readouterr().out

    # The chain ran through the one path: a distilled student, QAT with the teacher, int8 artifacts.
    _, student = read_document(out / "manifest.json")
    _, teacher_run = read_document(out / demo.TEACHER_FOLDER / "manifest.json")
    _, bench = read_document(out / demo.BENCH_FILE)
    assert student["distillation"]["teacher_params"] == teacher_run["input_model"]["params"] == 871_210
    assert student["settings"]["qat"] is not None and student["quantize"]["teacher"] == str(teacher)
    assert {row["format"]: row["status"] for row in student["artifacts"]} == dict.fromkeys(demo.STUDENT_FORMATS, "ok")
    assert (out / "report.html").stat().st_size > 10_000 and teacher.is_file()

    rows = {m.group(1): m.groups()[1:] for m in map(ROW.match, printed.splitlines()) if m}
    assert set(rows) == {"teacher fp32", "student int8"}, printed
    listed = bench["settings"]["artifacts"]  # relative to the bench file's folder; rows are labelled by bench
    labels = dict(zip(listed, artifact_labels([out / path for path in listed])))
    expected = {}
    for label, manifest, fp, onnx, folder in (("teacher fp32", teacher_run, "tflite-fp32", "onnx-fp32", "teacher/"),
                                              ("student int8", student, "tflite-int8", "onnx-int8", "")):
        artifact = _artifact(manifest, fp)
        expected[label] = (manifest["input_model"]["params"], artifact["bytes"], artifact["evaluation"]["accuracy"],
                           _p50(bench["rows"], labels[folder + artifact["file"]]),
                           _p50(bench["rows"], labels[folder + _artifact(manifest, onnx)["file"]]))
        params, size, unit, accuracy, p50, onnx_p50 = rows[label]
        want_params, want_bytes, want_accuracy, want_p50, want_onnx = expected[label]
        assert int(params.replace(",", "")) == want_params
        assert _close(size, want_bytes / (2 ** 20 if unit == "MiB" else 1024))
        assert _close(accuracy, 100 * want_accuracy)
        assert _close(p50, want_p50) and _close(onnx_p50, want_onnx)
        assert artifact["evaluation"]["samples"] == TINY.eval_samples  # both on the same held-out images

    story = next(m for m in map(STORY.match, printed.splitlines()) if m)
    (tp, tb, ta, t50, _), (sp, sb, sa, s50, _) = expected["teacher fp32"], expected["student int8"]
    assert _close(story.group(1), tp / sp) and _close(story.group(2), tb / sb)
    assert _close(story.group(3).replace("−", "-"), 100 * (sa - ta))
    assert _close(story.group(4), t50 / s50)
    assert "timings" in printed and f"{TINY.eval_samples:,} held-out" in printed

    # The student's int8 TFLite also ran in TensorFlow Lite Micro: its arena and flash, printed as the row says.
    micro = next(row for row in bench["rows"] if row["kind"] == "tflm")
    student_int8 = _artifact(student, "tflite-int8")
    assert micro["status"] == "ok" and micro["artifact"] == labels[student_int8["file"]]
    assert micro["micro"]["flash_bytes"] == student_int8["bytes"] and micro["micro"]["arena_bytes"] > 1000
    assert micro["latency_note"] == "host reference kernels (not an MCU figure)"
    line = next(line for line in printed.splitlines() if line.startswith("TFLite Micro (host):"))
    assert f"tensor arena {micro['micro']['arena_bytes']:,} B" in line


def test_the_cached_teacher_is_reused(tmp_path):
    cached = tmp_path / "teacher.keras"
    cached.write_bytes(b"not retrained")
    assert demo.train_demo_teacher(cached, epochs=1) == cached
    assert cached.read_bytes() == b"not retrained"


def test_a_failed_artifact_is_an_error_not_a_figure(tmp_path):
    from edgeqd.documents import new_manifest, write_document
    from edgeqd.errors import DataError

    manifest = new_manifest(input_model={"params": 10}, data={}, calibration={}, keras={}, problems=[],
                            artifacts=[{"format": "tflite-int8", "status": "failed", "file": "", "reason": "boom"}],
                            max_drop=None)
    write_document(tmp_path / "manifest.json", manifest)
    with pytest.raises(DataError, match="no verified tflite-int8"):
        demo.read_figures("student int8", tmp_path, "tflite-int8", [], {})
