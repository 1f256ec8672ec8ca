"""Gathering runs and bench rows: through the one document reader, old files included, rows keyed by folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeqd.documents import BENCH_SCHEMA, MANIFEST_SCHEMA, new_bench_document
from edgeqd.errors import DataError, UsageError
from edgeqd.reporting import latency_points, load_report_data, write_report


def test_bench_json_alone_is_enough(run_with_bench, tmp_path):
    data = load_report_data([run_with_bench["dir"] / "bench_local.json"])
    assert data.runs == [] and len(data.bench_rows) >= 8
    assert write_report([run_with_bench["dir"] / "bench_local.json"], tmp_path / "r.html").exists()


def test_bad_inputs_are_typed_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_report_data([tmp_path / "missing"])
    with pytest.raises(UsageError, match="no manifest.json or bench JSON"):
        load_report_data([tmp_path])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match="not readable JSON"):
        load_report_data([broken])


# --------------------------------------------------------------------------- hand-written documents

def old_manifest(name: str = "model_int8.tflite", size: int = 100, accuracy: float = 0.9) -> dict:
    """A manifest as edgeqd 0.1 wrote it: no schema id."""
    return {"edgeqd_version": "0.1.0", "input_model": {"name": "tiny"}, "data": {"name": "d", "class_names": []},
            "keras": {"accuracy": accuracy + 0.01}, "problems": [],
            "artifacts": [{"format": "tflite-int8", "file": name, "bytes": size, "status": "ok", "runtime": "tflite",
                           "dtype": "int8", "evaluation": {"accuracy": accuracy}}]}


def bench_row(name: str = "model_int8.tflite", size: int = 100, p50: float = 1.0) -> dict:
    return {"artifact": name, "device": "local", "kind": "local", "threads": 1, "status": "ok", "reason": "",
            "p50_ms": p50, "p90_ms": p50 * 1.2, "peak_rss_mb": 50.0, "artifact_bytes": size, "emulated": False}


def write_json(path, document) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


def test_old_manifest_without_schema_loads_with_its_schema_id(tmp_path):
    write_json(tmp_path / "run" / "manifest.json", old_manifest())
    data = load_report_data([tmp_path / "run"])
    assert [r.name for r in data.runs] == ["run"]
    assert data.runs[0].manifest["schema"] == MANIFEST_SCHEMA  # upgraded in memory by read_document
    assert "schema" not in json.loads((tmp_path / "run" / "manifest.json").read_text())  # the file is unchanged


def test_manifest_with_an_unknown_schema_names_it(tmp_path):
    write_json(tmp_path / "run" / "manifest.json", {**old_manifest(), "schema": "edgeqd-manifest/99"})
    with pytest.raises(DataError, match=r"schema 'edgeqd-manifest/99' is not an edgeqd"):
        load_report_data([tmp_path / "run"])


def test_other_json_beside_a_run_is_skipped_but_refused_when_named(tmp_path):
    write_json(tmp_path / "run" / "manifest.json", old_manifest())
    write_json(tmp_path / "run" / "tsconfig.json", {"compilerOptions": {}})
    data = load_report_data([tmp_path / "run"])
    assert data.sources == [str(tmp_path / "run" / "manifest.json")]
    with pytest.raises(UsageError, match=r"is not an edgeqd manifest or bench document \(schemas: "
                                         + MANIFEST_SCHEMA):
        load_report_data([tmp_path / "run" / "tsconfig.json"])


def test_bench_rows_of_same_named_artifacts_from_two_folders_stay_apart(tmp_path):
    """Two bench files, each next to its own model_int8.tflite: two artifacts, labelled by their folder."""
    for folder, p50 in (("fast", 1.0), ("slow", 3.0)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model_int8.tflite").write_bytes(b"x" * 100)
        document = new_bench_document([bench_row(p50=p50)], {"artifacts": ["model_int8.tflite"]})
        write_json(tmp_path / folder / "bench.json", document)
    data = load_report_data([tmp_path / "fast" / "bench.json", tmp_path / "slow" / "bench.json"])
    labels = {r["label"]: r["p50_ms"] for r in data.bench_rows}
    assert labels == {"fast/model_int8.tflite": 1.0, "slow/model_int8.tflite": 3.0}
    assert {r["folder"] for r in data.bench_rows} == {str((tmp_path / f).resolve()) for f in ("fast", "slow")}
    assert all(document["schema"] == BENCH_SCHEMA for document in
               (json.loads((tmp_path / f / "bench.json").read_text()) for f in ("fast", "slow")))


def test_one_bench_of_two_same_named_artifacts_is_told_apart_by_size(tmp_path):
    for folder, size in (("a", 100), ("b", 250)):
        write_json(tmp_path / folder / "manifest.json", old_manifest(size=size, accuracy=0.8 if folder == "a" else 0.9))
        (tmp_path / folder / "model_int8.tflite").write_bytes(b"x" * size)
    document = new_bench_document([bench_row(size=250, p50=2.0), bench_row(size=100, p50=1.0)],
                                  {"artifacts": ["a/model_int8.tflite", "b/model_int8.tflite"]})
    write_json(tmp_path / "bench.json", document)
    data = load_report_data([tmp_path / "a", tmp_path / "b", tmp_path / "bench.json"])
    assert {r["label"]: r["run"] for r in data.bench_rows} == {"b/model_int8.tflite": "b", "a/model_int8.tflite": "a"}
    # Each latency point takes the accuracy of its own run's artifact (0.9 for b, 0.8 for a).
    points = {p["label"].split(" · ")[0]: (p["x"], p["y"]) for p in latency_points(data)}
    assert points == {"b/model_int8.tflite": (2.0, 0.9), "a/model_int8.tflite": (1.0, 0.8)}


def test_runs_with_the_same_folder_name_get_their_parent_in_labels(tmp_path):
    for parent in ("x", "y"):
        run = tmp_path / parent / "out"
        write_json(run / "manifest.json", old_manifest())
        (run / "model_int8.tflite").write_bytes(b"x" * 100)
        write_json(run / "bench.json", new_bench_document([bench_row()], {"artifacts": [str(run / "model_int8.tflite")]}))
    data = load_report_data([tmp_path / "x" / "out", tmp_path / "y" / "out"])
    assert sorted(r.name for r in data.runs) == ["x/out", "y/out"]
    assert sorted(r["label"] for r in data.bench_rows) == ["x/out/model_int8.tflite", "y/out/model_int8.tflite"]


def test_a_file_given_twice_is_read_once(tmp_path):
    write_json(tmp_path / "run" / "manifest.json", old_manifest())
    write_json(tmp_path / "run" / "bench.json", new_bench_document([bench_row()], {}))
    data = load_report_data([tmp_path / "run", tmp_path / "run" / "bench.json"])
    assert len(data.bench_rows) == 1 and len(data.sources) == 2
    assert data.bench_rows[0]["run"] == "run" and data.bench_rows[0]["label"] == "model_int8.tflite"


def test_rows_that_bench_named_by_folder_find_their_own_file(tmp_path):
    """bench names same-named artifacts ``ptq/model_int8.tflite``: each row finds its own file, whatever the sizes."""
    for folder in ("ptq", "qat"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model_int8.tflite").write_bytes(b"x" * 100)
    rows = [bench_row(f"{folder}/model_int8.tflite", p50=p50) for folder, p50 in (("qat", 2.0), ("ptq", 1.0))]
    write_json(tmp_path / "bench.json", new_bench_document(rows, {"artifacts": ["ptq/model_int8.tflite",
                                                                                "qat/model_int8.tflite"]}))
    data = load_report_data([tmp_path / "bench.json"])
    assert {r["label"]: (Path(r["folder"]).name, r["p50_ms"]) for r in data.bench_rows} == {
        "qat/model_int8.tflite": ("qat", 2.0), "ptq/model_int8.tflite": ("ptq", 1.0)}
