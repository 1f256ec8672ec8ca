"""Hostile input to the device side: fleet files, long timings, wrong data, adb servers.

Each case runs the real thing — PyYAML on the file, the real runner as a subprocess,
Debian's real ``adb`` client and server — and asserts the documented exit code (or
typed error), that nothing leaks, and that memory and time stay bounded.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeqd.devices import load_devices_file
from edgeqd.devices.base import RUNNER
from edgeqd.devices.fleet_yaml import MAX_FLEET_BYTES
from edgeqd.errors import UsageError
from edgeqd.settings import BenchSettings

# The "billion laughs": 9 levels of 9 aliases, 387 million strings once expanded.
BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

VALID_FLEET = """\
devices:
  - name: pi4
    spec: ssh://pi@raspberrypi.local:2222
    governor: performance
    thermal: heatsink, fan on
    options: {python: python3, connect_timeout: 5, ssh_options: [ServerAliveInterval=5]}
  - name: pixel
    spec: adb:R58M12345
    options: {benchmark_binary: ./benchmark_model, workdir_parent: /data/local/tmp}
  - name: emulated
    spec: qemu-aarch64
    notes: "functional check only"
  - local
"""


def edgeqd(*args: str, memory_limit: int = 4 << 30, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, with an address-space cap so a regression cannot eat the machine."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    return subprocess.run([sys.executable, "-c", "from edgeqd.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=timeout, preexec_fn=cap)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """A 4-value Add model: the fastest real model there is, so timed runs pile up quickly."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "bias"], ["y"])], "tiny", [x], [y], [bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(model, path)
    return path


# ---------------------------------------------------------------- fleet files

def test_billion_laughs_is_refused_in_well_under_a_second(tmp_path):
    bomb = tmp_path / "fleet.yaml"
    bomb.write_text(BILLION_LAUGHS)
    started = time.monotonic()
    with pytest.raises(UsageError, match="anchor &a .* may not use YAML anchors or aliases"):
        load_devices_file(bomb)
    assert time.monotonic() - started < 1.0
    # Before the fix this took all memory (MemoryError after 25 s under a 3 GB cap).
    for command in (["bench", "model.onnx", "--devices", str(bomb)], ["devices", "list", "--devices", str(bomb)]):
        started = time.monotonic()
        done = edgeqd(*command, memory_limit=3 << 30, timeout=60)
        assert done.returncode == 2, done.stderr
        assert str(bomb) in one_error_line(done) and "aliases" in done.stderr
        assert time.monotonic() - started < 30  # interpreter start-up included


@pytest.mark.parametrize("text, words", [
    ("- &one local\n", "anchor &one"),
    ("- {spec: local, name: a}\n- {<<: *base, name: b}\n", "alias *base"),
    ("x: &x {spec: local}\ndevices: [*x]\n", "anchor &x"),
    ("[" * 40 + "local" + "]" * 40, "nested more than 32 levels"),
    ("devices: [local\n", "not valid YAML"),
    ("- local\n---\n- local\n", "expected a single document"),
    ("- spec: local\n  notes: 2024-02-30\n", "cannot build"),
    ("- spec: local\n  notes: " + "9" * 5000 + "\n", "cannot build"),
    ("- spec: [local]\n", "'spec' must be a string"),
    ("- spec: local\n  name: {a: 1}\n", "'name' must be text"),
    ("- spec: local\n  options: {1: 2}\n", "option name 1 must be text"),
    ("- spec: local\n  options: {python: [a, b]}\n", "option 'python' must be text"),
    ("- spec: ssh://pi@host\n  options: {connect_timeout: .inf}\n", "finite number"),
    ("devices: [local]\n1: 2\nx: 3\n", "unknown top-level key(s) 1, x"),
    ("- {spec: local, 1: a, b: c}\n", "unknown key(s) 1, b"),
])
def test_refused_constructs_name_the_file(tmp_path, text, words):
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as error:
        load_devices_file(path)
    assert words in str(error.value) and str(path) in str(error.value)


def test_size_cap(tmp_path):
    at_limit = tmp_path / "at_limit.yaml"
    head = "- local\n"
    at_limit.write_text(head + "#" * (MAX_FLEET_BYTES - len(head) - 1) + "\n")
    assert at_limit.stat().st_size == MAX_FLEET_BYTES
    assert [c.spec for c in load_devices_file(at_limit)] == ["local"]
    over = tmp_path / "over.yaml"
    over.write_text(head + "#" * (MAX_FLEET_BYTES - len(head)) + "\n")
    with pytest.raises(UsageError, match="larger than 1024 KiB"):
        load_devices_file(over)
    # A device file that never ends is read only up to the cap.
    started = time.monotonic()
    with pytest.raises(UsageError, match="larger than 1024 KiB"):
        load_devices_file("/dev/zero")
    assert time.monotonic() - started < 1.0
    done = edgeqd("devices", "list", "--devices", str(over))
    assert done.returncode == 2 and "larger than 1024 KiB" in one_error_line(done)


