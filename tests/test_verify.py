"""edgeqd.verify: artifacts run through the device runner's adapter, batched, in their real runtimes."""

from __future__ import annotations

import numpy as np
import pytest

from edgeqd.errors import ConversionError
from edgeqd.types import ArtifactResult, Evaluation, Status
from edgeqd.verify import (BATCH, FLOAT_MAX_RELATIVE_MEAN_ABS_DIFF, WARN_DROP_PTS, WARN_MIN_AGREEMENT, artifact_io,
                           check_float_artifact, int8_warnings, predict, verify_artifact)


def _direct_tflite(path, x):
    """LiteRT on its own, one sample per invoke, quantized by hand with the file's scale/zero point."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for sample in x:
        value = sample[None]
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            value = np.clip(np.round(value / scale + zero), -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], value)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0]
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        rows.append(y)
    return np.array(rows, np.float32)


def _direct_onnx(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def x_val(small_npz):
    # 300 samples: one full batch of 256 and a last, shorter one.
    return np.load(small_npz, allow_pickle=False)["x_val"][:300]


@pytest.mark.parametrize("name", ["model_fp32.tflite", "model_int8.tflite", "model_fp32.onnx", "model_int8.onnx"])
def test_batched_predictions_equal_the_runtime_run_directly(converted, x_val, name):
    path = converted.out / name
    outputs = predict(path, x_val)
    expected = _direct_tflite(path, x_val) if name.endswith(".tflite") else _direct_onnx(path, x_val)
    assert outputs.shape == (300, 10) and outputs.dtype == np.float32 and len(x_val) > BATCH
    # int8 artifacts compute the same integers whatever the batch: equal to the bit. Float kernels
    # may sum in another order for another batch size: float32 rounding only.
    if "int8" in name:
        np.testing.assert_array_equal(outputs, expected)
    else:
        np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-5)


def test_artifact_io_reads_the_files_own_quantization(converted):
    from ai_edge_litert.interpreter import Interpreter

    inputs, outputs = artifact_io(converted.out / "model_int8.tflite")
    detail = Interpreter(model_path=str(converted.out / "model_int8.tflite")).get_input_details()[0]
    assert inputs[0].dtype == "int8" and inputs[0].shape == (-1, 28, 28, 1)
    assert inputs[0].scale == (pytest.approx(detail["quantization"][0]),)
    assert inputs[0].zero_point == (detail["quantization"][1],) and outputs[0].dtype == "int8"
    inputs, outputs = artifact_io(converted.out / "model_int8.onnx")
    # ONNX Runtime's QDQ model keeps float I/O: nothing to quantize at its edges.
    assert inputs[0].dtype == "float32" and inputs[0].scale == () and outputs[0].shape == (-1, 10)


def test_int8_io_onnx_from_tflite_is_quantized_with_its_qdq_scales(converted, x_val, tmp_path):
    """tf2onnx's TFLite front end keeps int8 I/O: the scale lives only in the Q/DQ nodes."""
    import tf2onnx

    tflite = converted.out / "model_int8.tflite"
    proto, _ = tf2onnx.convert.from_tflite(str(tflite), opset=17)
    path = tmp_path / "int8_io.onnx"
    path.write_bytes(proto.SerializeToString())
    onnx_in, onnx_out = artifact_io(path)
    tflite_in, tflite_out = artifact_io(tflite)
    assert onnx_in[0].dtype == "int8" and onnx_out[0].dtype == "int8"
    assert onnx_in[0].scale == pytest.approx(tflite_in[0].scale) and onnx_in[0].zero_point == tflite_in[0].zero_point
    assert onnx_out[0].scale == pytest.approx(tflite_out[0].scale)
    assert onnx_out[0].zero_point == tflite_out[0].zero_point
    # Same integers in, same kernels' arithmetic: outputs within one output quantization step.
    step = tflite_out[0].scale[0]
    assert np.abs(predict(path, x_val) - predict(tflite, x_val)).max() <= step * 1.001


