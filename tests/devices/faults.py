"""The dropped-connection fault path, shared by the transports that have a connection (ssh, adb)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

from edgeqd.devices import bench
from edgeqd.types import BenchResult
from edgeqd.settings import BenchSettings


def bench_with_dropped_connection(model: Path, device, remote_tmp: Path,
                                  drop: Callable[[], None]) -> BenchResult:
    """Bench ``model`` on ``device`` and cut the connection while the runner is timing there.

    The run asks for 60 s of timing, so the cut comes long before it could end on its own.
    Returns the row once the bench has returned and the device's work folders are gone
    (or 15 s have passed: the caller asserts on ``remote_tmp``).

    Args:
        model: the artifact (its name marks the runner's work folder on the device).
        device: a device spec or DeviceConfig.
        remote_tmp: the folder the device creates its per-run work folders in.
        drop: cuts every connection of the fixture.
    """
    result = {}

    def run():
        result["rows"] = bench([model], [device], settings=BenchSettings(runs=5, min_seconds=60, max_seconds=120, timeout=120))

    worker = threading.Thread(target=run)
    worker.start()
    # Wait until the runner is timing on the device: its work folder holds the model.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            model.name in os.listdir(remote_tmp / d) for d in os.listdir(remote_tmp)):
        time.sleep(0.2)
    time.sleep(3)
    drop()
    worker.join(timeout=90)
    assert not worker.is_alive()
    # The runner sees its stdin end and removes its own folder; give it a moment.
    deadline = time.monotonic() + 15
    while os.listdir(remote_tmp) and time.monotonic() < deadline:
        time.sleep(0.2)
    return result["rows"][0]
