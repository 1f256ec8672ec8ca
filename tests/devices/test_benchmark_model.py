"""The parser of TFLite's native benchmark_model output, on transcripts in the tool's real formats."""

from __future__ import annotations

import pytest

from edgeqd.devices.benchmark_model import BenchmarkModelOutputError, parse_benchmark_model_output

# Format of TF ≥ 2.13 on Android (adb shell): INFO prefixes, p5/median/p95, periodic peak memory.
NEW_FORMAT = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [50]
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/edgeqd.Ab12Cd34/model_int8.tflite]
INFO: Use xnnpack: [1]
INFO: #threads used for CPU inference: [4]
INFO: Loaded model /data/local/tmp/edgeqd.Ab12Cd34/model_int8.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 0.23521
INFO: Initialized session in 4.563ms.
INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=612 first=1204 curr=771 min=752 max=1204 avg=797.43 std=41 p5=760 median=789 p95=851

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=1265 first=781 curr=776 min=749 max=1512 avg=788.62 std=38 p5=758 median=781 p95=840

INFO: Inference timings in us: Init: 4563, First inference: 1204, Warmup (avg): 797.43, Inference (avg): 788.62
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=2.94531 overall=4.30078
INFO: Overall peak memory footprint (MB) via periodic monitoring: 9.89453
INFO: Memory status at the end of exeution:
INFO: - VmRSS              : 9 MB
"""

# Older format (TF 2.3–2.8): no prefix, no percentiles, "Peak memory footprint", 1.2e+06 notation.
OLD_FORMAT = """\
STARTING!
Num threads: [1]
Graph: [/data/local/tmp/mobilenet_v1_1.0_224.tflite]
Loaded model /data/local/tmp/mobilenet_v1_1.0_224.tflite
The input model file size (MB): 16.9008
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=4.21094 overall=46.0859
"""

# logcat capture (adb logcat -s tflite), as printed when the tool runs from an app.
LOGCAT_FORMAT = """\
11-23 10:01:02.345  4321  4321 I tflite  : Num threads: [2]
11-23 10:01:02.901  4321  4321 I tflite  : count=50 first=8471 curr=8402 min=8107 max=9224 avg=8428.27 std=141
11-23 10:01:02.902  4321  4321 I tflite  : Inference timings in us: Init: 92318, First inference: 187533, Warmup (avg): 211669, Inference (avg): 145528
"""


def test_new_format():
    parsed = parse_benchmark_model_output(NEW_FORMAT)
    t = parsed["timings_ms"]
    assert t["init"] == pytest.approx(4.563) and t["first_inference"] == pytest.approx(1.204)
    assert t["warmup_avg"] == pytest.approx(0.79743) and t["mean"] == pytest.approx(0.78862)
    assert t["count"] == 1265 and t["warmup_runs"] == 612
    assert (t["min"], t["max"], t["std"], t["p50"]) == pytest.approx((0.749, 1.512, 0.038, 0.781))
    assert parsed["memory_mb"] == pytest.approx({"peak_rss": 9.89453, "init_increase": 2.94531,
                                                 "peak_increase_over_import": 4.30078})
    assert parsed["threads"] == 4 and parsed["xnnpack"] is True and parsed["model_size_mb"] == pytest.approx(0.23521)


def test_old_format_with_exponents():
    parsed = parse_benchmark_model_output(OLD_FORMAT)
    t = parsed["timings_ms"]
    assert t["mean"] == pytest.approx(2950.34) and t["warmup_avg"] == pytest.approx(3512.39)
    assert t["count"] == 50 and t["p50"] is None and t["min"] == pytest.approx(2727.568)
    assert parsed["memory_mb"]["peak_increase_over_import"] == pytest.approx(46.0859)
    assert parsed["memory_mb"]["peak_rss"] is None and parsed["threads"] == 1


def test_logcat_format():
    parsed = parse_benchmark_model_output(LOGCAT_FORMAT)
    assert parsed["timings_ms"]["mean"] == pytest.approx(145.528) and parsed["threads"] == 2


def test_failure_output_is_an_error_with_the_tool_message():
    text = "INFO: STARTING!\nERROR: Could not open '/data/local/tmp/x.tflite'.\nERROR: Benchmarking failed.\n"
    with pytest.raises(BenchmarkModelOutputError, match="Could not open"):
        parse_benchmark_model_output(text)
