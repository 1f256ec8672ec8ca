"""TFLite artifacts: float32, float16, full-integer int8 (int8 I/O) and 16x8.

The int8 model is calibrated on the context's representative samples (PTQ) or
keeps the ranges learnt in quantization-aware training (QAT); weights are
quantized per channel, which is TFLite's default for convolutions and dense layers.
"""

from __future__ import annotations

from pathlib import Path

from edgeqd.converters.registry import ConversionContext, register_converter
from edgeqd.errors import ConversionError


def has_lstm(model) -> bool:
    """Whether ``model`` holds a Keras LSTM (also inside Bidirectional or a QAT wrapper).

    Args:
        model: a ``tf_keras`` model.
    """
    import tf_keras

    return any(isinstance(layer, tf_keras.layers.LSTM) for layer in model.submodules)


def _converter(context: ConversionContext, model=None):
    import tensorflow as tf

    model = context.model if model is None else model
    if not has_lstm(model):
        return tf.lite.TFLiteConverter.from_keras_model(model)
    # A Keras LSTM traced with a dynamic batch keeps TensorList ops that no TFLite builtin
    # (let alone an int8 one) implements; traced at batch 1 the converter fuses it into
    # UNIDIRECTIONAL_SEQUENCE_LSTM (TFLite's documented LSTM path; devices run one sample
    # at a time anyway). Not GRU/SimpleRNN: they are not fused, and TFLite's calibrator
    # crashes the process on their batch-1 while loops, where the dynamic trace fails cleanly.
    spec = tf.TensorSpec([1, *model.inputs[0].shape[1:]], model.inputs[0].dtype)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)


def _error_line(exc: Exception) -> str:
    """The converter's own diagnosis: MLIR errors start with pages of source locations.

    Args:
        exc: what ``convert()`` raised.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line.split("error: ", 1)[1] for line in lines if "error: " in line]
    return (errors or lines or [type(exc).__name__])[0]


def _convert(converter, what: str) -> bytes:
    try:
        return converter.convert()
    except Exception as exc:
        reason = _error_line(exc)[:400]
        if "TensorList" in reason:
            reason += (" — a recurrent layer TFLite has no builtin for (GRU, SimpleRNN): use LSTM, set "
                       "unroll=True on the layer, or deploy the ONNX artifact")
        raise ConversionError(f"TFLite {what} conversion failed: {reason}") from None


@register_converter("tflite-fp32", filename="model_fp32.tflite", runtime="tflite", quantized=False,
                    description="TFLite float32")
def convert_tflite_fp32(context: ConversionContext, out_path: Path) -> dict:
    """Write the float32 TFLite model.

    Args:
        context: the model and settings.
        out_path: where to write the ``.tflite``.
    """
    out_path.write_bytes(_convert(_converter(context), "float32"))
    return {}


def representative_dataset(samples):
    """A TFLite ``representative_dataset`` callable yielding one sample at a time.

    Args:
        samples: float32 array (N, ...).

    >>> import numpy as np
    >>> len(list(representative_dataset(np.zeros((3, 2), "float32"))()))
    3
    """
    import numpy as np

    def generate():
        for sample in samples:
            yield [np.asarray(sample, dtype=np.float32)[None, ...]]

    return generate


@register_converter("tflite-int8", filename="model_int8.tflite", runtime="tflite", quantized=True,
                    description="TFLite full-integer int8 (int8 I/O)")
def convert_tflite_int8(context: ConversionContext, out_path: Path) -> dict:
    """Write the full-integer int8 TFLite model with int8 input and output.

    Args:
        context: the model, calibration samples and settings.
        out_path: where to write the ``.tflite``.
    """
    import tensorflow as tf

    # A QAT model's fake-quant ranges ship as they are; the representative samples then only
    # calibrate what TFMOT left float, so that the artifact is full-integer either way.
    converter = _converter(context, context.qat_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset(context.calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    if not context.per_channel:
        # The MLIR quantizer's switch for one scale per weight tensor.
        converter._experimental_disable_per_channel = True
    out_path.write_bytes(_convert(converter, "int8"))
    return {"per_channel": context.per_channel,
            "calibration_method": "tflite-minmax" if context.qat_model is None else "qat"}


@register_converter("tflite-fp16", filename="model_fp16.tflite", runtime="tflite", quantized=False,
                    dtype="float16", description="TFLite float16 weights (GPU delegates; half the size)")
def convert_tflite_fp16(context: ConversionContext, out_path: Path) -> dict:
    """Write a TFLite model with float16 weights (dequantized to float32 on CPU).

    Args:
        context: the model and settings.
        out_path: where to write the ``.tflite``.
    """
    import tensorflow as tf

    converter = _converter(context)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    out_path.write_bytes(_convert(converter, "float16"))
    return {}


@register_converter("tflite-int16x8", filename="model_int16x8.tflite", runtime="tflite", quantized=True,
                    dtype="int16x8", description="TFLite int16 activations, int8 weights (float I/O)")
def convert_tflite_int16x8(context: ConversionContext, out_path: Path) -> dict:
    """Write a 16x8 TFLite model: int16 activations keep accuracy where int8 ones lose it.

    Args:
        context: the model, calibration samples and settings.
        out_path: where to write the ``.tflite``.
    """
    import tensorflow as tf

    converter = _converter(context)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset(context.calibration)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    out_path.write_bytes(_convert(converter, "16x8"))
    return {"per_channel": True, "calibration_method": "tflite-minmax"}
