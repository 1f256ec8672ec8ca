"""Devices: where edgeqd measures artifacts, registered by name.

One module per transport registers its device kind with :func:`register_device`:

==================  ======================================================================
``local``           the host CPU
``qemu-aarch64``    an emulated Raspberry Pi 4 (Cortex-A72, Debian bookworm arm64 userland)
``qemu-armv7``      an emulated 32-bit Raspberry Pi (armhf, tflite-runtime, Debian's numpy)
``ssh``             ``ssh://[user@]host[:port]``: a Raspberry Pi or any Linux board
``adb``             ``adb[:SERIAL]``: an Android phone or emulator
==================  ======================================================================

Every kind runs the same standalone runner (``runner.py`` in this package) and so
reports the same schema; :func:`bench` is the one public function behind
``edgeqd bench``.

>>> sorted(DEVICES)
['adb', 'local', 'qemu-aarch64', 'qemu-armv7', 'ssh']
"""

from __future__ import annotations

from typing import Callable, TypeVar

DEVICES: dict[str, type] = {}

_T = TypeVar("_T")


def register_device(name: str) -> Callable[[_T], _T]:
    """Class decorator that registers a :class:`~edgeqd.devices.base.Device` kind under ``name``.

    Args:
        name: the kind's name, as written in a device spec ("local", "ssh").

    >>> @register_device("example")  # doctest: +SKIP
    ... class ExampleDevice(Device): ...
    """

    def decorate(cls: _T) -> _T:
        if name in DEVICES and DEVICES[name] is not cls:
            raise ValueError(f"device kind {name!r} is registered twice")
        cls.kind = name  # type: ignore[attr-defined]
        DEVICES[name] = cls  # type: ignore[assignment]
        return cls

    return decorate


# Transports register themselves on import; the order is the order of `devices list`.
from edgeqd.devices import local, qemu, ssh, adb  # noqa: E402,F401
from edgeqd.devices.base import Device, device_from_spec  # noqa: E402
from edgeqd.devices.bench import bench, load_devices_file, DeviceConfig  # noqa: E402

__all__ = ["DEVICES", "register_device", "Device", "device_from_spec", "bench",
           "load_devices_file", "DeviceConfig"]
