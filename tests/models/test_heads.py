"""Output semantics: probabilities (softmax/sigmoid) vs logits vs regression, found and kept in every artifact.

Unit cases on tiny tf_keras models (Sequential, functional, nested, op layers), a Keras 3 file through
the bridge, and the real pipeline: a softmax model's PTQ and QAT int8 artifacts output probabilities
(rows sum to 1) and their metadata and INTEGRATION.md say so; a logits model's say to apply a softmax.
"""

from __future__ import annotations

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import json

import numpy as np
import pytest

from edgeqd.models.heads import output_semantics


def _dense(activation, units=4):
    import tf_keras as keras

    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(units, activation=activation)])


def test_the_last_layer_tells_probabilities_from_logits():
    import tensorflow as tf
    import tf_keras as keras

    L = keras.layers
    assert output_semantics(_dense("softmax")).to_dict()["kind"] == "probabilities"
    assert output_semantics(_dense("sigmoid")).activation == "sigmoid"
    assert output_semantics(_dense(None)).output == "logits"
    assert output_semantics(keras.Sequential([keras.Input((3,)), L.Dense(4), L.Softmax()])).activation == "softmax"
    inputs = keras.Input((3,))
    nested = keras.Model(inputs, _dense("softmax")(L.Dense(3)(inputs)))  # a model ending in a model
    assert output_semantics(nested).output == "probabilities"
    op_layer = keras.Model(inputs, tf.nn.softmax(L.Dense(4)(inputs)))  # a TF op layer
    assert output_semantics(op_layer).output == "probabilities"
    assert output_semantics(_dense(None), regression=True).output == "regression"
    assert output_semantics(_dense(None, units=1)).output == "regression"  # softmax over one value is always 1
    assert not output_semantics(_dense("softmax")).apply_softmax and output_semantics(_dense(None)).apply_softmax


def test_a_model_without_telling_layers_is_judged_by_its_outputs():
    import tf_keras as keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Reshape((4,))])
    probabilities = np.random.default_rng(0).dirichlet(np.ones(4), size=16)
    assert output_semantics(model, probabilities).output == "probabilities"
    assert output_semantics(model, probabilities * 2).output == "logits"


def test_a_keras3_softmax_model_is_probabilities_after_translation(tmp_path):
    import keras3_zoo

    from edgeqd.models import load_model

    keras3_zoo.seq_cnn().save(tmp_path / "seq_cnn.keras")
    semantics = output_semantics(load_model(tmp_path / "seq_cnn.keras"))
    assert semantics.output == "probabilities" and semantics.activation == "softmax"


def _softmax_cnn(fashion, softmax=True):
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1), name="image"), layers.Conv2D(8, 3, use_bias=False),
                              layers.BatchNormalization(), layers.ReLU(), layers.MaxPooling2D(4), layers.Flatten(),
                              layers.Dense(10, activation="softmax" if softmax else None, name="probs")])
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax))
    model.fit(fashion.x_train[:1000], fashion.y_train[:1000], epochs=2, batch_size=64, verbose=0)
    return model


def _check_probability_artifacts(result, out, x):
    from edgeqd.artifact_info import inspect_artifact
    from edgeqd.verify import predict

    assert not result.problems, result.problems
    assert result.manifest["output"]["kind"] == "probabilities"
    for row in result.artifacts:
        sums = predict(out / row.file, x).sum(axis=1)
        # int8 probabilities are multiples of 1/256 (scale 1/256, zero point -128): 10 classes round to ±10/512.
        np.testing.assert_allclose(sums, 1.0, atol=0.02 if row.dtype == "int8" else 1e-5)
        metadata = inspect_artifact(out / row.file)["metadata"]
        embedded = metadata["edgeqd"] if row.runtime == "tflite" else metadata
        assert embedded["output"] == "probabilities" and embedded["output_activation"] == "softmax"
    guide = (out / "INTEGRATION.md").read_text()
    assert "probabilities already" in guide and "softmax(y)` gives probabilities" not in guide
    assert "return labels[best] to y[best]" in guide  # Kotlin: no second softmax


def test_a_softmax_model_ships_probabilities_in_every_ptq_artifact(fashion, small_npz, tmp_path):
    from edgeqd.pipeline import convert
    from edgeqd.settings import CalibrationSettings, ConvertSettings, VerifySettings

    out = tmp_path / "out"
    result = convert(_softmax_cnn(fashion), small_npz, out, ConvertSettings(
        calibration=CalibrationSettings(samples=100), verify=VerifySettings(eval_samples=200)))
    _check_probability_artifacts(result, out, fashion.x_eval[:50])
    assert (out / "labels.txt").read_text().splitlines()[0] == "class_0"  # .npz without class_names


def test_a_logits_model_is_told_to_apply_a_softmax(converted):
    manifest = json.loads((converted.out / "manifest.json").read_text())
    assert manifest["output"] == {"kind": "logits", "activation": None,
                                  "source": "layer 'logits' (Dense, activation linear)"}
    guide = (converted.out / "INTEGRATION.md").read_text()
    assert "`softmax(y)` gives probabilities" in guide and "softmax of logits" in guide
    assert len((converted.out / "labels.txt").read_text().splitlines()) == 10


@pytest.mark.slow
def test_qat_of_a_softmax_model_ships_probabilities(fashion, small_npz, tmp_path):
    from edgeqd.pipeline import convert
    from edgeqd.settings import CalibrationSettings, ConvertSettings, QATSettings, VerifySettings

    out = tmp_path / "qat"
    # --no-fallback: the QAT int8 model ships whatever PTQ scores, so its own softmax is what is checked.
    settings = ConvertSettings(formats=("tflite-int8", "onnx-int8"), calibration=CalibrationSettings(samples=100),
                               verify=VerifySettings(eval_samples=200),
                               qat=QATSettings(epochs=1, train_samples=600, validation_samples=200, fallback=False))
    result = convert(_softmax_cnn(fashion), small_npz, out, settings)
    assert result.manifest["int8_choice"]["shipped"] == "qat"
    _check_probability_artifacts(result, out, fashion.x_eval[:50])
