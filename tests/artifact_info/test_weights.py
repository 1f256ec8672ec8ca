"""weighted_ops: the layer key each stored weight is read back under."""

from __future__ import annotations

import numpy as np
import pytest

from edgeqd.artifact_info.weights import layer_of, weighted_ops


@pytest.mark.parametrize("name, layer", [
    ("model/fc1/MatMul", "model/fc1"),
    ("fc1", "fc1"),
    # The converter names a weight it folded after the op's fused output (1-channel first conv).
    ("sequential/conv2d/Relu;sequential/conv2d/BiasAdd;sequential/conv2d/Conv2D;sequential/conv2d/BiasAdd/R1",
     "sequential/conv2d"),
])
def test_layer_of(name, layer):
    assert layer_of(name) == layer


def test_first_conv_of_a_one_channel_model_is_named_after_its_layer():
    """A grayscale CNN's first CONV_2D weight carries the fused output name; its layer must not."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((8, 8, 1))
    # Rescaling makes the converter fold the scale into conv_a's filter and name it after the fused op.
    x = tf.keras.layers.Rescaling(1 / 255.0)(inputs)
    x = tf.keras.layers.Conv2D(2, 3, activation="relu", name="conv_a")(x)
    x = tf.keras.layers.Conv2D(2, 3, activation="relu", name="conv_b")(x)
    outputs = tf.keras.layers.Dense(3, name="head")(tf.keras.layers.Flatten()(x))
    model = tf.keras.Model(inputs, outputs, name="gray")
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()

    weights = weighted_ops(data)
    assert [w.op for w in weights] == ["CONV_2D", "CONV_2D", "FULLY_CONNECTED"]
    assert ";" in weights[0].name  # the case under test: a fused name
    assert [w.layer for w in weights] == ["gray/conv_a", "gray/conv_b", "gray/head"], [w.name for w in weights]
    assert np.prod(weights[0].shape) == 18  # 2 filters of 3x3x1
