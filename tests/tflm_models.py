"""A tiny full-int8 model with an op TensorFlow Lite Micro lacks (GELU), for the tflm tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow is imported (TFMOT needs Keras 2)


def gelu_int8(path: Path, shape: tuple = (12, 12, 1)) -> Path:
    """``shape`` → Flatten → Dense(8, GELU) → Dense(10), full int8 with int8 I/O: TFLM has no GELU kernel.

    Args:
        path: where to write the ``.tflite``.
        shape: the input shape without the batch.
    """
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(),
                              keras.layers.Dense(8, activation="gelu"), keras.layers.Dense(10)])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([np.full((1, *shape), v, np.float32)] for v in (0.0, 0.5, 1.0))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    return path
