"""``--storage postgresql://…``: a real PostgreSQL (Debian's package) started by the test, where available.

Skipped when the server binaries (``initdb``, ``pg_ctl``), the ``postgres`` system user or
the driver (``psycopg``, the ``postgresql`` extra) are missing: the SQLite path
(test_workers.py) covers the sharing logic everywhere.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from optimize_helpers import TINY, candidates, teacher, write_npz


def _missing() -> str:
    if not (shutil.which("initdb") and shutil.which("pg_ctl") and shutil.which("runuser")):
        return "PostgreSQL server binaries not installed"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres system user"
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg not installed (pip install 'edgeqd[postgresql]')"
    if os.geteuid() != 0:
        return "starting PostgreSQL as another user needs root here"
    return ""


pytestmark = pytest.mark.skipif(bool(_missing()), reason=_missing() or "available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A throw-away PostgreSQL on 127.0.0.1 (trust auth), stopped and removed afterwards; yields its URL."""
    # Not under pytest's tmp_path: the postgres user cannot enter root's 0700 pytest folder.
    folder = Path(tempfile.mkdtemp(prefix="edgeqd-pg-"))
    shutil.chown(folder, "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, "initdb", "-D", str(folder / "data"), "-A", "trust", "-U", "edgeqd"],
                   check=True, capture_output=True, timeout=120)
    port = _free_port()
    subprocess.run([*as_postgres, "pg_ctl", "-D", str(folder / "data"), "-w", "-l", str(folder / "log"),
                    "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql://edgeqd@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, "pg_ctl", "-D", str(folder / "data"), "-w", "-m", "fast", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_study_in_postgresql_is_joined_by_a_worker_and_resumed(postgres, tmp_path):
    npz = write_npz(tmp_path)

    def command(out, *extra):
        return [sys.executable, "-m", "edgeqd", "optimize", "--teacher", str(teacher()), "--data", str(npz),
                "--out", str(out), "--storage", postgres, "--family", "mlp", *TINY, *extra]

    # A worker on "another machine" (its own DIR) creates the study in PostgreSQL and trains one candidate.
    worker = subprocess.run(command(tmp_path / "machine-b", "--worker", "--trials", "1"), capture_output=True,
                            text=True, timeout=600)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    shutil.rmtree(tmp_path / "machine-b")  # its files are not on this machine: only the study is shared
    done = subprocess.run(command(tmp_path / "machine-a", "--resume", "--trials", "1"), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    document = candidates(tmp_path / "machine-a")
    trained = [r for r in document["candidates"] if r["status"] == "trained"]
    assert len(trained) == 1 and trained[0]["worker"] != "main"  # the study had enough: nothing trained here
    assert document["storage"] == postgres  # no password to hide here
    assert not (tmp_path / "machine-a" / "study.db").exists()
    # The chosen candidate was trained elsewhere: best/ is rebuilt here from its parameters and seed.
    assert document["chosen"] == trained[0]["number"] and document["held_out"]["rebuilt_here"] is True
    shipped = tmp_path / "machine-a" / "best" / trained[0]["file"]
    assert abs(shipped.stat().st_size - trained[0]["size_bytes"]) <= 64  # same graph (scale digits aside)
