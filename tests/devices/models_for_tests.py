"""Tiny real models for the device tests: float and int8 TFLite, float and int8 ONNX.

Built once per test session with TensorFlow's own converter and tf2onnx (no mocks):
a 28×28×1 → 10-logit CNN, trained for a few steps on Fashion-MNIST so accuracy is
meaningful, kept small so emulated ARM runs stay fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)


def build_models(folder: Path, x_train: np.ndarray, y_train: np.ndarray) -> dict[str, Path]:
    """Train a tiny CNN briefly and write model_fp32/int8 .tflite and .onnx into ``folder``."""
    import tensorflow as tf
    import tf_keras as keras

    tf.random.set_seed(0)
    np.random.seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1), name="input"),
        keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, name="logits"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train[:3000], y_train[:3000], epochs=1, batch_size=64, verbose=0)

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    paths["fp32.tflite"] = folder / "model_fp32.tflite"
    paths["fp32.tflite"].write_bytes(converter.convert())

    def representative():
        for sample in x_train[:100]:
            yield [sample[None].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    paths["int8.tflite"] = folder / "model_int8.tflite"
    paths["int8.tflite"].write_bytes(converter.convert())

    import tf2onnx

    proto, _ = tf2onnx.convert.from_keras(
        model, input_signature=(tf.TensorSpec((None, 28, 28, 1), tf.float32, name="input"),), opset=17)
    paths["fp32.onnx"] = folder / "model_fp32.onnx"
    paths["fp32.onnx"].write_bytes(proto.SerializeToString())

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": s[None].astype(np.float32)} for s in x_train[:100]])

        def get_next(self):
            return next(self.items, None)

    paths["int8.onnx"] = folder / "model_int8.onnx"
    quantize_static(str(paths["fp32.onnx"]), str(paths["int8.onnx"]), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=True)
    return paths
