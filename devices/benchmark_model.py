"""Read the output of TFLite's native ``benchmark_model`` into the runner's schema.

Android has no Python, so on a phone edgeqd runs the native tool (given with
``--benchmark-binary``) and parses what it prints. The tool's log format has
changed across TensorFlow releases; every variant below is accepted:

* lines with or without a ``INFO: `` prefix, or logcat's ``I tflite  : ``;
* ``count=… first=… curr=… min=… max=… avg=… std=…`` with or without
  ``p5=… median=… p95=…`` (newer releases), averages in ``1.24027e+06`` notation;
* ``Inference timings in us: Init: …, First inference: …, Warmup (avg): …, Inference (avg): …``;
* memory as ``Memory footprint delta from the start of the tool (MB): init=… overall=…``,
  the older ``Peak memory footprint (MB): init=… overall=…`` and
  ``Overall peak memory footprint (MB) via periodic monitoring: …``;
* with ``--enable_op_profiling=true``, the "Operator-wise Profiling Info for Regular
  Benchmark Runs" block: its "Run Order" table (with or without the older ``[start]``
  column; node types with spaces, as XNNPACK's "Convolution (NHWC, QC8) GEMM") becomes
  the per-op profile. The block ends with its own ``Timings (microseconds): count=…``
  line, which is not the benchmark's timing line.

Times in the tool's output are microseconds; the schema uses milliseconds.
"""

from __future__ import annotations

import re
from typing import Optional

from edgeqd.devices.runner import summarize_profile

_NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_COUNT = re.compile(r"count=(\d+)(?: first=" + _NUMBER + r")?(?: curr=" + _NUMBER + r")?"
                    r"(?: min=" + _NUMBER + r")?(?: max=" + _NUMBER + r")?(?: avg=" + _NUMBER + r")?"
                    r"(?: std=" + _NUMBER + r")?(?: p5=" + _NUMBER + r")?(?: median=" + _NUMBER + r")?"
                    r"(?: p95=" + _NUMBER + r")?")
_SUMMARY = re.compile(r"Inference timings in us: Init: " + _NUMBER + r", First inference: " + _NUMBER
                      + r", Warmup \(avg\): " + _NUMBER + r", Inference \(avg\): " + _NUMBER)
_MEMORY_DELTA = re.compile(r"(?:Memory footprint delta from the start of the tool|Peak memory footprint)"
                           r" \(MB\): init=" + _NUMBER + r" overall=" + _NUMBER)
_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUMBER)
_SIZE = re.compile(r"The input model file size \(MB\): " + _NUMBER)
_THREADS = re.compile(r"(?:Num threads|#threads used for CPU inference): \[(\d+)\]")
_XNNPACK = re.compile(r"Use xnnpack: \[(\d|true|false)\]")
_DELEGATE = re.compile(r"Created TensorFlow Lite XNNPACK delegate")
_ERROR = re.compile(r"(?:ERROR|E tflite|Failed|failed)\W.*")
_PROFILE_INIT = re.compile(r"Profiling Info for Benchmark Initialization")
_PROFILE_RUNS = re.compile(r"Operator-wise Profiling Info for Regular Benchmark Runs")
_TABLE = re.compile(r"={5,} (.+?) ={5,}")
_LOG_PREFIX = re.compile(r"^(?:INFO: |I tflite\s*: )")
_RUN_ORDER_ROW = re.compile(r"^\s*(?P<type>\S.*?)\s+(?:(?P<start>\d+\.\d+)\s+)?(?P<first>\d+\.\d+)\s+"
                            r"(?P<avg>\d+\.\d+)\s+(?P<pct>\d+\.\d+)%\s+(?P<cdf>\d+\.\d+)%\s+"
                            r"(?P<mem>\d+\.\d+)\s+(?P<calls>\d+)\s+(?P<name>\S.*?)\s*$")


class BenchmarkModelOutputError(ValueError):
    """The text holds no benchmark result (the tool failed or printed something else)."""


def _ms(microseconds: Optional[str]) -> Optional[float]:
    return None if microseconds is None else float(microseconds) / 1000.0


