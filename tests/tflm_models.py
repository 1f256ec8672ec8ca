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


def with_offset_buffers(data: bytes) -> bytes:
    """``data`` with every buffer of 64 bytes or more moved after the flatbuffer (``Buffer.offset``), as
    ai-edge-quantizer writes large models; LiteRT gives the same outputs, TFLM ignores those buffers.

    Args:
        data: a ``.tflite`` with inline buffers.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    moved = [b for b in model.buffers if b.data is not None and len(b.data) >= 64]
    payloads = [bytes(bytearray(b.data)) for b in moved]
    for buffer, payload in zip(moved, payloads):
        buffer.data, buffer.offset, buffer.size = None, 1, len(payload)  # offset 1: a placeholder of the same width
    start = (len(flatbuffer_utils.convert_object_to_bytearray(model)) + 15) // 16 * 16
    extra = bytearray()
    for buffer, payload in zip(moved, payloads):
        buffer.offset = start + len(extra)
        extra += payload + b"\0" * (-len(payload) % 16)
    head = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return head + b"\0" * (start - len(head)) + bytes(extra)
