"""The report's plots: the Pareto front, emulated rows left out of latency, real PNGs."""

from __future__ import annotations

from pathlib import Path

from edgeqd.reporting import ReportData, Run, build_plots, latency_bars, latency_points, pareto_front, size_points

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_pareto_front():
    assert pareto_front([(1.0, 0.90), (2.0, 0.95), (3.0, 0.94), (1.0, 0.80), (4.0, 0.95)]) == [0, 1]
    assert pareto_front([]) == []


def _data() -> ReportData:
    manifest = {"data": {}, "artifacts": [
        {"file": "m.tflite", "bytes": 2048, "status": "ok", "runtime": "tflite", "dtype": "int8",
         "evaluation": {"accuracy": 0.9}},
        {"file": "m.onnx", "bytes": 8192, "status": "failed", "runtime": "onnx", "evaluation": {"accuracy": 0.95}}]}
    rows = [{"artifact": "m.tflite", "label": "m.tflite", "run": "r", "device": d, "threads": 1, "status": "ok",
             "p50_ms": 2.0, "p90_ms": 2.5, "peak_rss_mb": 40.0, "emulated": d == "qemu"} for d in ("local", "qemu")]
    return ReportData("t", [Run("r", Path("r"), manifest)], rows)


def test_points_leave_out_failed_artifacts_and_emulated_rows():
    data = _data()
    assert [(p["x"], p["y"]) for p in size_points(data.runs)] == [(2.0, 0.9)]  # KiB; the failed ONNX is left out
    points = latency_points(data)
    assert [(p["x"], p["y"]) for p in points] == [(2.0, 0.9)]  # the run's accuracy, the qemu row left out
    assert points[0]["label"] == "m.tflite · local ×1"


def test_plots_are_pngs_or_say_why_not():
    plots = build_plots(_data())
    assert [p.name for p in plots] == ["accuracy_vs_size", "accuracy_vs_latency", "latency", "memory"]
    assert all(p.png.startswith(PNG_SIGNATURE) for p in plots)
    empty = build_plots(ReportData("t"))
    assert all(p.png is None and p.empty for p in empty)
    assert latency_bars([r for r in _data().bench_rows if r["emulated"]] + [{"status": "failed"}]).startswith(
        PNG_SIGNATURE)