def test_invalid_utf8_is_one_error_line_with_the_offset(tmp_path):
    path = tmp_path / "fleet.yaml"
    content = b"devices:\n  - name: caf\xe9\n    spec: local\n"
    path.write_bytes(content)
    offset = content.index(b"\xe9")
    for command in (["bench", "model.onnx", "--devices", str(path)], ["devices", "list", "--devices", str(path)]):
        done = edgeqd(*command)
        assert done.returncode == 2, done.stderr
        line = one_error_line(done)
        assert str(path) in line and "not UTF-8" in line and f"offset {offset}" in line and "0xe9" in line


def test_the_valid_fleet_still_loads(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(VALID_FLEET)
    configs = load_devices_file(path)
    assert [c.name or c.spec for c in configs] == ["pi4", "pixel", "emulated", "local"]
    assert configs[0].notes == "thermal: heatsink, fan on; governor: performance"
    assert configs[0].options["ssh_options"] == ["ServerAliveInterval=5"]


def _mutate(text: bytes, rng: random.Random) -> bytes:
    alphabet = b"&*:-[]{}!|>'\"#%@,?~ \t\n\\\x00\xff\xe9" + b"abc019."
    data = bytearray(text)
    for _ in range(rng.randint(1, 6)):
        choice = rng.random()
        where = rng.randrange(len(data) + 1)
        if choice < 0.3 and data:
            data[min(where, len(data) - 1)] = rng.choice(alphabet)
        elif choice < 0.55:
            data[where:where] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
        elif choice < 0.75 and data:
            del data[where:where + rng.randint(1, 8)]
        elif choice < 0.9:
            start = rng.randrange(len(data) or 1)
            data[where:where] = data[start:start + rng.randint(1, 40)]  # repeat a slice
        else:
            data = data[:where]  # truncate
    return bytes(data)


def test_fuzzed_fleet_files_raise_only_usage_errors(tmp_path):
    """200 seeded mutations of a valid fleet file: each loads or raises UsageError, quickly."""
    rng = random.Random(10)
    base = VALID_FLEET.encode()
    path = tmp_path / "fleet.yaml"
    outcomes = {"loaded": 0, "refused": 0}
    started = time.monotonic()
    for case in range(200):
        mutated = _mutate(base, rng)
        path.write_bytes(mutated)
        try:
            load_devices_file(path)
            outcomes["loaded"] += 1
        except UsageError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc).strip(), (mutated, str(exc))
            outcomes["refused"] += 1
        except Exception as exc:  # anything else is a bug: show the input that caused it
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc} for {mutated!r}")
    assert time.monotonic() - started < 20
    # Both outcomes occur, so the mutations neither all break the file nor leave it alone.
    assert outcomes["loaded"] > 0 and outcomes["refused"] > 0, outcomes


# ---------------------------------------------------------------- the runner's memory

def _run_runner(model: Path, seconds: float) -> dict:
    done = subprocess.run([sys.executable, str(RUNNER), "--model", str(model), "--runs", "1", "--warmup", "1",
                           "--min-seconds", str(seconds)], capture_output=True, text=True, timeout=120)
    document = json.loads(done.stdout)
    assert done.returncode == 0 and document["ok"], document
    return document


def test_runner_memory_is_bounded_however_long_it_times(tiny_onnx):
    from edgeqd.devices.runner import RESERVOIR_SIZE

    short, long = _run_runner(tiny_onnx, 1.0), _run_runner(tiny_onnx, 5.0)
    for document in (short, long):
        timings = document["timings_ms"]
        assert timings["count"] > RESERVOIR_SIZE, timings  # the reservoir is full and sampling
        assert timings["percentile_samples"] == RESERVOIR_SIZE and timings["percentiles_exact"] is False
        assert timings["min"] <= timings["p50"] <= timings["p90"] <= timings["p99"] <= timings["max"]
    assert long["timings_ms"]["count"] > short["timings_ms"]["count"]
    growth_mb = long["memory_mb"]["peak_rss"] - short["memory_mb"]["peak_rss"]
    # Keeping every sample grew ~9 MB per second on this model (79 MB at 1 s, 164 MB at 10 s);
    # bounded, the two peaks differ by allocator noise (0.7 MB measured). 4 MB leaves room.
    assert growth_mb < 4.0, (growth_mb, short["memory_mb"], long["memory_mb"])


