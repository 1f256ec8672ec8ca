"""``ssh://``: Debian's openssh-server on 127.0.0.1 with generated keys, the system ssh client.

The plain server runs the runner with this machine's Python (device option ``python``);
the ARM server's ``ForceCommand`` puts the qemu-aarch64 sysroot's Python on PATH, so the
ssh path runs ARM code for real.
"""

from __future__ import annotations

import os
import sys
import time

import pytest
from faults import bench_with_dropped_connection

from edgeqd.devices import DeviceConfig, bench
from edgeqd.types import EMULATED_LATENCY_NOTE, Status
from edgeqd.settings import BenchSettings

FAST = BenchSettings(runs=5, warmup=1, min_seconds=0.0, samples=100)
pytestmark = [pytest.mark.ssh]


def host_python_device(sshd, **extra) -> DeviceConfig:
    return DeviceConfig(spec=sshd.spec, name="ssh-host", options=sshd.options(python=sys.executable, **extra))


def test_ssh_bench_odd_path_matches_local(sshd, models, odd_named_int8):
    rows = bench([odd_named_int8, models["fp32.tflite"]], ["local", host_python_device(sshd)],
                 data="fashion-mnist", settings=FAST)
    assert all(r.ok for r in rows), [r.reason for r in rows]
    for artifact in (odd_named_int8.name, "model_fp32.tflite"):
        local, remote = [r for r in rows if r.artifact == artifact]
        assert remote.kind == "ssh" and remote.accuracy == local.accuracy
    # Quoting held: nothing ran the $() inside the file name, and nothing is left on the "board".
    assert not (odd_named_int8.parent / "pwned").exists() and not os.path.exists("pwned")
    assert os.listdir(sshd.remote_tmp) == []


def test_unreachable_host_and_bad_host_key_are_failed_rows(sshd, models, tmp_path):
    refused = DeviceConfig(spec="ssh://nobody@127.0.0.1:1", name="refused",
                           options={"connect_timeout": 5, "ssh_config": str(sshd.ssh_config)})
    wrong_keys = tmp_path / "known_hosts"
    wrong_keys.write_text(f"[127.0.0.1]:{sshd.port} ssh-ed25519 "
                          "AAAAC3NzaC1lZDI1NTE5AAAAIGq3SqSSXoGQnSVEy8Cyl0kOD+0yeBbBSMd1PD6R1bB0\n")
    spoofed = DeviceConfig(spec=sshd.spec, name="spoofed",
                           options=sshd.options(python=sys.executable,
                                                ssh_options=[f"UserKnownHostsFile={wrong_keys}"]))
    started = time.monotonic()
    rows = bench([models["int8.tflite"]], ["local", refused, spoofed], settings=FAST)
    by_device = {r.device: r for r in rows}
    assert by_device["local"].ok
    assert by_device["refused"].status == Status.FAILED and "refused" in by_device["refused"].reason.lower()
    assert by_device["spoofed"].status == Status.FAILED
    assert "host key" in by_device["spoofed"].reason.lower()
    assert time.monotonic() - started < 60


def test_connection_killed_mid_run(sshd, models):
    device = host_python_device(sshd, connect_timeout=5)
    row = bench_with_dropped_connection(models["int8.tflite"], device, sshd.remote_tmp, sshd.drop_connections)
    assert row.status == Status.FAILED and "connection lost" in row.reason, row.reason
    # The runner saw its stdin end and removed its folder; close() also cleaned up.
    assert os.listdir(sshd.remote_tmp) == []


@pytest.mark.slow
@pytest.mark.qemu
def test_ssh_into_arm_sysroot(arm_sshd, models):
    device = DeviceConfig(spec=arm_sshd.spec, name="pi-over-ssh", options=arm_sshd.options())
    rows = bench([models["int8.tflite"]], ["local", device], data="fashion-mnist", settings=FAST)
    local, remote = rows
    assert remote.ok, remote.reason
    assert remote.device_info["machine"] == "aarch64" and remote.device_info["cpu"] == "Cortex-A72"
    assert remote.accuracy == local.accuracy
    # The board is emulated (the runner sees it): its latency carries the label.
    assert remote.emulated and remote.latency_note == EMULATED_LATENCY_NOTE
    assert os.listdir(arm_sshd.remote_tmp) == []


def test_probe_over_ssh(sshd):
    from edgeqd.devices import device_from_spec

    probe = device_from_spec(sshd.spec, options=sshd.options(python=sys.executable)).probe()
    assert probe["device"]["machine"] and "ai_edge_litert" in probe["runtimes"]
    assert os.listdir(sshd.remote_tmp) == []
