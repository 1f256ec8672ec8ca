"""inspect_artifact on every artifact convert produces, on a dynamic-range TFLite, and on broken files."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from report_fixtures import tiny_run
from report_fixtures import artifact_path as artifact

from edgeqd.cli import cli
from edgeqd.errors import ArtifactError
from edgeqd.artifact_info import inspect_artifact, tflite_schema


@pytest.fixture(scope="module")
def run():
    return tiny_run()


ALL_FORMATS = ["tflite-fp32", "tflite-int8", "tflite-fp16", "tflite-int16x8", "onnx-fp32", "onnx-int8",
               "tflite-w4a8", "tflite-w4", "tflite-w2", "onnx-w4a8", "tflite-mixed", "onnx-mixed"]
SCHEMES = {"tflite-fp32": "float32", "tflite-int8": "full-int8", "tflite-fp16": "float16 weights",
           "tflite-int16x8": "int16x8", "onnx-fp32": "float32", "onnx-int8": "int8 (QDQ)",
           # Below 8 bits (tests/converters/test_lowbit.py reads their bits back in detail):
           "tflite-w4a8": "full-integer (int4 weights)", "tflite-w4": "int4 weights, float activations",
           "tflite-w2": "int2/int4 weights, float activations",  # FC int2, CONV_2D int4
           "onnx-w4a8": "int8 (QDQ), int4 weights",
           # Mixed: the search (default budget 1 pt here) keeps int4 wherever the drop allows.
           "tflite-mixed": ("full-integer (int4 weights)", "full-int8"),
           "onnx-mixed": ("int8 (QDQ), int4 weights", "int8 (QDQ)")}


def test_every_registered_format_is_covered():
    from edgeqd.converters import CONVERTERS

    assert set(CONVERTERS) == set(ALL_FORMATS), "a new converter needs an inspect test case"


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_every_artifact_lists_operators_io_and_sizes(run, fmt):
    info = inspect_artifact(artifact(run, fmt))
    types = {row["type"] for row in info["operators"]}
    # The tiny model is conv → pool → two dense layers in either runtime's vocabulary.
    assert types & {"CONV_2D", "Conv"} and types & {"FULLY_CONNECTED", "Gemm", "MatMul"}
    assert info["operator_count"] >= 4
    assert info["inputs"][0]["shape"][1:] == [12, 12, 1]
    assert info["outputs"][0]["shape"][-1] == 10
    assert info["bytes"] == artifact(run, fmt).stat().st_size
    params = info["parameters"]
    assert 3200 < params["count"] < 4000  # 36 conv + 3232 dense + 330 logits, ± folded BN / shape constants
    assert params["weights_bytes"] + params["graph_bytes"] <= info["bytes"]
    assert info["metadata"]  # embedded by convert (TFLite Metadata / metadata_props)
    assert info["quantization"] in (SCHEMES[fmt] if isinstance(SCHEMES[fmt], tuple) else (SCHEMES[fmt],))
    if not info["quantization"].endswith("float activations"):  # there, pooling in float is the design
        assert info["float_fallback"] == []  # this model has no op that falls back to float compute


def test_onnx_int4_weight_ops_are_hybrid_and_int8_ones_integer(run):
    """ONNX Runtime's CPU provider has no int4 kernel: DQ(int4) → Conv → Q runs Conv in float on the
    dequantized weights (hybrid), where DQ(int8) → Conv → Q fuses into an int8 kernel (integer)."""
    def modes(fmt):
        info = inspect_artifact(artifact(run, fmt))
        return {row["type"]: row["modes"] for row in info["operators"] if row["type"] in ("Conv", "MatMul", "Gemm")}

    assert modes("onnx-int8") and all(m == ["integer"] for m in modes("onnx-int8").values())
    low = modes("onnx-w4a8")
    assert low and all("hybrid" in m for m in low.values()), low
    assert inspect_artifact(artifact(run, "onnx-w4a8"))["float_fallback"] == []  # hybrid, not a fallback


def test_full_int8_tflite_has_no_float_ops_and_matches_the_manifest(run):
    info = inspect_artifact(artifact(run, "tflite-int8"))
    assert info["quantization"] == "full-int8"
    assert info["float_ops"] == [] and info["float_fallback"] == []
    manifest_in = next(a for a in run["manifest"]["artifacts"] if a["format"] == "tflite-int8")["inputs"][0]
    assert info["inputs"][0]["dtype"] == "int8"
    assert info["inputs"][0]["scale"] == pytest.approx(manifest_in["scale"])  # same file, two readers
    assert info["inputs"][0]["zero_point"] == manifest_in["zero_point"]
    assert info["weight_scales"]["per_channel"] >= 2  # conv and dense kernels, per channel by default
    assert all(row["modes"] == ["integer"] for row in info["operators"])


def test_qdq_onnx_flags_the_float_reshape_before_the_first_quantize(run):
    info = inspect_artifact(artifact(run, "onnx-int8"))
    assert info["quantization"].startswith("int8 (QDQ)")
    compute = [row for row in info["operators"] if row["type"] in ("Conv", "Gemm")]
    assert compute and all(row["modes"] == ["integer"] for row in compute)
    # tf2onnx's NHWC→NCHW layout op runs on the float input before QuantizeLinear.
    assert all(op["layout_only"] for op in info["float_ops"])
    assert info["weight_scales"]["per_channel"] >= 2


def test_float_models_are_not_flagged(run):
    for fmt in ("tflite-fp32", "onnx-fp32"):
        info = inspect_artifact(artifact(run, fmt))
        assert info["quantization"] == "float32"
        assert info["float_ops"] == []


def test_dynamic_range_tflite_reports_float_activations(run):
    info = inspect_artifact(run["dynamic"])
    assert info["quantization"] == "dynamic-range"
    assert info["inputs"][0]["dtype"] == "float32"
    hybrid = [op for op in info["float_ops"] if op["mode"] == "hybrid"]
    assert hybrid and {op["type"] for op in hybrid} <= {"FULLY_CONNECTED", "CONV_2D"}
    assert info["float_activations"]  # the activations between layers stay float
    assert info["parameters"]["by_dtype"]["int8"]["elements"] >= 3200
    assert "dynamic-range" in info["notes"][0]


def test_tflite_io_agrees_with_the_flatbuffer_schema(run):
    # Independent read of the same file through the generated schema, nothing of edgeqd.
    schema = tflite_schema()
    data = artifact(run, "tflite-int8").read_bytes()
    graph = schema.Model.GetRootAs(data, 0).Subgraphs(0)
    tensor = graph.Tensors(graph.Inputs(0))
    info = inspect_artifact(artifact(run, "tflite-int8"))
    assert info["inputs"][0]["name"] == tensor.Name().decode()
    assert info["inputs"][0]["scale"][0] == pytest.approx(float(tensor.Quantization().Scale(0)))


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
@pytest.mark.parametrize("cut", ["half", "head", "minus1", "random", "empty", "flipped"])
def test_broken_files_give_a_typed_error(run, tmp_path, suffix, cut):
    source = artifact(run, "tflite-int8" if suffix == ".tflite" else "onnx-int8").read_bytes()
    rng = np.random.default_rng(1)
    if cut == "half":
        data = source[:len(source) // 2]
    elif cut == "head":
        data = source[:64]
    elif cut == "minus1":
        data = source[:-1]
    elif cut == "random":
        data = rng.bytes(4096)
    elif cut == "empty":
        data = b""
    else:
        flipped = bytearray(source)
        for i in rng.integers(8, min(len(source), 1500), 40):
            flipped[i] ^= 0xFF
        data = bytes(flipped)
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(data)
    with pytest.raises(ArtifactError) as error:
        inspect_artifact(path)
    assert error.value.exit_code == 3
    assert str(path) in str(error.value)


def test_missing_file_is_a_typed_error(tmp_path):
    with pytest.raises(ArtifactError, match="no such file"):
        inspect_artifact(tmp_path / "nope.tflite")


def test_int8_model_with_a_float_op_flags_the_fallback(tmp_path):
    # SIN has no int8 kernel: without TFLITE_BUILTINS_INT8 the converter leaves it in float between
    # DEQUANTIZE and QUANTIZE, the silent fallback users need to see.
    import tensorflow as tf
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), name="x")
    hidden = layers.Lambda(lambda t: tf.math.sin(t))(layers.Dense(16)(inputs))
    model = keras.Model(inputs, layers.Dense(4)(hidden))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    samples = np.random.default_rng(0).random((10, 1, 8)).astype(np.float32)
    converter.representative_dataset = lambda: ([s] for s in samples)
    path = tmp_path / "fallback.tflite"
    path.write_bytes(converter.convert())

    info = inspect_artifact(path)
    assert info["quantization"] == "int8 with float fallback"
    assert [op["type"] for op in info["float_ops"]] == ["SIN"]
    assert info["float_fallback"] == [f"SIN #{info['float_ops'][0]['index']}"]
    assert next(row for row in info["operators"] if row["type"] == "SIN")["float"] is True
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert "float in a quantized model" in result.output
