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


# --enable_op_profiling=true, TF ≥ 2.13 with XNNPACK: node types with spaces, no [start]
# column, and the profile block's own "Timings (microseconds): count=64" line, which must
# not be taken for the benchmark's count=1265.
PROFILED_NEW_FORMAT = NEW_FORMAT + """\
INFO: Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
                                     [node type]          [first]        [avg ms]            [%]          [cdf%]          [mem KB]        [times called]  [Name]
                         ModifyGraphWithDelegate            6.348           6.348        55.640%         55.640%          7148.000                1       ModifyGraphWithDelegate/0
                                 AllocateTensors            5.061           5.061        44.360%        100.000%         10292.000                1       AllocateTensors/0

Timings (microseconds): count=1 curr=11409
Memory (bytes): count=0
2 nodes observed

INFO: Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
                                     [node type]          [first]        [avg ms]            [%]          [cdf%]          [mem KB]        [times called]  [Name]
                                        QUANTIZE            0.020           0.020        10.000%         10.000%             0.000                1       [tfl.quantize]:0
                   Convolution (NHWC, QC8) IGEMM            0.090           0.080        40.000%         50.000%             0.000                1       Delegate/Convolution (NHWC, QC8) IGEMM:0
                    Convolution (NHWC, QC8) GEMM            0.050           0.060        30.000%         80.000%             0.000                2       Delegate/Convolution (NHWC, QC8) GEMM:1
                    Convolution (NHWC, QC8) GEMM            0.030           0.030        15.000%         95.000%             0.000                1       Delegate/Convolution (NHWC, QC8) GEMM:2
                                      DEQUANTIZE            0.010           0.010         5.000%        100.000%             0.000                1       [StatefulPartitionedCall:0, Identity]:7

============================== Top by Computation Time ==============================
                                     [node type]          [first]        [avg ms]            [%]          [cdf%]          [mem KB]        [times called]  [Name]
                   Convolution (NHWC, QC8) IGEMM            0.090           0.080        40.000%         40.000%             0.000                1       Delegate/Convolution (NHWC, QC8) IGEMM:0

Number of nodes executed: 5
============================== Summary by node type ==============================
                                     [Node type]          [count]         [avg ms]          [avg %]         [cdf %]       [mem KB]        [times called]
                   Convolution (NHWC, QC8) IGEMM                1            0.080          40.000%         40.000%          0.000                1

Timings (microseconds): count=64 first=200 curr=199 min=190 max=230 avg=200.0 std=5
Memory (bytes): count=0
5 nodes observed
"""

# Older releases (TF 2.3-era): tab-separated columns with a [start] column.
PROFILED_OLD_FORMAT = OLD_FORMAT + (
    "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
    "============================== Run Order ==============================\n"
    "\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]\n"
    "\t       DEPTHWISE_CONV_2D\t            0.000\t  538.139\t  536.830\t 56.668%\t 56.668%\t     0.000\t        1\t[net/Conv/Relu]\n"
    "\t                 CONV_2D\t          536.833\t   20.081\t   20.083\t  2.120%\t 58.788%\t     0.000\t        1\t[net/Conv_1/Relu]\n"
    "\t                 CONV_2D\t          556.918\t   36.430\t  390.419\t 41.212%\t100.000%\t     0.000\t        1\t[net/Conv_2/Relu]\n"
    "\n"
    "Timings (microseconds): count=50 first=947000 curr=944078 min=944078 max=955061 avg=947350 std=2060\n")


def test_op_profile_new_format_is_not_mistaken_for_the_benchmark():
    parsed = parse_benchmark_model_output(PROFILED_NEW_FORMAT)
    assert parsed["timings_ms"]["count"] == 1265 and parsed["timings_ms"]["mean"] == pytest.approx(0.78862)
    profile = parsed["profile"]
    assert profile["available"] and profile["runs"] == 1265
    # Only the regular runs' Run Order table: not the init block, not "Top by Computation Time".
    assert profile["total_ms"] == pytest.approx(0.2)
    by_type = {entry["op"]: entry for entry in profile["by_op_type"]}
    assert set(by_type) == {"QUANTIZE", "Convolution (NHWC, QC8) IGEMM", "Convolution (NHWC, QC8) GEMM",
                            "DEQUANTIZE"}
    assert by_type["Convolution (NHWC, QC8) GEMM"]["nodes"] == 2
    assert by_type["Convolution (NHWC, QC8) GEMM"]["avg_ms"] == pytest.approx(0.09)
    assert by_type["Convolution (NHWC, QC8) GEMM"]["percent"] == pytest.approx(45.0)
    assert profile["top_nodes"][0]["name"] == "Delegate/Convolution (NHWC, QC8) IGEMM:0"
    assert profile["top_nodes"][-1]["name"] == "[StatefulPartitionedCall:0, Identity]:7"
    assert profile["top_nodes"][1]["calls"] == 2


def test_op_profile_old_tab_format_with_start_column():
    parsed = parse_benchmark_model_output(PROFILED_OLD_FORMAT)
    assert parsed["timings_ms"]["count"] == 50
    profile = parsed["profile"]
    assert [e["op"] for e in profile["by_op_type"]] == ["DEPTHWISE_CONV_2D", "CONV_2D"]
    assert profile["by_op_type"][1]["avg_ms"] == pytest.approx(410.502)
    assert profile["top_nodes"][0] == {"name": "[net/Conv/Relu]", "op": "DEPTHWISE_CONV_2D",
                                       "avg_ms": pytest.approx(536.83), "percent": pytest.approx(56.668, abs=0.01),
                                       "calls": 1.0}


def test_no_profile_without_op_profiling():
    assert parse_benchmark_model_output(NEW_FORMAT)["profile"] is None
