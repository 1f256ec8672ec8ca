"""Devices: where edgeqd measures artifacts, registered by name.

One module per transport registers its device kind with :func:`register_device`:

==================  ======================================================================
``local``           the host CPU
``qemu-aarch64``    an emulated Raspberry Pi 4 (Cortex-A72, Debian bookworm arm64 userland)
``qemu-armv7``      an emulated 32-bit Raspberry Pi (armhf, tflite-runtime, Debian's numpy)
``ssh``             ``ssh://[user@]host[:port]``: a Raspberry Pi or any Linux board
``adb``             ``adb[:SERIAL]``: an Android phone or emulator
``tflm``            TensorFlow Lite Micro's interpreter on the host: tensor arena, flash, ops
==================  ======================================================================

Every kind runs the same standalone runner (``runner.py`` in this package) and so
reports the same schema; :func:`bench` is the one public function behind
``edgeqd bench``.

>>> sorted(DEVICES)
['adb', 'local', 'qemu-aarch64', 'qemu-armv7', 'ssh', 'tflm']
"""

from __future__ import annotations

from edgeqd.devices.registry import DEVICES, register_device

# Transports register themselves on import; the order is the order of `devices list`.
from edgeqd.devices import local, qemu, ssh, adb, tflm  # noqa: F401
from edgeqd.devices.base import Device, device_from_spec
from edgeqd.devices.bench import bench, load_devices_file, DeviceConfig

__all__ = ["DEVICES", "register_device", "Device", "device_from_spec", "bench",
           "load_devices_file", "DeviceConfig"]
