"""Keras 3 activations that tf_keras lacks or computes differently."""

from __future__ import annotations

from typing import Any, Callable

from .common import ModelError


def _k3_activation_functions() -> dict[str, Callable]:
    """tf_keras-side implementations of Keras 3 activations (Keras 3 semantics, checked in tests)."""
    import tensorflow as tf

    def hard_sigmoid(x):  # Keras 3: relu6(x + 3) / 6; tf_keras' own hard_sigmoid is clip(0.2x + 0.5)
        return tf.nn.relu6(x + 3.0) * (1.0 / 6.0)

    def hard_silu(x):
        return x * hard_sigmoid(x)

    def hard_swish(x):  # Keras 3's alias of hard_silu; its own function so that each name registers once
        return x * hard_sigmoid(x)

    def hard_tanh(x):
        return tf.clip_by_value(x, -1.0, 1.0)

    def log_sigmoid(x):
        return tf.math.log_sigmoid(x)

    def celu(x, alpha=1.0):
        return tf.maximum(x, 0.0) + alpha * tf.math.expm1(tf.minimum(x, 0.0) / alpha)

    return {"hard_sigmoid": hard_sigmoid, "hard_silu": hard_silu, "hard_swish": hard_swish,
            "hard_tanh": hard_tanh, "log_sigmoid": log_sigmoid, "celu": celu}


_ACT_PACKAGE = "edgeqd_k3"
_registered_activations: dict[str, str] = {}


def register_activations() -> dict[str, str]:
    """Register the Keras 3 activations with tf_keras (once per process) as ``edgeqd_k3>k3_<name>``.

    A translated model that uses one is saved by tf_keras with that registered name, so every process
    that loads such a file must call this first (:func:`edgeqd.models.load_model` does).

    Returns:
        Keras 3 activation name → the registered tf_keras name.
    """
    if _registered_activations:
        return dict(_registered_activations)
    import tf_keras

    for name, function in _k3_activation_functions().items():
        function.__name__ = f"k3_{name}"
        registered = tf_keras.saving.register_keras_serializable(package=_ACT_PACKAGE, name=f"k3_{name}")(function)
        _registered_activations[name] = tf_keras.saving.get_registered_name(registered)
    return dict(_registered_activations)


def tf_keras_activation(name: str) -> str:
    """The tf_keras activation identifier with Keras 3 semantics for the Keras 3 ``name``.

    Args:
        name: a Keras 3 activation name (``"relu"``, ``"hard_silu"``, ...).
    """
    # same name and same maths in both for everything else (checked: relu, gelu, silu, softmax, ...)
    return register_activations().get(name, name)


def k3_activation_name(tf_name: Any) -> Any:
    """Inverse of :func:`tf_keras_activation`.

    Args:
        tf_name: the activation as a tf_keras config stores it.
    """
    if isinstance(tf_name, str) and tf_name.startswith(f"{_ACT_PACKAGE}>k3_"):
        return tf_name.split(">k3_", 1)[1]
    if isinstance(tf_name, str) and tf_name == "hard_sigmoid":
        raise ModelError("tf_keras 'hard_sigmoid' (clip(0.2x+0.5)) has no Keras 3 activation of that name")
    return tf_name
