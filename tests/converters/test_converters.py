"""Every registered converter is exercised by a test that runs it for real."""

from __future__ import annotations

import numpy as np
import pytest

from edgeqd.converters import CONVERTERS, ConversionContext
from edgeqd.errors import ConversionError
from edgeqd.verify import artifact_io, predict

# Converters whose behaviour needs more than a float Keras model (e.g. a QAT model) are
# tested in the module named here; the rest run below, one parametrized case each.
TESTED_ELSEWHERE: dict[str, str] = {**{name: "tests/converters/test_lowbit.py"
                                        for name in ("tflite-w4a8", "tflite-w4", "tflite-w2", "onnx-w4a8")},
                                     "tflite-mixed": "tests/quantization/test_mixed_precision.py",
                                     "onnx-mixed": "tests/quantization/test_mixed_precision.py"}


def test_every_registered_converter_has_a_test():
    untested = set(CONVERTERS) - set(CONVERTER_CASES) - set(TESTED_ELSEWHERE)
    assert not untested, f"add a case to tests/converters/test_converters.py for {sorted(untested)}"


CONVERTER_CASES = sorted(set(CONVERTERS) - set(TESTED_ELSEWHERE))


@pytest.mark.parametrize("name", CONVERTER_CASES)
def test_converter_writes_an_artifact_its_runtime_runs(name, tmp_path, fashion):
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    converter = CONVERTERS[name]
    context = ConversionContext(model=model, calibration=fashion.x_train[:32], workdir=tmp_path)
    out = tmp_path / converter.filename
    converter.fn(context, out)
    x = fashion.x_eval[:16]
    outputs = predict(out, x)
    reference = model.predict(x, verbose=0)
    inputs, _ = artifact_io(out)
    # Float32 artifacts match Keras to float rounding; float16 weights to ~1e-3 relative;
    # integer ones within a few quantization steps (|logits| here are < 2, so 0.1 is several
    # int8 steps).
    tolerance = {"float32": 1e-4, "float16": 1e-2}.get(converter.precision, 0.1)
    assert np.abs(outputs - reference).max() < tolerance
    assert (inputs[0].dtype == "int8") == (name == "tflite-int8")


def test_onnx_int8_rejects_an_unknown_calibration_method(tmp_path, fashion):
    import tf_keras as keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    context = ConversionContext(model=model, calibration=np.zeros((4, 4), np.float32), workdir=tmp_path,
                                calibration_method="magic")
    with pytest.raises(ConversionError, match="unknown calibration method 'magic'"):
        CONVERTERS["onnx-int8"].fn(context, tmp_path / "m.onnx")


def _sequence_model(layer):
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((12, 4)), layer, keras.layers.Dense(5)])


def test_lstm_converts_to_tflite_fused_and_stateless_per_sample(tmp_path):
    import tf_keras as keras

    from edgeqd.devices import runner

    model = _sequence_model(keras.layers.LSTM(8))
    x = np.random.default_rng(0).random((40, 12, 4), dtype=np.float32)
    reference = model.predict(x, verbose=0)
    context = ConversionContext(model=model, calibration=x[:20], workdir=tmp_path)
    for name in ("tflite-fp32", "tflite-int8"):
        out = tmp_path / CONVERTERS[name].filename
        CONVERTERS[name].fn(context, out)
        # The fused kernel keeps LSTM state in variable tensors between invocations; each sample
        # must still come out as Keras computes it, in edgeqd's evaluator and in the device runner.
        outputs = predict(out, x)
        on_device = runner.predict(runner.open_model(str(out)), x)
        if name == "tflite-fp32":
            np.testing.assert_allclose(outputs, reference, atol=1e-5)
            np.testing.assert_allclose(on_device, reference, atol=1e-5)
        else:
            assert np.abs(outputs - reference).max() < 0.1 * np.abs(reference).max()
            np.testing.assert_array_equal(on_device.argmax(1), outputs.argmax(1))
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tmp_path / "model_int8.tflite"))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops and interpreter.get_input_details()[0]["dtype"] == np.int8
