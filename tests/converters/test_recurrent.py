"""GRU and SimpleRNN: a float TFLite traced at batch 1, and an int8 TFLite from an unrolled copy.

Real converter and interpreter: TFLite's calibrator segfaults on the WHILE loop a GRU or SimpleRNN
becomes, so the int8 conversion calibrates a copy unrolled over the (static) sequence; the float
artifacts keep the loop. Tiny random models: the point is what the converter builds, not accuracy.
"""

from __future__ import annotations

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import numpy as np
import pytest

from edgeqd.converters import CONVERTERS, ConversionContext
from edgeqd.converters.export import unrolled_copy
from edgeqd.verify import predict


def _model(kind: str, steps=12):
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    layer = getattr(keras.layers, kind)
    return keras.Sequential([keras.Input((steps, 4)), layer(8, return_sequences=True), layer(6),
                             keras.layers.Dense(5, activation="softmax")])


def _ops(path) -> set[str]:
    from ai_edge_litert.interpreter import Interpreter

    return {op["op_name"] for op in Interpreter(model_path=str(path))._get_ops_details()}


@pytest.mark.parametrize("kind", ["GRU", "SimpleRNN"])
def test_gru_and_simple_rnn_convert_to_float_and_int8_tflite(tmp_path, kind):
    model = _model(kind)
    x = np.random.default_rng(0).random((60, 12, 4), dtype=np.float32)
    reference = model.predict(x, verbose=0)
    context = ConversionContext(model=model, calibration=x[:30], workdir=tmp_path)
    fp32, int8 = tmp_path / "model_fp32.tflite", tmp_path / "model_int8.tflite"
    CONVERTERS["tflite-fp32"].fn(context, fp32)
    # The float loop at batch 1 computes Keras' function: float32 rounding over 12 steps (~1e-7 seen).
    assert np.abs(predict(fp32, x) - reference).max() <= 1e-5
    assert "WHILE" in _ops(fp32)  # the float artifact keeps the compact loop
    details = CONVERTERS["tflite-int8"].fn(context, int8)
    assert "unrolled" in details["note"]
    assert "WHILE" not in _ops(int8)
    outputs = predict(int8, x)
    # int8 softmax outputs are multiples of 1/256; random weights keep the classes well apart.
    assert np.abs(outputs - reference).mean() < 0.02
    assert (outputs.argmax(1) == reference.argmax(1)).mean() >= 0.9


def test_unrolled_copy_is_the_same_function_and_only_where_it_helps():
    import tf_keras as keras

    bidirectional = keras.Sequential([keras.Input((6, 3)), keras.layers.Bidirectional(keras.layers.GRU(4)),
                                      keras.layers.Dense(2)])
    copy = unrolled_copy(bidirectional)
    x = np.random.default_rng(1).random((8, 6, 3), dtype=np.float32)
    # Unrolling changes the order of nothing: the same float ops per step.
    np.testing.assert_allclose(copy.predict(x, verbose=0), bidirectional.predict(x, verbose=0), atol=1e-6)
    assert copy.layers[0].forward_layer.unroll and not bidirectional.layers[0].forward_layer.unroll
    lstm = keras.Sequential([keras.Input((6, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    assert unrolled_copy(lstm) is None  # LSTM has TFLite's fused int8 kernel: nothing to unroll
    variable = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(4), keras.layers.Dense(2)])
    assert unrolled_copy(variable) is None  # no static length to unroll over
    assert unrolled_copy(_model("GRU", steps=1000)) is None  # too long: the loop stays
