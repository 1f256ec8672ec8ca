"""Every registered device kind has a test; specs map to kinds; devices files are validated."""

from __future__ import annotations

import pytest

import test_adb
import test_local
import test_qemu
import test_ssh
import test_tflm
from edgeqd.devices import DEVICES, device_from_spec, load_devices_file
from edgeqd.errors import UsageError

# kind → the test that runs it for real. A new kind without an entry here fails the suite.
TESTED = {
    "local": test_local.test_local_rows_for_every_artifact_and_thread_count,
    "qemu-aarch64": test_qemu.test_qemu_accuracy_equals_local,
    "qemu-armv7": test_qemu.test_armv7_tflite_accuracy_equals_local,
    "ssh": test_ssh.test_ssh_bench_odd_path_matches_local,
    "adb": test_adb.test_adb_runner_odd_path_matches_local,
    "tflm": test_tflm.test_tflm_bench_row_has_arena_flash_ops_and_local_accuracy,
}


def test_every_registered_kind_is_tested():
    assert set(DEVICES) == set(TESTED), f"untested device kinds: {set(DEVICES) ^ set(TESTED)}"
    assert all(callable(test) for test in TESTED.values())


@pytest.mark.parametrize("spec, kind", [("local", "local"), ("qemu-aarch64", "qemu-aarch64"),
                                        ("qemu-armv7", "qemu-armv7"), ("ssh://pi@raspberrypi.local", "ssh"),
                                        ("ssh://10.0.0.7:2222", "ssh"), ("adb", "adb"),
                                        ("adb:emulator-5554", "adb"), ("tflm", "tflm")])
def test_specs(spec, kind):
    assert device_from_spec(spec).kind == kind


def test_bad_specs():
    for spec in ("ssh://-oProxyCommand=x", "adb:$(reboot)", "pi4", "ssh://host/path"):
        with pytest.raises(UsageError):
            device_from_spec(spec)


def test_devices_file(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("devices:\n  - name: pi4\n    spec: ssh://pi@pi4.local\n    governor: performance\n"
                    "    thermal: heatsink, fan off\n    options: {python: python3.11}\n  - local\n")
    fleet = load_devices_file(path)
    assert [c.name or c.spec for c in fleet] == ["pi4", "local"]
    assert fleet[0].notes == "thermal: heatsink, fan off; governor: performance"
    assert fleet[0].device().options["python"] == "python3.11"
    path.write_text("- spec: local\n  colour: blue\n")
    with pytest.raises(UsageError, match="colour"):
        load_devices_file(path)
    path.write_text("- spec: ssh://pi@host\n  options: {pasword: x}\n")
    with pytest.raises(UsageError, match="pasword"):
        load_devices_file(path)
