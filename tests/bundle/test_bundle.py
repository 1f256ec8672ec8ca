"""write_bundle: the files beside the artifacts, with and without an int8 TFLite."""

from __future__ import annotations

import json
import shutil

import pytest
from report_fixtures import tiny_run

from edgeqd.bundle import write_bundle


@pytest.fixture(scope="module")
def run():
    return tiny_run()


def test_bundle_without_int8_tflite_has_no_c_array(run, tmp_path):
    manifest = json.loads(json.dumps(run["manifest"]))
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["format"] in ("onnx-fp32", "onnx-int8")]
    for a in manifest["artifacts"]:
        shutil.copy(run["dir"] / a["file"], tmp_path / a["file"])
    written = write_bundle(tmp_path, manifest)
    assert written == ["labels.txt", "INTEGRATION.md"]
    text = (tmp_path / "INTEGRATION.md").read_text()
    assert "## ONNX Runtime" in text and "TensorFlow Lite Micro" not in text
