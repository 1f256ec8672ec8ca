"""Shared constants and small helpers of the Keras 3 ⇄ tf_keras bridge (no TensorFlow import)."""

from __future__ import annotations

import inspect
import json
from typing import Any, Optional

from edgeqd.errors import ModelError

__all__ = ["KERAS3", "TF_KERAS", "SERVING", "PARITY_RTOL", "ModelError", "all_layers"]

# The flavours of model file edgeqd tells apart: Keras 3 (``import keras``, and ``tf.keras`` in TF 2.16+
# without TF_USE_LEGACY_KERAS), tf_keras / Keras 2 (what TFMOT needs), and a SavedModel with no Keras
# layers at all (Keras 3 ``model.export()``): usable only through its serving signature.
KERAS3, TF_KERAS, SERVING = "keras3", "tf_keras", "saved_model_serving"
# max |Δ| allowed between a Keras 3 model and its tf_keras translation, relative to the largest
# |output| of the original: float32 reassociation (fused vs unfused BatchNormalization) gives up to
# 4e-6 on an untrained MobileNetV2 at 32 px and 2.3e-6 at 224 px, but 1.5e-5 on a trained one and
# 1.8e-5 on a trained EfficientNetB0 (benchmarks/model_zoo.py: no single layer off by more than
# LAYER_DIVERGENCE), which 1e-5 refused; a mistranslated layer is off by O(1e-2) or more.
PARITY_RTOL = 1e-4
TENSOR = "__keras_tensor__"  # Keras 3's class_name of a tensor inside a serialized call node
CONSTANT = "_CONSTANT_VALUE"  # tf_keras' marker for a constant first call argument (TFOpLambda)
WRAPPED = ("layer", "forward_layer", "backward_layer", "cell")  # config keys that hold a layer (wrappers, RNN)


def init_params(cls) -> tuple[dict[str, Any], bool]:
    """Named ``__init__`` parameters along the MRO (a class passing **kwargs up exposes its parents').

    Returns:
        ``(name -> default, reaches_base)``: ``reaches_base`` is True when every ``__init__`` up to the
        library's base ``Layer`` forwards ``**kwargs``, so the base layer's own extra keywords apply.
    """
    params: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        signature = inspect.signature(vars(klass)["__init__"]).parameters
        for name, p in signature.items():
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                params.setdefault(name, p.default)
        if klass.__name__ == "Layer":
            return params, True
        if not any(p.kind is p.VAR_KEYWORD for p in signature.values()):
            return params, False
    return params, False


def accepted_args(cls, base_kwargs: set[str]) -> set[str]:
    """Keyword arguments ``cls(...)`` accepts; ``base_kwargs`` are those the base Layer takes via **kwargs."""
    params, reaches_base = init_params(cls)
    return set(params) | (base_kwargs if reaches_base else set())


# Keras 3 arguments read from **kwargs (no default in any signature), with the value meaning "unused".
_K3_HIDDEN_DEFAULTS = {"rms_scaling": False}


def defaults_of(cls) -> dict[str, Any]:
    """Constructor defaults of ``cls`` along the MRO, plus the Keras 3 arguments read from ``**kwargs``."""
    params, _ = init_params(cls)
    out = {n: d for n, d in params.items() if d is not inspect.Parameter.empty}
    return {**_K3_HIDDEN_DEFAULTS, **out}


def same_value(a: Any, b: Any) -> bool:
    """Whether two config values are equal (as values, or as JSON: tuples and lists compare equal)."""
    try:
        return a == b or json.dumps(a) == json.dumps(b)
    except TypeError:
        return False


def tensor_ref(obj: Any) -> Optional[list]:
    """``[layer, node, tensor]`` of a serialized Keras 3 KerasTensor, or None for anything else."""
    if isinstance(obj, dict) and obj.get("class_name") == TENSOR:
        return list(obj["config"]["keras_history"])
    return None


def call_arg_names(layer) -> list[str]:
    """Names of the positional parameters of ``layer.call`` (empty for None or an unreadable signature)."""
    if layer is None:
        return []
    try:
        params = inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return []
    return [n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def all_layers(model) -> list:
    """Every layer of ``model``, nested Functional/Sequential models' layers included (either Keras).

    Args:
        model: a Keras 3 or tf_keras model.
    """
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers") and layer.__class__.__name__ in ("Functional", "Sequential"):
            out += all_layers(layer)
    return out
