"""The report shows a tflm row's arena and flash beside latency and memory, with what its latency is."""

from __future__ import annotations

from edgeqd.reporting.load import ReportData
from edgeqd.reporting.render import render_markdown
from edgeqd.reporting.tables import BENCH_COLUMNS, bench_table_rows

TFLM_ROW = {"label": "model_int8.tflite", "device": "tflm", "kind": "tflm", "threads": 1, "status": "ok",
            "emulated": True, "p50_ms": 5.6, "peak_rss_mb": 40.7, "accuracy": 0.904,
            "latency_note": "host reference kernels (not an MCU figure)",
            "micro": {"arena_bytes": 75968, "flash_bytes": 83578}}
LOCAL_ROW = {"label": "model_int8.tflite", "device": "local", "kind": "local", "threads": 1, "status": "ok",
             "emulated": False, "p50_ms": 0.2, "peak_rss_mb": 48.1, "accuracy": 0.904}


def test_arena_and_flash_columns_sit_beside_latency_and_memory():
    assert BENCH_COLUMNS.index("arena") == BENCH_COLUMNS.index("peak MB") + 1
    micro, local = bench_table_rows([TFLM_ROW, LOCAL_ROW])
    assert micro["arena"] == "75,968 B" and micro["flash"] == "81.6 KiB" and micro["p50 ms"].endswith("†")
    assert local["arena"] == local["flash"] == "–" and not local["p50 ms"].endswith("†")


def test_markdown_says_what_tflm_latency_is_and_not_qemu():
    data = ReportData("t")
    data.bench_rows = [TFLM_ROW, LOCAL_ROW]
    text = render_markdown(data, plots=[])
    assert "host reference kernels (not an MCU figure)" in text and "75,968 B" in text
    assert "qemu" not in text and "ran under emulation" not in text
