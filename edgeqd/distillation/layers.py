"""The layers distillation reads and adds: the logits behind a final softmax, named layers
(also after TFMOT wrapped them), ``teacher_layer:student_layer`` pairs, and the learned
projection that maps a student feature onto the teacher's shape (FitNets, Romero et al. 2015).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import tensorflow as tf
import tf_keras as keras

from edgeqd.errors import DistillationError, UsageError
from edgeqd.types import LayerPair

_SOFTMAX_NAMES = ("softmax",)


def _is_softmax(activation) -> bool:
    name = getattr(activation, "__name__", "") or getattr(activation, "name", "")
    return str(name).lower() in _SOFTMAX_NAMES


def logits_model(model, role: str = "teacher"):
    """The model itself when it outputs logits; else a model sharing its layers that stops before the softmax.

    A final ``Dense(activation="softmax")`` is replaced by a copy without the
    activation (same weights); a final ``Softmax`` or ``Activation("softmax")``
    layer is skipped. Distillation needs logits: probabilities pushed through a
    second softmax lose the teacher's relative confidences.

    Args:
        model: a functional or Sequential ``tf_keras`` model.
        role: "teacher" or "student", for messages.

    Returns:
        (model, note): ``note`` says what was done, or is None when nothing was.

    >>> import tf_keras as keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax", name="probs")])
    >>> logits_model(m)[1]
    "teacher's final softmax (layer 'probs') skipped: its pre-activation logits are used"
    """
    last = model.layers[-1] if model.layers else None
    if last is None:
        return model, None
    is_layer_softmax = isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and _is_softmax(last.activation))
    is_dense_softmax = isinstance(last, keras.layers.Dense) and _is_softmax(last.activation)
    if not (is_layer_softmax or is_dense_softmax):
        return model, None
    try:
        pre = last.input
        if is_dense_softmax:
            config = last.get_config()
            config.update(activation="linear", name=f"{last.name}_logits")
            dense = keras.layers.Dense.from_config(config)
            outputs = dense(pre)
            dense.set_weights(last.get_weights())
        else:
            outputs = pre
        clone = keras.Model(model.inputs, outputs, name=model.name)
    except Exception as exc:  # subclassed models have no graph to cut
        raise DistillationError(
            f"the {role} ends in a softmax (layer {last.name!r}) and its logits could not be taken "
            f"({type(exc).__name__}); save the {role} without its final softmax") from None
    return clone, f"{role}'s final softmax (layer {last.name!r}) skipped: its pre-activation logits are used"


def find_layer(model, name: str, role: str = "student"):
    """A layer of ``model`` by name, also when TFMOT has wrapped it.

    ``tfmot.quantization.keras.quantize_model`` renames every layer ``quant_<name>``
    and keeps the original as ``wrapper.layer``; both spellings are accepted so that
    a feature pair written for the float student still works on its QAT twin.

    Args:
        model: a ``tf_keras`` model.
        name: the layer's name (original or wrapped).
        role: "teacher" or "student", for the message.

    Raises:
        DistillationError: no such layer; the message lists the valid names.

    >>> import tf_keras as keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    >>> find_layer(m, "d").name
    'd'
    """
    for layer in model.layers:
        if layer.name == name or layer.name == f"quant_{name}":
            return layer
    for layer in model.layers:
        inner = getattr(layer, "layer", None)
        if inner is not None and getattr(inner, "name", None) == name:
            return layer
    valid = [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    raise DistillationError(f"the {role} {model.name!r} has no layer {name!r}; its layers are: {', '.join(valid)}")


def layer_output(layer, role: str):
    """The symbolic output of ``layer``; a layer called more than once has none to tap.

    Args:
        layer: a layer of a functional model.
        role: "teacher" or "student", for the message.

    >>> import tf_keras as keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    >>> tuple(layer_output(m.layers[-1], "student").shape)
    (None, 2)
    """
    try:
        return layer.output
    except AttributeError:
        raise DistillationError(f"the {role} layer {layer.name!r} is used more than once in the model; "
                                "pick a layer with a single output") from None


def parse_layer_pairs(specs: Sequence[Union[str, LayerPair, tuple]], option: str = "--feature") -> tuple[LayerPair, ...]:
    """Turn ``"teacher_layer:student_layer"`` strings (or pairs) into :class:`LayerPair` s.

    Args:
        specs: the values given (strings, 2-tuples or LayerPairs).
        option: the option's name, for messages.

    >>> parse_layer_pairs(["re_lu_3:relu2_2"])
    (LayerPair(teacher_layer='re_lu_3', student_layer='relu2_2'),)
    """
    pairs = []
    for spec in specs:
        if isinstance(spec, LayerPair):
            pairs.append(spec)
            continue
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            pairs.append(LayerPair(str(spec[0]), str(spec[1])))
            continue
        parts = str(spec).split(":")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise UsageError(f"{option} {spec!r}: write it as teacher_layer:student_layer")
        pairs.append(LayerPair(parts[0].strip(), parts[1].strip()))
    return tuple(pairs)


def feature_shape(tensor) -> tuple:
    """The per-sample shape of a symbolic tensor (batch axis dropped).

    Args:
        tensor: a symbolic Keras tensor.

    >>> import tf_keras as keras
    >>> feature_shape(keras.Input((4, 4, 2)))
    (4, 4, 2)
    """
    return tuple(None if d is None else int(d) for d in tensor.shape[1:])


class ResizeConvProjection(keras.layers.Layer):
    """Maps a student conv feature (H', W', C') to the teacher's (H, W, C): bilinear resize, then a 1×1 conv.

    Args:
        target_shape: the teacher feature's (H, W, C).
        name: layer name.
    """

    def __init__(self, target_shape: Sequence[int], name: Optional[str] = None):
        super().__init__(name=name)
        self.target_shape = tuple(int(d) for d in target_shape)
        self.conv = keras.layers.Conv2D(self.target_shape[2], 1, name=f"{name}_conv1x1" if name else None)

    def call(self, x):
        if tuple(x.shape[1:3]) != self.target_shape[:2]:
            x = tf.image.resize(x, self.target_shape[:2], method="bilinear")
        return self.conv(x)


def make_projection(pair: LayerPair, teacher_shape: tuple, student_shape: tuple):
    """The learned map from the student's feature shape to the teacher's, or None when they agree.

    A 1×1 convolution after a bilinear resize for conv maps; a dense layer on the last
    axis for vectors and sequences of the same length.

    Args:
        pair: the layer pair, for messages and the projection's name.
        teacher_shape: the teacher feature's per-sample shape.
        student_shape: the student feature's per-sample shape.

    Raises:
        DistillationError: the shapes cannot be mapped (different ranks or lengths).

    >>> make_projection(LayerPair("t", "s"), (8,), (4,)).units
    8
    """
    if teacher_shape == student_shape:
        return None
    if len(teacher_shape) != len(student_shape):
        raise DistillationError(
            f"--feature {pair}: teacher output {teacher_shape} and student output {student_shape} have "
            "different ranks; pair layers of the same kind (conv with conv, dense with dense)")
    name = f"project_{pair.student_layer}"
    if len(teacher_shape) == 3:
        return ResizeConvProjection(teacher_shape, name=name)
    if teacher_shape[:-1] != student_shape[:-1]:
        raise DistillationError(
            f"--feature {pair}: teacher output {teacher_shape} and student output {student_shape} differ "
            "in more than the last (channel) dimension; pick layers with the same length")
    # Dense acts on the last axis: a dense map for flat features, a 1×1 convolution for sequences.
    return keras.layers.Dense(teacher_shape[-1], name=name)
