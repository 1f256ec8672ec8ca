"""Helpers of the hostile-input tests: a byte-level snapshot of a folder, the edgeqd command line."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (and the names of its folders and links), to compare before/after.

    Args:
        folder: the folder to describe.
    """
    state = {}
    for path in sorted(Path(folder).rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            state[key] = "link -> " + os.readlink(path)
        elif path.is_dir():
            state[key] = "folder"
        else:
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def edgeqd_command() -> list[str]:
    """The installed ``edgeqd`` script of this interpreter's environment (or ``python -m edgeqd``)."""
    script = Path(sys.executable).with_name("edgeqd")
    return [str(script)] if script.exists() else [sys.executable, "-m", "edgeqd"]