def test_latency_stats_are_exact_streaming_figures_and_a_fair_reservoir():
    from edgeqd.devices.runner import LatencyStats

    values = np.random.default_rng(0).lognormal(mean=0.0, sigma=0.5, size=200_000)
    stats = LatencyStats(size=10_000)
    for value in values:
        stats.add(float(value))
    summary = stats.summary()
    assert summary["count"] == values.size and len(stats.reservoir) == 10_000
    assert summary["min"] == values.min() and summary["max"] == values.max()
    # Welford's update against numpy's two-pass figures: float64 rounding only.
    assert summary["mean"] == pytest.approx(values.mean(), rel=1e-9)
    assert summary["std"] == pytest.approx(values.std(), rel=1e-9)
    for name, quantile in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99)):
        rank = float((values <= summary[name]).mean())
        # A uniform sample of 10,000: the rank's standard error is sqrt(q(1-q)/10,000) ≤ 0.005;
        # 0.015 is three of them at the median, more in the tails.
        assert abs(rank - quantile) < 0.015, (name, rank)
    few = LatencyStats(size=10_000)
    for value in values[:5000]:
        few.add(float(value))
    exact = few.summary()
    assert exact["percentiles_exact"] is True
    assert exact["p99"] == pytest.approx(float(np.percentile(values[:5000], 99)), rel=1e-12)


# ---------------------------------------------------------------- bench data and probe

def test_bench_data_of_the_wrong_shape_is_a_data_error_before_any_device_runs(tiny_onnx, tmp_path):
    wrong = tmp_path / "wrong.npz"
    rng = np.random.default_rng(0)
    np.savez(wrong, x=rng.random((20, 7), dtype=np.float32), y=np.arange(20) % 3)
    # An unreachable ssh device: had it run, every row would fail and bench would exit 5.
    done = edgeqd("bench", str(tiny_onnx), "--device", "ssh://nobody@127.0.0.1:1", "--data", str(wrong), "-q")
    assert done.returncode == 3, done.stderr
    line = one_error_line(done)
    assert "does not fit tiny.onnx" in line and "[7] (7 values)" in line and "[1, 4]" in line
    right = tmp_path / "right.npz"
    np.savez(right, x=rng.random((20, 4), dtype=np.float32), y=np.arange(20) % 3)
    done = edgeqd("bench", str(tiny_onnx), "--device", "local", "--data", str(right), "--runs", "3",
                  "--min-seconds", "0", "-q")
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- the adb server

def _free_port() -> int:
    """An unused local port outside adb's emulator scan range 5555–5585."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if not 5555 <= port <= 5585:
            return port


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.fixture
def private_adb_port(monkeypatch):
    """A private adb server port for this test (nothing listens there yet)."""
    if not shutil.which("adb"):
        pytest.skip("adb is not installed (apt-get install adb)")
    port = _free_port()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    monkeypatch.delenv("ADB_SERVER_SOCKET", raising=False)
    yield port
    subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)


def test_an_adb_server_edgeqd_started_is_stopped(private_adb_port, tiny_onnx):
    from edgeqd.devices import bench, device_from_spec
    from edgeqd.devices.adb import adb_server_address, adb_server_running
    from edgeqd.errors import DeviceError

    address = adb_server_address()
    assert address == ("localhost", private_adb_port) and not adb_server_running(address)
    # No phone answers at this serial: the row fails, but adb started its server to find that out.
    rows = bench([tiny_onnx], [f"adb:127.0.0.1:{_free_port()}"], settings=BenchSettings(runs=1, min_seconds=0.0))
    assert not rows[0].ok and "daemon started" in rows[0].reason, rows[0].reason
    assert _wait_for(lambda: not adb_server_running(address)), "edgeqd left its adb server running"
    with pytest.raises(DeviceError):
        device_from_spec(f"adb:127.0.0.1:{_free_port()}").probe(timeout=30)
    assert _wait_for(lambda: not adb_server_running(address)), "probe left its adb server running"


def test_an_adb_server_the_user_started_is_left_running(private_adb_port, tiny_onnx):
    from edgeqd.devices import bench
    from edgeqd.devices.adb import adb_server_address, adb_server_running

    subprocess.run(["adb", "start-server"], capture_output=True, timeout=30, check=True)
    address = adb_server_address()
    assert adb_server_running(address)
    rows = bench([tiny_onnx], [f"adb:127.0.0.1:{_free_port()}"], settings=BenchSettings(runs=1, min_seconds=0.0))
    assert not rows[0].ok
    time.sleep(0.5)  # a kill-server would have closed the port by now
    assert adb_server_running(address), "edgeqd stopped the user's adb server"