def test_verify_artifact_evaluates_against_the_reference(converted, x_val):
    path = converted.out / "model_fp32.tflite"
    reference = predict(path, x_val)
    labels = reference.argmax(1)
    evaluation, inputs, outputs, predictions = verify_artifact(path, x_val, reference, labels)
    assert evaluation.samples == 300 and evaluation.accuracy == 1.0 and evaluation.agreement == 1.0
    assert evaluation.mean_abs_diff == 0.0 and inputs[0].dtype == "float32"
    np.testing.assert_array_equal(predictions, reference)
    with pytest.raises(ConversionError, match="outputs shape"):
        verify_artifact(path, x_val, reference[:, :5], labels)


def test_stateful_lstm_is_reset_for_every_sample(tmp_path):
    import tf_keras as keras

    from edgeqd.converters import CONVERTERS, ConversionContext

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 4)), keras.layers.LSTM(8), keras.layers.Dense(5)])
    x = np.random.default_rng(0).random((40, 12, 4), dtype=np.float32)
    context = ConversionContext(model=model, calibration=x[:20], workdir=tmp_path)
    CONVERTERS["tflite-fp32"].fn(context, tmp_path / "lstm.tflite")
    outputs = predict(tmp_path / "lstm.tflite", x)
    # Carried-over state would make a sample's outputs depend on the samples before it.
    np.testing.assert_allclose(outputs, model.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_allclose(predict(tmp_path / "lstm.tflite", x[::-1]), outputs[::-1], atol=1e-6)


def test_unloadable_file_and_unfitting_data_are_conversion_errors(converted, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises(ConversionError, match="broken.tflite.*cannot load"):
        predict(broken, np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(ConversionError, match="100 values.*784"):
        predict(converted.out / "model_int8.onnx", np.zeros((2, 10, 10, 1), np.float32))


# ---------------------------------------------------------------- the tolerance of float artifacts

def test_a_float_artifact_may_differ_by_rounding_but_not_by_function():
    reference = np.random.default_rng(0).standard_normal((200, 10)).astype("float32")
    typical = float(np.abs(reference).mean())
    # float16 weights: every top-1 the same, outputs off by ~0.05 %
    check_float_artifact("fp16.tflite", Evaluation(200, None, 1.0, 5e-4 * typical), reference)
    # one tie broken the other way on 20 samples (95 %) is rounding, not a wrong model
    check_float_artifact("fp32.tflite", Evaluation(20, None, 0.95, 1e-6), reference)
    with pytest.raises(ConversionError, match=r"agrees with the float model on only 98.00% of 200 samples"):
        check_float_artifact("fp32.tflite", Evaluation(200, None, 0.98, 1e-6), reference)
    bound = FLOAT_MAX_RELATIVE_MEAN_ABS_DIFF * (1 + typical)
    with pytest.raises(ConversionError, match=r"outputs differ from the float model's by"):
        check_float_artifact("fp32.tflite", Evaluation(200, None, 1.0, 1.5 * bound), reference)


def test_int8_warnings_name_the_artifact_past_either_threshold():
    def row(name, drop, agreement):
        return ArtifactResult(name, f"{name}.bin", "tflite", Status.OK, evaluation=Evaluation(500, 0.8, agreement, 0.1),
                              accuracy_drop_pts=drop)

    rows = [row("fine", WARN_DROP_PTS, WARN_MIN_AGREEMENT), row("dropped", WARN_DROP_PTS + 0.5, 0.99),
            row("disagrees", 0.0, WARN_MIN_AGREEMENT - 0.01), row("float", 9.0, 0.5)]
    warnings = int8_warnings(rows, 0.85, {"fine", "dropped", "disagrees"})
    assert warnings == ["dropped.bin: drop 2.50 pts > 2.0 on 500 samples",
                        "disagrees.bin: agreement with the float model 94.00% < 95% on 500 samples"]
    # Without labels there is no drop, but agreement still warns.
    assert int8_warnings(rows[2:3], None, {"disagrees"}) == [warnings[1]]
