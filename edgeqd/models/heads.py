"""What a model's output means: class probabilities, logits, or regression values.

Every artifact edgeqd ships computes what the user's model computes — a model ending in a
softmax gives probabilities in every artifact, PTQ and QAT — and the metadata, the manifest and
``INTEGRATION.md`` say which, so that an app applies a softmax only to logits.
:func:`output_semantics` reads the model's last layer (a ``Softmax``/``Activation`` layer, or a
layer's own ``activation``, nested models followed to their last layer); a model without layers
(a Keras 3 ``model.export()`` SavedModel) is judged from its outputs on real samples.

>>> import tf_keras as keras
>>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="softmax", name="probs")])
>>> output_semantics(m).output, output_semantics(m).activation
('probabilities', 'softmax')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

PROBABILITIES = "probabilities"
LOGITS = "logits"
REGRESSION = "regression"
# Activations whose outputs are probabilities: softmax over the classes, sigmoid per output.
_PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")
# Outputs judged as softmax probabilities from numbers alone (layer-less models): every row
# non-negative and summing to 1 within float32 rounding of a softmax over up to ~1000 classes.
_SUM_TOLERANCE = 1e-4


@dataclass(frozen=True)
class OutputSemantics:
    """What the model's output holds.

    Attributes:
        output: "probabilities", "logits" or "regression".
        activation: "softmax" or "sigmoid" for probabilities, else None.
        source: how it was found ("layer 'probs' (Dense, activation softmax)", "outputs sum to 1", …).
    """

    output: str
    activation: Optional[str] = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``output`` record."""
        return {"kind": self.output, "activation": self.activation, "source": self.source}

    @property
    def apply_softmax(self) -> bool:
        """Whether an app turns the output into probabilities with a softmax (logits only)."""
        return self.output == LOGITS


def _activation_name(activation) -> str:
    name = getattr(activation, "__name__", "") or getattr(activation, "name", "") or ""
    return str(name).lower()


def _last_layer(model):
    """The layer that produces the model's (single) output, nested models followed down; None without a graph."""
    import tf_keras as keras

    layer = model
    for _ in range(32):  # nesting depth: deeper is not a model anyone builds
        outputs = getattr(layer, "outputs", None)
        history = getattr(outputs[0], "_keras_history", None) if outputs else None
        if history is None:
            return None if layer is model else layer
        layer = history.layer
        if not isinstance(layer, keras.Model):
            return layer
    return layer


def _from_layer(model) -> Optional[OutputSemantics]:
    """Probabilities when the last layer is (or ends in) a softmax or sigmoid; None when it says nothing."""
    import tf_keras as keras

    layer = _last_layer(model)
    if layer is None:
        return None
    kind = type(layer).__name__
    symbol = str(getattr(layer, "symbol", "")).lower()  # a TF op layer: tf.nn.softmax, tf.math.sigmoid
    if isinstance(layer, keras.layers.Softmax) or symbol.endswith("softmax"):
        return OutputSemantics(PROBABILITIES, "softmax", f"layer {layer.name!r} ({kind})")
    activation = _activation_name(getattr(layer, "activation", None)) or ("sigmoid" if symbol.endswith("sigmoid")
                                                                           else "")
    if activation in _PROBABILITY_ACTIVATIONS:
        return OutputSemantics(PROBABILITIES, activation, f"layer {layer.name!r} ({kind}, activation {activation})")
    if hasattr(layer, "activation") or hasattr(layer, "kernel"):
        return OutputSemantics(LOGITS, None, f"layer {layer.name!r} ({kind}, activation "
                                             f"{activation or 'linear'})")
    return None


def _from_outputs(outputs: np.ndarray) -> OutputSemantics:
    """Softmax probabilities when every row is non-negative and sums to 1; logits otherwise."""
    outputs = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    if outputs.shape[1] > 1 and len(outputs) and (outputs >= 0).all() and \
            np.allclose(outputs.sum(axis=1), 1.0, atol=_SUM_TOLERANCE):
        return OutputSemantics(PROBABILITIES, "softmax", f"outputs sum to 1 on {len(outputs)} samples")
    return OutputSemantics(LOGITS, None, f"outputs do not sum to 1 on {len(outputs)} samples")


def output_semantics(model, outputs: Optional[np.ndarray] = None, regression: bool = False) -> OutputSemantics:
    """Whether ``model`` outputs probabilities (softmax/sigmoid), logits, or regression values.

    Args:
        model: a single-output ``tf_keras`` model (a Keras 3 model's translation, or the wrapper of
            a layer-less SavedModel).
        outputs: the model's outputs on real samples, for a model whose layers say nothing.
        regression: the targets are real values (a regression task, :attr:`Dataset.task`).

    Returns:
        The semantics; a linear output on regression targets, or a single linear output (a softmax
        over one value is always 1), is "regression".

    >>> import tf_keras as keras
    >>> output_semantics(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])).output
    'regression'
    """
    found = _from_layer(model)
    if found is None:
        found = _from_outputs(outputs) if outputs is not None else OutputSemantics(LOGITS, None, "no activation")
    width = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else None
    if found.output == LOGITS and (regression or width == 1):
        why = "regression targets" if regression else "a single linear output"
        return OutputSemantics(REGRESSION, None, f"{found.source}; {why}")
    return found
