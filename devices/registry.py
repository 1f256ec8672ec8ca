"""The device registry: :data:`DEVICES` keyed by kind, filled by :func:`register_device`.

The transport modules (local, qemu, ssh, adb) import :func:`register_device` from here and
:mod:`edgeqd.devices` imports them after this module, so importing the package registers
every kind and no transport imports its own package.

>>> from edgeqd.devices import DEVICES  # importing the package registers every kind
>>> "local" in DEVICES
True
"""

from __future__ import annotations

from typing import Callable, TypeVar

__all__ = ["DEVICES", "register_device"]

DEVICES: dict[str, type] = {}

_T = TypeVar("_T")


def register_device(name: str) -> Callable[[_T], _T]:
    """Class decorator that registers a :class:`~edgeqd.devices.base.Device` kind under ``name``.

    Args:
        name: the kind's name, as written in a device spec ("local", "ssh").

    >>> @register_device("doc-example")
    ... class ExampleDevice:
    ...     pass
    >>> ExampleDevice.kind, DEVICES.pop("doc-example") is ExampleDevice
    ('doc-example', True)
    """

    def decorate(cls: _T) -> _T:
        if name in DEVICES and DEVICES[name] is not cls:
            raise ValueError(f"device kind {name!r} is registered twice")
        cls.kind = name  # type: ignore[attr-defined]
        DEVICES[name] = cls  # type: ignore[assignment]
        return cls

    return decorate
