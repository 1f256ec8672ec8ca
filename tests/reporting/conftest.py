"""The report tests' shared input: the tiny converted run plus real bench documents of it."""

from __future__ import annotations

import json

import pytest
from report_fixtures import tiny_run


@pytest.fixture(scope="session")
def run_with_bench():
    """The tiny run plus a real local bench of its artifacts, and one hand-written emulated row."""
    from edgeqd.devices import bench
    from edgeqd.documents import new_bench_document
    from edgeqd.settings import BenchSettings

    run = tiny_run()
    folder = run["dir"]
    if not (folder / "bench_local.json").exists():
        files = [folder / a["file"] for a in run["manifest"]["artifacts"] if a["status"] == "ok"]
        rows = bench(files, ["local"], settings=BenchSettings(threads=(1, 2), runs=5, warmup=1, min_seconds=0.05,
                                                             max_seconds=5))
        document = new_bench_document([r.to_dict() for r in rows],
                                      {"artifacts": [str(f) for f in files], "devices": ["local"]})
        (folder / "bench_local.json").write_text(json.dumps(document, default=str))
        # A row as the qemu device writes it, to check the marking (running qemu costs ~25 s and 300 MB).
        emulated = {**document["rows"][0], "device": "qemu-aarch64", "kind": "qemu-aarch64", "emulated": True,
                    "latency_note": "emulated — not a device latency"}
        emulated_doc = {**document, "rows": [emulated]}
        (run["root"] / "bench_emulated.json").write_text(json.dumps(emulated_doc, default=str))
    return run
