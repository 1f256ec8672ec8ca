"""``local``: bench on the host CPU through the public function."""

from __future__ import annotations

import os
import tempfile

import pytest

from edgeqd.devices import bench
from edgeqd.errors import UsageError
from edgeqd.types import Status
from edgeqd.settings import BenchSettings

FAST = BenchSettings(runs=10, warmup=2, min_seconds=0.05, samples=100)


def test_local_rows_for_every_artifact_and_thread_count(models):
    artifacts = [models["int8.tflite"], models["fp32.tflite"], models["int8.onnx"], models["fp32.onnx"]]
    rows = bench(artifacts, ["local"], data="fashion-mnist", settings=FAST.replace(threads=(1, 2)))
    assert [(r.artifact, r.threads) for r in rows] == [(a.name, t) for a in artifacts for t in (1, 2)]
    for row in rows:
        assert row.status == Status.OK, row.reason
        assert not row.emulated and row.latency_note == ""
        assert row.count >= 10 and row.p50_ms > 0 and row.peak_rss_mb > 0 and row.samples == 100
        assert 0.5 < row.accuracy <= 1.0  # a briefly trained CNN on Fashion-MNIST
        # The reference is the fp32 TFLite among the artifacts ("auto").
        assert row.agreement >= 0.9
    fp32 = [r for r in rows if r.artifact == "model_fp32.tflite"]
    assert all(r.agreement == 1.0 for r in fp32)
    # Thread counts do not change what the model computes.
    by_artifact = {}
    for row in rows:
        by_artifact.setdefault(row.artifact, set()).add(row.accuracy)
    assert all(len(values) == 1 for values in by_artifact.values())


def test_odd_path_runs_locally(odd_named_int8):
    rows = bench([odd_named_int8], ["local"], settings=FAST)
    assert rows[0].ok, rows[0].reason
    assert rows[0].artifact == odd_named_int8.name and rows[0].accuracy is None
    assert not (odd_named_int8.parent / "pwned").exists()


def test_nothing_left_in_tmp(models, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a private tmp: /tmp is shared
    bench([models["int8.tflite"]], ["local"], data="fashion-mnist", settings=FAST)
    assert os.listdir(tmp_path) == []


def test_runner_failure_is_a_row_and_retried(models, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"garbage")
    rows = bench([broken, models["int8.tflite"]], ["local"], settings=FAST.replace(retries=1))
    assert rows[0].status == Status.FAILED and "cannot load" in rows[0].reason and rows[0].attempts == 2
    assert rows[1].ok


@pytest.mark.parametrize("kwargs, message", [
    (dict(artifacts=["missing.tflite"], devices=["local"]), "artifact not found"),
    (dict(devices=["nokia-3310"]), "unknown device"),
    (dict(devices=["ssh://"]), "no host"),
    (dict(devices=["ssh://pi@host:99999"]), "port"),
])
def test_usage_errors(models, kwargs, message):
    kwargs.setdefault("artifacts", [models["int8.tflite"]])
    with pytest.raises(UsageError, match=message):
        bench(**kwargs)


@pytest.mark.parametrize("kwargs, message", [(dict(threads=(0,)), "--threads"), (dict(runs=0), "--runs must be >= 1"),
                                             (dict(timeout=0.0), "--timeout must be a finite number > 0")])
def test_bench_settings_refuse_values_that_cannot_work(kwargs, message):
    with pytest.raises(UsageError, match=message):
        BenchSettings(**kwargs)
