"""``qemu-aarch64`` and ``qemu-armv7``: ARM code for real under qemu-user."""

from __future__ import annotations

import pytest

from edgeqd.devices import bench
from edgeqd.devices.qemu import build_sysroot, qemu_missing_reason, sysroot_dir, sysroot_ready
from edgeqd.types import EMULATED_LATENCY_NOTE
from edgeqd.settings import BenchSettings

FAST = BenchSettings(runs=5, warmup=1, min_seconds=0.0, samples=100)

pytestmark = [pytest.mark.qemu]


@pytest.mark.slow
def test_qemu_accuracy_equals_local(models, aarch64_sysroot):
    artifacts = [models["int8.tflite"], models["fp32.tflite"], models["int8.onnx"]]
    rows = bench(artifacts, ["local", "qemu-aarch64"], data="fashion-mnist", settings=FAST)
    assert len(rows) == 6 and all(r.ok for r in rows), [r.reason for r in rows]
    for artifact in artifacts:
        local, emulated = [r for r in rows if r.artifact == artifact.name]
        assert local.device == "local" and emulated.device == "qemu-aarch64"
        # Same model, same inputs, same integer kernels on ARM: the same predictions, sample by sample.
        assert emulated.accuracy == local.accuracy
        assert emulated.raw["quality"]["predictions"] == local.raw["quality"]["predictions"]
        assert emulated.emulated and emulated.latency_note == EMULATED_LATENCY_NOTE
        assert emulated.device_info["machine"] == "aarch64" and emulated.device_info["cpu"] == "Cortex-A72"
        assert emulated.device_info["os"].startswith("Debian GNU/Linux 12")


def test_setup_is_idempotent(aarch64_sysroot):
    from edgeqd.devices import device_from_spec

    assert sysroot_ready("qemu-aarch64")
    message = device_from_spec("qemu-aarch64").setup()
    assert "already ready" in message
    assert build_sysroot("qemu-aarch64") == sysroot_dir("qemu-aarch64") == aarch64_sysroot


def test_probe_reports_arm(aarch64_sysroot):
    from edgeqd.devices import device_from_spec

    probe = device_from_spec("qemu-aarch64").probe()
    assert probe["device"]["machine"] == "aarch64" and probe["device"]["emulated"]
    assert {"ai_edge_litert", "onnxruntime", "numpy"} <= set(probe["runtimes"])


@pytest.mark.slow
def test_armv7_tflite_accuracy_equals_local(models):
    """The 32-bit Pi userland (armhf, tflite-runtime, Debian's numpy), built and run for real."""
    reason = qemu_missing_reason("qemu-armv7")
    if reason:
        pytest.skip(reason)
    build_sysroot("qemu-armv7")
    artifacts = [models["int8.tflite"], models["fp32.tflite"], models["int8.onnx"]]
    rows = bench(artifacts, ["local", "qemu-armv7"], data="fashion-mnist",
                 settings=BenchSettings(runs=3, warmup=1, min_seconds=0.0, samples=50))
    for artifact in artifacts[:2]:
        local, emulated = [r for r in rows if r.artifact == artifact.name]
        assert emulated.ok, emulated.reason
        assert emulated.raw["quality"]["predictions"] == local.raw["quality"]["predictions"]
        assert emulated.accuracy == local.accuracy and emulated.latency_note == EMULATED_LATENCY_NOTE
        assert emulated.runtime == "tflite_runtime" and emulated.device_info["machine"] == "armv7l"
        assert emulated.device_info["cpu"] == "Cortex-A7"
    # No onnxruntime wheel exists for 32-bit ARM: a failed row that says so, the others kept.
    local_onnx, armv7_onnx = [r for r in rows if r.artifact == "model_int8.onnx"]
    assert local_onnx.ok and not armv7_onnx.ok and "32-bit ARM" in armv7_onnx.reason


def test_link_alternatives_gives_numpy_its_blas(tmp_path):
    from edgeqd.devices.qemu import _link_alternatives

    blas = tmp_path / "usr" / "lib" / "arm-linux-gnueabihf" / "blas"
    blas.mkdir(parents=True)
    (blas / "libblas.so.3").write_bytes(b"ELF")
    _link_alternatives(tmp_path)
    _link_alternatives(tmp_path)  # idempotent
    link = blas.parent / "libblas.so.3"
    assert link.is_symlink() and link.read_bytes() == b"ELF"


def test_a_stale_security_index_is_tolerated_but_not_a_broken_main_one():
    from edgeqd.devices.qemu import optional_index_failures

    # apt-get update's words when a mirror is mid-sync (seen building the armhf sysroot).
    stale = ("E: Failed to fetch http://deb.debian.org/debian-security/dists/bookworm-security/main/"
             "binary-armhf/Packages.xz  File has unexpected size (334084 != 349884). Mirror sync in progress?\n"
             "E: Some index files failed to download. They have been ignored, or old ones used instead.\n")
    assert optional_index_failures(stale) == ["http://deb.debian.org/debian-security/dists/bookworm-security/"
                                              "main/binary-armhf/Packages.xz"]
    broken = stale + "E: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  404\n"
    assert optional_index_failures(broken) == []
    assert optional_index_failures("E: Could not get lock") == []
