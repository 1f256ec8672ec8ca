"""HTML and Markdown rendering from the shared rows: escaping, emulated marking, problems first."""

from __future__ import annotations

from pathlib import Path

from edgeqd.reporting import (EMULATED_MARK, ReportData, Run, bench_table_rows, md_text, parity_rows, render_html,
                              render_markdown, stage_rows)


def _data() -> ReportData:
    manifest = {"input_model": {"name": "<m>", "params": 10, "layers": 2}, "data": {"name": "d"},
                "keras": {"accuracy": 0.5}, "problems": ["<b>drop</b>"],
                "distillation": {"temperature": 4.0, "alpha": 0.1},
                "artifacts": [{"file": "a|b.tflite", "bytes": 10, "status": "ok", "runtime": "tflite", "dtype": "int8",
                               "accuracy_drop_pts": 1.5, "evaluation": {"accuracy": 0.485, "agreement": 0.9}}]}
    rows = [{"artifact": "a|b.tflite", "label": "a|b.tflite", "run": "r", "device": "qemu", "threads": 1,
             "status": "ok", "p50_ms": 2.0, "emulated": True}]
    return ReportData("<title>", [Run("r", Path("r"), manifest)], rows, ["r/manifest.json"])


def test_rows_shared_by_both_renderers():
    data = _data()
    assert ("distillation", "temperature: 4.0, alpha: 0.1") in stage_rows(data.runs[0])
    parity = parity_rows(data.runs)
    assert [r["status"] for r in parity] == ["reference", "ok"] and parity[1]["Δ pts"] == "-1.50"
    assert bench_table_rows(data.bench_rows)[0]["p50 ms"] == f"2.000 {EMULATED_MARK}"


def test_html_escapes_the_data_and_marks_emulated_rows():
    text = render_html(_data(), plots=[])
    assert "<title>&lt;title&gt;</title>" in text and "<b>drop</b>" not in text and "&lt;b&gt;drop" in text
    assert 'class="emulated"' in text and "ran under emulation" in text
    assert text.index("<h2>Problems</h2>") < text.index("<h2>Pipeline: r</h2>")


def test_markdown_escapes_the_data_and_keeps_table_columns():
    text = render_markdown(_data(), plots=[])
    assert text.startswith("# &lt;title&gt;")
    row = next(line for line in text.splitlines() if line.startswith("| r | a"))
    assert r"a\|b.tflite" in row and row.count(" | ") == 9  # 10 columns: the pipe in the name is escaped
    assert md_text("`x`", code_spans=True) == "`x`" and md_text("`x`") == r"\`x\`"
