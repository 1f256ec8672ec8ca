"""``local``: the host CPU, running the runner with this Python (edgeqd's own environment)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from edgeqd.devices.registry import register_device
from edgeqd.devices.base import Completed, Device, Session, run_process


class LocalSession(Session):
    """A private temporary folder on this machine; commands run without a shell.

    Args:
        python: argv prefix that starts the device's Python.
        env: environment for the commands (None = inherit).
        prefix: name prefix of the work folder.
    """

    def __init__(self, python: Sequence[str], env: Optional[dict] = None, prefix: str = "edgeqd-") -> None:
        super().__init__()
        self.python = list(python)
        self.env = env
        self.workdir = tempfile.mkdtemp(prefix=prefix)

    def put(self, local: Path, name: str) -> str:
        target = Path(self.workdir) / name
        shutil.copyfile(local, target)
        return str(target)

    def run(self, argv: Sequence[str], timeout: float) -> Completed:
        # No shell anywhere: arguments with spaces, quotes or $() reach the runner unchanged.
        return run_process(argv, timeout=timeout, env=self.env, cwd=self.workdir)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


@register_device("local")
class LocalDevice(Device):
    """The host CPU, measured with the Python that runs edgeqd.

    >>> LocalDevice("local").open().close()
    """

    shares_host = True
    option_names = frozenset({"python"})
    description = "the host CPU (this machine)"

    def open(self) -> LocalSession:
        return LocalSession([self.options.get("python", sys.executable)])
