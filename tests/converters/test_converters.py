"""Every registered converter is exercised by a test that runs it for real."""

from __future__ import annotations

import numpy as np
import pytest

from edgeqd.converters import CONVERTERS, ConversionContext
from edgeqd.errors import ConversionError
from edgeqd.runtimes import IO_READERS, PREDICTORS

# Converters whose behaviour needs more than a float Keras model (e.g. a QAT model) are
# tested in the module named here; the rest run below, one parametrized case each.
TESTED_ELSEWHERE: dict[str, str] = {}


def test_every_registered_converter_has_a_test():
    untested = set(CONVERTERS) - set(CONVERTER_CASES) - set(TESTED_ELSEWHERE)
    assert not untested, f"add a case to tests/converters/test_converters.py for {sorted(untested)}"


CONVERTER_CASES = sorted(CONVERTERS)


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
    outputs = PREDICTORS[converter.runtime](out, x)
    reference = model.predict(x, verbose=0)
    inputs, _ = IO_READERS[converter.runtime](out)
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
