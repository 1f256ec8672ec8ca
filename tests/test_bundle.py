"""The integration bundle: metadata read back by independent code, the C array compiled, INTEGRATION.md."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
from report_fixtures import CLASSES, tiny_run

from edgeqd._vendor import tflite_metadata_schema as meta_schema
from edgeqd.bundle import micro_op_resolver_calls, normalization_mean_std, write_bundle


@pytest.fixture(scope="module")
def run():
    return tiny_run()


def artifact(run, fmt):
    entry = next(a for a in run["manifest"]["artifacts"] if a["format"] == fmt)
    return run["dir"] / entry["file"]


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


@pytest.mark.parametrize("compiler,language", [("gcc", "c"), ("g++", "c++")])
def test_c_array_compiles_and_equals_the_tflite(run, tmp_path, compiler, language):
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not installed (scripts/system-deps.sh installs it)")
    for name in ("model_data.h", "model_data.cc"):
        shutil.copy(run["dir"] / name, tmp_path / name)
    (tmp_path / "dump.c").write_text(
        '#include <stdint.h>\n#include <stdio.h>\n#include "model_data.h"\n'
        "int main(void) {\n"
        "  if (g_model_data_len != EDGEQD_MODEL_DATA_LEN) return 2;\n"
        "  if (((uintptr_t)g_model_data) % 16 != 0) return 3;\n"
        "  fwrite(g_model_data, 1, g_model_data_len, stdout);\n"
        "  return 0;\n}\n")
    binary = tmp_path / "dump"
    subprocess.run([compiler, "-x", language, "-std=" + ("c11" if language == "c" else "c++17"), "-Wall", "-Werror",
                    str(tmp_path / "model_data.cc"), str(tmp_path / "dump.c"), "-o", str(binary)],
                   check=True, capture_output=True, timeout=120)
    dumped = subprocess.run([str(binary)], check=True, capture_output=True, timeout=30).stdout
    assert dumped == artifact(run, "tflite-int8").read_bytes()


def test_c_header_macros_carry_the_io_quantization(run):
    from ai_edge_litert.interpreter import Interpreter

    header = (run["dir"] / "model_data.h").read_text()
    detail = Interpreter(model_path=str(artifact(run, "tflite-int8"))).get_input_details()[0]
    scale, zero = detail["quantization"]
    assert f"#define EDGEQD_INPUT_ZERO_POINT ({zero})" in header
    assert f"#define EDGEQD_INPUT_SCALE {scale:.9g}f" in header
    assert "#define EDGEQD_INPUT_ELEMENTS 144" in header  # 12 × 12 × 1


def test_integration_md_is_filled_from_the_real_artifact(run):
    from ai_edge_litert.interpreter import Interpreter

    text = (run["dir"] / "INTEGRATION.md").read_text()
    interpreter = Interpreter(model_path=str(artifact(run, "tflite-int8")))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["name"] in text and out["name"] in text
    assert f"zero point {inp['quantization'][1]}" in text and f"zero point {out['quantization'][1]}" in text
    for section in ("Android (Kotlin, LiteRT)", "Linux / Raspberry Pi (C++, LiteRT)",
                    "Microcontrollers (TensorFlow Lite Micro)", "ONNX Runtime"):
        assert f"## {section}" in text
    # The micro op resolver registers exactly the builtin ops of this model.
    assert "resolver.AddConv2D();" in text and "resolver.AddFullyConnected();" in text
    assert "ByteArray(10)" in text  # Kotlin output buffer sized from the output tensor
    assert set(run["manifest"]["bundle"]) >= {"labels.txt", "model_data.h", "model_data.cc", "INTEGRATION.md"}


def test_bundle_without_int8_tflite_has_no_c_array(run, tmp_path):
    manifest = json.loads(json.dumps(run["manifest"]))
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["format"] in ("onnx-fp32", "onnx-int8")]
    for a in manifest["artifacts"]:
        shutil.copy(run["dir"] / a["file"], tmp_path / a["file"])
    written = write_bundle(tmp_path, manifest)
    assert written == ["labels.txt", "INTEGRATION.md"]
    text = (tmp_path / "INTEGRATION.md").read_text()
    assert "## ONNX Runtime" in text and "TensorFlow Lite Micro" not in text


def test_helpers():
    assert normalization_mean_std({"scale": 2.0 / 255, "offset": -1.0}) == pytest.approx((127.5, 127.5))
    assert micro_op_resolver_calls(["DEPTHWISE_CONV_2D", "RELU6", "CUSTOM:Foo"]) == [
        "AddDepthwiseConv2D()", "AddRelu6()"]
    assert np.isfinite(normalization_mean_std({"scale": 1.0, "offset": 0.0})).all()
