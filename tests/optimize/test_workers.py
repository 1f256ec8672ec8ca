"""Two worker processes share one SQLite study: distinct trials, then one front written by --resume."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from optimize_helpers import TINY, candidates, teacher, write_npz


def _command(npz, out, *extra):
    return [sys.executable, "-m", "edgeqd", "optimize", "--teacher", str(teacher()), "--data", str(npz),
            "--out", str(out), "--trials", "3", "--max-size-kb", "16", *TINY, *extra]


@pytest.mark.slow
def test_two_workers_share_one_study_and_the_main_run_writes_one_front(tmp_path):
    npz = write_npz(tmp_path)
    out = tmp_path / "opt"
    first = subprocess.Popen(_command(npz, out, "--worker"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    deadline = time.monotonic() + 120
    while not (out / "study.db").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)  # the first worker creates the study; the second joins it
    second = subprocess.Popen(_command(npz, out, "--worker"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    logs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, logs
    final = subprocess.run(_command(npz, out, "--resume"), capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    document = candidates(out)
    rows = document["candidates"]
    trained = [r for r in rows if r["status"] == "trained"]
    assert len({r["number"] for r in rows}) == len(rows)
    # Distinct candidates: a worker never trains what another trained or is training.
    labels = [r["candidate"]["label"] for r in trained]
    assert len(set(labels)) == len(labels) >= 3
    assert len({r["worker"] for r in rows if r["worker"]}) == 2, rows  # both workers ran trials
    # One front over every worker's trials, and the chosen one is on it.
    assert document["front"] and set(document["front"]) <= {r["number"] for r in trained}
    assert document["chosen"] in document["front"]
