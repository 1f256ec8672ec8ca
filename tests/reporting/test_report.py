"""write_report end to end: HTML rendered in headless Chromium, Markdown, graceful without bench data, atomic writes."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import pytest

from edgeqd.errors import UsageError
from edgeqd.reporting import EMULATED_MARK, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained_with_plots(run_with_bench, tmp_path):
    run = run_with_bench
    out = write_report([run["dir"], run["root"] / "bench_emulated.json"], tmp_path / "report.html")
    text = out.read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)  # no network request possible
    assert "<script" not in text and "@import" not in text
    images = re.findall(r'<img[^>]+src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 4  # accuracy vs size, accuracy vs latency, latency bars, memory
    assert all(base64.b64decode(i).startswith(PNG_SIGNATURE) for i in images)
    # Parity table: Keras reference and every artifact; emulated row marked.
    for name in ("Keras (float)", "model_int8.tflite", "model_int8.onnx", "model_fp32.onnx"):
        assert name in text
    assert 'class="emulated"' in text and f"qemu-aarch64 {EMULATED_MARK}" in text
    assert "Pipeline: run" in text and "calibration samples" in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/system-deps.sh installs it)")
def test_html_loads_in_headless_chromium_with_its_plots(run_with_bench, tmp_path):
    run = run_with_bench
    out = write_report([run["dir"], run["root"] / "bench_emulated.json"], tmp_path / "report.html")
    # A copy with a probe script: the report itself has no script. It records, once the page has
    # loaded, how many images decoded to a real size.
    probe = out.read_text().replace("</body>", (
        "<script>window.addEventListener('load', function () {"
        "var imgs = Array.from(document.images);"
        "var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 100; }).length;"
        "document.body.setAttribute('data-probe', ok + '/' + imgs.length);});</script></body>"))
    probe_file = tmp_path / "probe.html"
    probe_file.write_text(probe)
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run(flags + ["--virtual-time-budget=5000", "--dump-dom", probe_file.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-probe="4/4"' in dom.stdout, dom.stdout[:500]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    shot = subprocess.run(flags + [f"--screenshot={tmp_path / 'report.png'}", "--window-size=1200,3000",
                                   out.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and not [l for l in shot.stderr.splitlines() if "CONSOLE" in l]
    assert (tmp_path / "report.png").read_bytes().startswith(PNG_SIGNATURE)


def test_markdown_writes_the_same_sections_and_its_plots(run_with_bench, tmp_path):
    run = run_with_bench
    out = write_report([run["dir"]], tmp_path / "report.md", markdown=True)
    text = out.read_text()
    for heading in ("## Pipeline: run", "## Parity: Keras / TFLite / ONNX", "## Accuracy vs size",
                    "## Accuracy vs latency", "## Latency per device and thread count", "## Memory", "## Bench rows"):
        assert heading in text
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (tmp_path / target).read_bytes().startswith(PNG_SIGNATURE)


def test_without_bench_data_the_report_says_so(run_with_bench, tmp_path):
    run_only = tmp_path / "run"
    shutil.copytree(run_with_bench["dir"], run_only, ignore=shutil.ignore_patterns("bench*.json", "*.tflite",
                                                                                   "*.onnx", "model_data.*"))
    text = write_report([run_only], tmp_path / "report.html").read_text()
    assert text.count("<img") == 1  # accuracy vs size only
    assert "No bench data from a real device" in text and "Bench rows" not in text


def test_existing_output_needs_force(run_with_bench, tmp_path):
    out = tmp_path / "report.html"
    out.write_text("keep me")
    with pytest.raises(UsageError, match="--force"):
        write_report([run_with_bench["dir"]], out)
    assert out.read_text() == "keep me"
    write_report([run_with_bench["dir"]], out, force=True)
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_per_op_profile_plot_when_bench_profiled(run_with_bench, tmp_path):
    from edgeqd.devices import bench
    from edgeqd.documents import new_bench_document
    from edgeqd.settings import BenchSettings

    onnx = run_with_bench["dir"] / "model_int8.onnx"
    rows = bench([onnx], ["local"], settings=BenchSettings(runs=5, warmup=1, min_seconds=0, profile=True))
    assert rows[0].profile["available"], rows[0].profile
    profiled = tmp_path / "bench_profile.json"
    profiled.write_text(json.dumps(new_bench_document([r.to_dict() for r in rows], {"artifacts": [str(onnx)]}),
                                  default=str))
    text = write_report([profiled], tmp_path / "report.html").read_text()
    assert "<h2>Per-op profile</h2>" in text
    # Without --profile there is no such section (the unprofiled bench JSON of the fixture).
    plain = write_report([run_with_bench["dir"] / "bench_local.json"], tmp_path / "plain.html").read_text()
    assert "Per-op profile" not in plain
