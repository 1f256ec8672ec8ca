"""``adb:SERIAL`` with Debian's real adb client and server.

No adbd and no Android images exist here, so the "device" is
:mod:`adb_fixture` — **an ADB protocol fixture, not Android**: it speaks the device side
of the wire protocol (handshake, shell v2 with exit codes, sync push/pull) and runs
commands with the host's shell. The runner path is therefore real adb traffic end to
end; phones and emulators themselves are "requires device".
"""

from __future__ import annotations

import os

import pytest
from faults import bench_with_dropped_connection

from edgeqd.devices import DeviceConfig, bench
from edgeqd.types import Status
from edgeqd.settings import BenchSettings

FAST = BenchSettings(runs=5, warmup=1, min_seconds=0.0, samples=100)

# A stand-in for TFLite's native benchmark_model (no Android binary can run here): it prints a
# transcript in the real tool's format and echoes the flags it got, so edgeqd's side of the
# --benchmark-binary path (push, chmod, quoted flags, parsing, cleanup) is what is tested.
STAND_IN = r"""#!/bin/sh
echo "INFO: STARTING!"
for arg in "$@"; do echo "INFO: arg [$arg]"; done
graph=""
for arg in "$@"; do case "$arg" in --graph=*) graph="${arg#--graph=}";; esac; done
if [ ! -f "$graph" ]; then echo "ERROR: Could not open '$graph'." >&2; exit 1; fi
echo "INFO: Num threads: [2]"
echo "INFO: Use xnnpack: [1]"
echo "INFO: The input model file size (MB): 0.009368"
echo "INFO: Initialized session in 1.234ms."
echo "INFO: count=20 first=150 curr=90 min=85 max=150 avg=95.5 std=12 p5=86 median=91 p95=140"
echo "INFO: count=200 first=91 curr=90 min=84 max=180 avg=92.25 std=7 p5=86 median=90 p95=101"
echo "INFO: Inference timings in us: Init: 1234, First inference: 150, Warmup (avg): 95.5, Inference (avg): 92.25"
echo "INFO: Memory footprint delta from the start of the tool (MB): init=1.5 overall=2.75"
echo "INFO: Overall peak memory footprint (MB) via periodic monitoring: 6.125"
case " $* " in *" --enable_op_profiling=true "*)
  echo "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:"
  echo "============================== Run Order =============================="
  echo "                  [node type]     [first]    [avg ms]        [%]      [cdf%]     [mem KB]  [times called]  [Name]"
  echo "Convolution (NHWC, QC8) IGEMM       0.060       0.055    68.750%     68.750%        0.000               1  Delegate/Convolution (NHWC, QC8) IGEMM:0"
  echo "      Fully Connected (NC, QS8)       0.030       0.025    31.250%    100.000%        0.000               1  Delegate/Fully Connected (NC, QS8):1"
  echo ""
  echo "Timings (microseconds): count=200 first=91 curr=90 min=84 max=180 avg=80 std=7";;
esac
"""


def test_adb_runner_odd_path_matches_local(adb_device, models, odd_named_int8):
    device = DeviceConfig(spec=adb_device.spec, name="phone", options=adb_device.options())
    rows = bench([odd_named_int8, models["int8.onnx"]], ["local", device], data="fashion-mnist", settings=FAST)
    assert all(r.ok for r in rows), [r.reason for r in rows]
    for artifact in (odd_named_int8.name, "model_int8.onnx"):
        local, remote = [r for r in rows if r.artifact == artifact]
        assert remote.kind == "adb" and remote.accuracy == local.accuracy
    assert not (odd_named_int8.parent / "pwned").exists()
    assert os.listdir(adb_device.remote_tmp) == []


def test_adb_benchmark_binary(adb_device, models, tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_text(STAND_IN)
    device = DeviceConfig(spec=adb_device.spec, name="phone", options=adb_device.options())
    rows = bench([models["int8.tflite"]], [device], data="fashion-mnist", benchmark_binary=binary,
                 settings=BenchSettings(threads=(2,), runs=7, min_seconds=0.5, samples=10))
    row = rows[0]
    assert row.ok, row.reason
    assert row.runtime == "benchmark_model" and row.mean_ms == pytest.approx(0.09225)
    assert row.p50_ms == pytest.approx(0.090) and row.count == 200 and row.peak_rss_mb == pytest.approx(6.125)
    assert row.accuracy is None  # benchmark_model feeds random inputs
    output = row.raw["benchmark_model_output"]
    assert "--num_threads=2" in output and "--num_runs=7" in output and "--min_secs=0.5" in output
    assert "--use_xnnpack=true" in output and "--enable_op_profiling" not in output
    assert row.profile is None
    assert os.listdir(adb_device.remote_tmp) == []


def test_adb_benchmark_binary_op_profile(adb_device, models, tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_text(STAND_IN)
    device = DeviceConfig(spec=adb_device.spec, name="phone", options=adb_device.options())
    row = bench([models["int8.tflite"]], [device], settings=FAST.replace(profile=True), benchmark_binary=binary)[0]
    assert row.ok, row.reason
    assert "--enable_op_profiling=true" in row.raw["benchmark_model_output"]
    # The profile block's own "count=" line leaves the benchmark's figures alone.
    assert row.mean_ms == pytest.approx(0.09225) and row.count == 200
    assert [e["op"] for e in row.profile["by_op_type"]] == ["Convolution (NHWC, QC8) IGEMM",
                                                            "Fully Connected (NC, QS8)"]
    assert row.profile["total_ms"] == pytest.approx(0.08)


def test_adb_benchmark_binary_failure_is_a_row(adb_device, models, tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_text("#!/bin/sh\necho 'ERROR: Failed to allocate tensors.' >&2\nexit 1\n")
    device = DeviceConfig(spec=adb_device.spec, name="phone", options=adb_device.options())
    row = bench([models["int8.tflite"]], [device], settings=FAST, benchmark_binary=binary)[0]
    assert row.status == Status.FAILED and "Failed to allocate tensors" in row.reason


def test_unknown_serial_is_a_failed_row(adb_device, models):
    row = bench([models["int8.tflite"]], ["adb:no-such-phone"], settings=FAST)[0]
    assert row.status == Status.FAILED and "not available" in row.reason


def test_connection_dropped_mid_run(adb_device, models):
    device = DeviceConfig(spec=adb_device.spec, name="phone", options=adb_device.options())
    row = bench_with_dropped_connection(models["int8.tflite"], device, adb_device.remote_tmp,
                                        adb_device.fixture.drop_connections)
    assert row.status == Status.FAILED, row
    # The device-side shell lost its stdin: the runner removed its own folder.
    assert os.listdir(adb_device.remote_tmp) == []
    # Reconnect for later tests in this module.
    adb_device.adb("connect", adb_device.serial)


@pytest.mark.slow
@pytest.mark.qemu
def test_adb_backed_by_arm_sysroot(tmp_path_factory, aarch64_sysroot, models, adb_setup):
    from edgeqd.devices.qemu import write_python_shim

    shim = write_python_shim("qemu-aarch64", tmp_path_factory.mktemp("shim") / "python3")
    setup = adb_setup(tmp_path_factory.mktemp("adb-arm"), python_shim=shim)
    try:
        device = DeviceConfig(spec=setup.spec, name="arm-over-adb", options=setup.options())
        local, remote = bench([models["int8.tflite"]], ["local", device], data="fashion-mnist", settings=FAST)
        assert remote.ok, remote.reason
        assert remote.device_info["machine"] == "aarch64" and remote.accuracy == local.accuracy
        assert remote.emulated
    finally:
        setup.stop()