def parse_benchmark_model_output(text: str) -> dict:
    """Parse ``benchmark_model``'s output into the runner's ``timings_ms``/``memory_mb`` schema.

    Args:
        text: everything the tool printed (stdout and stderr together is fine).

    Returns:
        A dict with ``timings_ms`` (init, first_inference, warmup_avg, count, mean, std,
        min, max, p50 — p50 only where the tool printed a median), ``memory_mb``,
        ``threads``, ``xnnpack``, ``model_size_mb`` and ``profile`` (the runner's per-op
        profile schema, or None when the tool printed no op profile).

    >>> parse_benchmark_model_output(
    ...     "INFO: count=50 first=8471 curr=8402 min=8107 max=9224 avg=8428.27 std=141\\n"
    ...     "INFO: Inference timings in us: Init: 4063, First inference: 38291, "
    ...     "Warmup (avg): 9848.08, Inference (avg): 8428.27")["timings_ms"]["mean"]  # doctest: +ELLIPSIS
    8.4282...
    """
    counts = []
    summary = memory = peak = size = threads = xnnpack = None
    delegate = False
    errors = []
    section = table = None  # which profile block / table of it the line is in
    profiled = []
    for line in text.splitlines():
        if _PROFILE_INIT.search(line):
            section = "init"
        elif _PROFILE_RUNS.search(line):
            section = "runs"
        elif section is not None:
            # Inside a profile block: its tables, and a "count=" line that is not the benchmark's.
            if (match := _TABLE.search(line)):
                table = match.group(1)
            elif section == "runs" and table == "Run Order" and \
                    (row := _RUN_ORDER_ROW.match(_LOG_PREFIX.sub("", line))):
                profiled.append((row.group("name"), row.group("type").strip(), float(row.group("avg")),
                                 float(row.group("calls"))))
            elif not line.strip():
                table = None
        elif (match := _SUMMARY.search(line)):
            summary = match
        elif (match := _COUNT.search(line)):
            counts.append(match)
        elif (match := _MEMORY_DELTA.search(line)):
            memory = match
        elif (match := _PEAK.search(line)):
            peak = match
        elif (match := _SIZE.search(line)):
            size = float(match.group(1))
        elif (match := _THREADS.search(line)):
            threads = int(match.group(1))
        elif (match := _XNNPACK.search(line)):
            xnnpack = match.group(1) in ("1", "true")
        elif _DELEGATE.search(line):
            delegate = True
        elif (match := _ERROR.search(line)):
            errors.append(match.group(0).strip())
    if summary is None:
        detail = "; ".join(errors[-3:]) or (text.strip().splitlines() or ["no output"])[-1][:300]
        raise BenchmarkModelOutputError(f"benchmark_model printed no 'Inference timings' line: {detail}")
    init, first, warmup_avg, mean = (float(summary.group(i)) / 1000.0 for i in range(1, 5))
    timings = {"init": init, "first_inference": first, "warmup_avg": warmup_avg, "mean": mean,
               "count": 0, "std": None, "min": None, "max": None, "p50": None, "p90": None, "p99": None,
               "warmup_runs": None}
    if counts:
        timed = counts[-1]
        timings.update(count=int(timed.group(1)), std=_ms(timed.group(7)), min=_ms(timed.group(4)),
                       max=_ms(timed.group(5)), p50=_ms(timed.group(9)))
        if len(counts) > 1:
            timings["warmup_runs"] = int(counts[-2].group(1))
    memory_mb = {"peak_rss": float(peak.group(1)) if peak else None,
                 "init_increase": float(memory.group(1)) if memory else None,
                 "peak_increase_over_import": float(memory.group(2)) if memory else None}
    if xnnpack is None and delegate:
        xnnpack = True
    profile = None
    if profiled:
        profile = summarize_profile(profiled, source="benchmark_model --enable_op_profiling",
                                    runs=timings["count"])
    return {"timings_ms": timings, "memory_mb": memory_mb, "threads": threads, "xnnpack": xnnpack,
            "model_size_mb": size, "profile": profile}
