"""A SavedModel without Keras layers (Keras 3 ``model.export()``): usable through its serving signature only.

Such a folder holds a traced graph and no layer configuration, so nothing can be translated,
fine-tuned or distilled. Post-training quantization does not need layers: the TFLite converter reads
the signature (``TFLiteConverter.from_saved_model``) and tf2onnx too (``--saved-model``). For the
pipeline's other needs — shapes, reference outputs, the data loader — :func:`serving_model` wraps the
signature in a one-layer tf_keras model that calls it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from .common import ModelError

SERVING_SIGNATURE = "serving_default"  # what model.export() and tf.saved_model.save name the default


def serving_signature(path: str | Path) -> dict[str, Any]:
    """Inputs and outputs of a layer-less SavedModel's serving signature (what PTQ converts).

    Args:
        path: a SavedModel folder (Keras 3 ``model.export()`` writes ``serve`` and ``serving_default``).

    Returns:
        ``{"signature": name, "inputs": {name: (shape, dtype)}, "outputs": {name: (shape, dtype)}}``.

    Raises:
        ModelError: the SavedModel has no signature.
    """
    function, name = _signature_function(_load(path), path)
    _, inputs = function.structured_input_signature

    def describe(specs):
        return {key: (tuple(spec.shape.as_list()), spec.dtype.name) for key, spec in specs.items()}

    return {"signature": name, "inputs": describe(inputs), "outputs": describe(function.structured_outputs)}


def _load(path: str | Path):
    import tensorflow as tf

    try:
        return tf.saved_model.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: TensorFlow cannot load the SavedModel ({type(exc).__name__}: "
                         f"{(str(exc).strip().splitlines() or [''])[0][:300]})") from None


def _signature_function(loaded, path) -> tuple[Any, str]:
    signatures = getattr(loaded, "signatures", {})
    if not signatures:
        raise ModelError(f"{path}: the SavedModel has no serving signature; in Keras 3 write it with "
                         "model.export('DIR'), or pass the .keras file")
    name = SERVING_SIGNATURE if SERVING_SIGNATURE in signatures else sorted(signatures)[0]
    return signatures[name], name


@lru_cache(maxsize=None)
def _serving_layer_class():
    """The tf_keras layer class calling a signature (defined on first use: it needs tf_keras)."""
    import tf_keras

    class ServingSignatureCall(tf_keras.layers.Layer):
        """Calls one SavedModel signature with its single input and returns its single output."""

        def __init__(self, path: str, signature: str, input_key: str, output_key: str, **kwargs):
            super().__init__(trainable=False, **kwargs)
            self.path, self.signature = path, signature
            self.input_key, self.output_key = input_key, output_key
            self._loaded = _load(path)  # keeps the restored variables alive: the signature only references them
            self._function, _ = _signature_function(self._loaded, path)

        def call(self, inputs):
            return self._function(**{self.input_key: inputs})[self.output_key]

        def get_config(self):
            return {**super().get_config(), "path": self.path, "signature": self.signature,
                    "input_key": self.input_key, "output_key": self.output_key}

    return ServingSignatureCall


def serving_model(path: str | Path):
    """A tf_keras model whose only layer calls the SavedModel's serving signature (for shapes and outputs).

    Args:
        path: a layer-less SavedModel folder.

    Returns:
        A functional tf_keras model, named after the folder, with no trainable weights.

    Raises:
        ModelError: no signature, or one with several inputs or outputs.
    """
    import tf_keras

    path = Path(path)
    signature = serving_signature(path)
    if len(signature["inputs"]) != 1 or len(signature["outputs"]) != 1:
        raise ModelError(f"{path}: the serving signature has {len(signature['inputs'])} inputs and "
                         f"{len(signature['outputs'])} outputs; edgeqd handles single-input, single-output models")
    (input_key, (shape, dtype)), = signature["inputs"].items()
    (output_key, _), = signature["outputs"].items()
    inputs = tf_keras.Input(shape[1:], dtype=dtype, name=input_key)
    call = _serving_layer_class()(str(path), signature["signature"], input_key, output_key, name="serving_signature")
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in path.name) or "saved_model"
    return tf_keras.Model(inputs, call(inputs), name=name)
