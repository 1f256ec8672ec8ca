"""Metadata inside the artifacts, read back by independent code: TensorFlow's schema, onnx.load, LiteRT."""

from __future__ import annotations

import io
import json
import shutil
import zipfile

import numpy as np
import pytest
from report_fixtures import CLASSES, tiny_run
from report_fixtures import artifact_path as artifact

from edgeqd._vendor import tflite_metadata_schema as meta_schema
from edgeqd.bundle.metadata import (build_tflite_model_metadata, embed_tflite_metadata, normalization_mean_std,
                                    read_tflite_model_metadata)


@pytest.fixture(scope="module")
def run():
    return tiny_run()


def tflite_metadata_buffers(data: bytes) -> dict[str, bytes]:
    """Metadata entries read with TensorFlow's copy of the TFLite schema (not the one edgeqd uses)."""
    from tensorflow.lite.python import schema_py_generated as tf_schema

    model = tf_schema.Model.GetRootAsModel(data, 0)
    entries = {}
    for m in range(model.MetadataLength()):
        entry = model.Metadata(m)
        entries[entry.Name().decode()] = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return entries


@pytest.mark.parametrize("fmt", ["tflite-fp32", "tflite-int8"])
def test_tflite_metadata_follows_the_tflite_metadata_spec(run, fmt):
    data = artifact(run, fmt).read_bytes()
    entries = tflite_metadata_buffers(data)
    raw = entries["TFLITE_METADATA"]
    assert meta_schema.ModelMetadata.ModelMetadataBufferHasIdentifier(raw, 0)  # "M001"
    # Read through the generated accessors (the reading half of the spec's Python API).
    model_meta = meta_schema.ModelMetadata.GetRootAsModelMetadata(raw, 0)
    assert model_meta.Name().decode() == "tiny_cnn"
    assert model_meta.Author().decode().startswith("edgeqd ")
    subgraph = model_meta.SubgraphMetadata(0)
    image = subgraph.InputTensorMetadata(0)
    assert image.Content().ContentPropertiesType() == meta_schema.ContentProperties.ImageProperties
    unit = image.ProcessUnits(0)
    assert unit.OptionsType() == meta_schema.ProcessUnitOptions.NormalizationOptions
    options = meta_schema.NormalizationOptions()
    options.Init(unit.Options().Bytes, unit.Options().Pos)
    # x = raw / 255 in training ⇔ (raw - 0) / 255 in the spec's terms.
    assert (options.Mean(0), options.Std(0)) == pytest.approx((0.0, 255.0))
    label_file = subgraph.OutputTensorMetadata(0).AssociatedFiles(0)
    assert label_file.Name().decode() == "labels.txt"
    assert label_file.Type() == meta_schema.AssociatedFileType.TENSOR_AXIS_LABELS
    # The labels ship inside the .tflite as a zip after the flatbuffer, as the spec packs them.
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("labels.txt").decode().splitlines() == list(CLASSES)


def test_tflite_json_metadata_matches_what_litert_reports(run):
    from ai_edge_litert.interpreter import Interpreter

    path = artifact(run, "tflite-int8")
    entries = tflite_metadata_buffers(path.read_bytes())
    info = json.loads(entries["edgeqd"])
    assert info["labels"] == list(CLASSES)
    assert info["input_normalization"]["scale"] == pytest.approx(1 / 255)
    assert info["producer"].startswith("edgeqd ")
    detail = Interpreter(model_path=str(path)).get_input_details()[0]
    scale, zero = detail["quantization"]
    assert info["inputs"][0]["name"] == detail["name"]
    assert info["inputs"][0]["scale"][0] == pytest.approx(scale)
    assert info["inputs"][0]["zero_point"][0] == zero


@pytest.mark.parametrize("fmt", ["onnx-fp32", "onnx-int8"])
def test_onnx_metadata_props_read_back_with_onnx_load(run, fmt):
    import onnx

    model = onnx.load(str(artifact(run, fmt)))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["labels"]) == list(CLASSES)
    assert json.loads(props["input_normalization"]) == {"scale": pytest.approx(1 / 255), "offset": 0.0}
    assert props["task"] == "image_classification" and props["producer"].startswith("edgeqd ")
    assert json.loads(props["inputs"])[0]["name"] == model.graph.input[0].name


def test_tflite_support_reads_the_metadata_when_installed(run):
    # Google's own reader; tflite-support pins protobuf<4, so it is seldom installable beside TF 2.21.
    metadata = pytest.importorskip("tflite_support.metadata",
                                   reason="tflite-support not installed (it pins protobuf<4)")
    displayer = metadata.MetadataDisplayer.with_model_file(str(artifact(run, "tflite-int8")))
    assert json.loads(displayer.get_metadata_json())["name"] == "tiny_cnn"
    assert displayer.get_packed_associated_file_list() == ["labels.txt"]


def test_normalization_mean_std():
    assert normalization_mean_std({"scale": 2.0 / 255, "offset": -1.0}) == pytest.approx((127.5, 127.5))
    assert np.isfinite(normalization_mean_std({"scale": 1.0, "offset": 0.0})).all()


def test_writer_and_reader_agree():
    raw = build_tflite_model_metadata(
        {"model_name": "m", "task": "image_classification", "labels": ["a", "b"],
         "input_normalization": {"scale": 2 / 255, "offset": -1.0}},
        [{"name": "x", "shape": [1, 8, 8, 3], "dtype": "int8", "scale": [0.5], "zero_point": [3]}],
        [{"name": "y", "shape": [1, 2], "dtype": "float32", "scale": [], "zero_point": []}])
    read = read_tflite_model_metadata(raw)
    assert read["name"] == "m" and read["min_parser_version"] == "1.0.0"
    (image,), (scores,) = read["inputs"], read["outputs"]
    assert image["content"] == "image" and image["color_space"] == "RGB" and image["image_size"] == [8, 8]
    assert image["normalization"] == {"mean": [pytest.approx(127.5)], "std": [pytest.approx(127.5)]}
    assert image["stats"] == {"min": [-1.0], "max": [pytest.approx(1.0)]}  # raw 0..255 after normalization
    assert "int8 q = round(x / 0.5) + (3)" in image["description"]
    assert scores["associated_files"] == [{"name": "labels.txt", "description": "class names, one per line, "
                                           "in output order", "type": "TENSOR_AXIS_LABELS"}]


def test_embedding_again_replaces_the_entries(run, tmp_path):
    copy = tmp_path / "m.tflite"
    shutil.copy(artifact(run, "tflite-fp32"), copy)
    before = tflite_metadata_buffers(copy.read_bytes())
    embed_tflite_metadata(copy, {"model_name": "again", "labels": ["x"]})
    entries = tflite_metadata_buffers(copy.read_bytes())
    assert sorted(entries) == sorted(before) and {"TFLITE_METADATA", "edgeqd"} <= set(entries)
    with zipfile.ZipFile(io.BytesIO(copy.read_bytes())) as archive:  # the old labels zip is replaced, not kept
        assert archive.namelist() == ["labels.txt"] and archive.read("labels.txt") == b"x\n"
    assert read_tflite_model_metadata(entries["TFLITE_METADATA"])["name"] == "again"
    assert json.loads(entries["edgeqd"])["labels"] == ["x"]
