"""``qemu-aarch64`` (and the armv7 recipe): ARM code for real under qemu-user."""

from __future__ import annotations

import pytest

from edgeqd.devices import bench
from edgeqd.devices.qemu import RECIPES, build_sysroot, qemu_missing_reason, sysroot_dir, sysroot_ready
from edgeqd.types import EMULATED_LATENCY_NOTE

FAST = dict(runs=5, warmup=1, min_seconds=0.0, samples=100)

pytestmark = [pytest.mark.qemu]


@pytest.mark.slow
def test_qemu_accuracy_equals_local(models, aarch64_sysroot):
    artifacts = [models["int8.tflite"], models["fp32.tflite"], models["int8.onnx"]]
    rows = bench(artifacts, ["local", "qemu-aarch64"], data="fashion-mnist", **FAST)
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


def test_armv7_recipe_is_the_32_bit_pi():
    # The armv7 sysroot (tflite-runtime + Debian's numpy) is built by `edgeqd devices setup
    # qemu-armv7`; building it here too would double the suite's download, so its recipe is checked.
    recipe = RECIPES["qemu-armv7"]
    assert recipe.debian_arch == "armhf" and recipe.qemu == "qemu-arm-static"
    assert "python3-numpy" in recipe.packages and recipe.wheels[0].startswith("tflite-runtime")
    assert qemu_missing_reason("qemu-armv7") is None or "qemu" in qemu_missing_reason("qemu-armv7")
