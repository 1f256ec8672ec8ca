"""tf_keras config → Keras 3 config, for the students edgeqd gives back to a Keras 3 user.

The reverse of :mod:`edgeqd.models.keras3.to_tf`: a registry of per-class translators
(:data:`REVERSE`, keyed by tf_keras class name) over a generic default that drops tf_keras-only
arguments only when they hold tf_keras' default or cannot change what the layer computes.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable

from .activations import k3_activation_name
from .common import (CONSTANT, TENSOR, WRAPPED, ModelError, accepted_args, call_arg_names, defaults_of,
                     same_value, tensor_ref)
from .ops import OPS

Translator = Callable[[dict, Any], dict]
REVERSE: dict[str, Translator] = {}  # tf_keras class name -> translator to Keras 3


def reverse_translator(*class_names: str):
    """Register the decorated function as the tf_keras → Keras 3 translator of these tf_keras classes.

    Args:
        class_names: tf_keras class names (``"BatchNormalization"``).
    """
    def register(function):
        for name in class_names:
            REVERSE[name] = function
        return function
    return register


_TF_OPS = {function: k3 for k3, (function, _) in OPS.items() if k3 not in ("TrueDivide",)}


def _k3_nodes(nodes: list, layer, shapes: Callable[[str], Any]) -> list:
    """tf_keras ``[[name, node, tensor, kwargs]]`` nodes -> Keras 3 ``{"args", "kwargs"}`` nodes."""
    arg_names = call_arg_names(layer)
    out = []

    def is_ref(v):
        return isinstance(v, list) and len(v) in (3, 4) and isinstance(v[0], str) and v[0] != CONSTANT \
            and isinstance(v[1], int) and isinstance(v[2], int)

    def tensor(ref):
        return {"class_name": TENSOR, "config": {"shape": shapes(ref[0]), "dtype": "float32",
                                                  "keras_history": [ref[0], ref[1], ref[2]]}}

    def kw_value(v):
        if is_ref(v):
            return tensor(v)
        if isinstance(v, dict):
            return {k: kw_value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [kw_value(x) for x in v]
        return v

    for node in nodes:
        if isinstance(node, dict):
            out.append(node)
            continue
        kwargs = {}

        def first(v):
            nonlocal kwargs
            if isinstance(v, list) and len(v) == 4 and v[0] == CONSTANT:
                kwargs = v[3] or {}
                return v[2]
            if is_ref(v):
                if len(v) == 4:
                    kwargs = v[3] or {}
                return tensor(v)
            return [first(x) for x in v]

        if is_ref(node) or (isinstance(node, list) and node and node[0] == CONSTANT):
            arg = first(node)  # TFOpLambda keeps the structure unwrapped
        else:
            arg = first(node)
            if isinstance(arg, list) and len(arg) == 1:
                arg = arg[0]
        kwargs = {k: kw_value(v) for k, v in kwargs.items() if not (k == "name" and v is None)}
        args = [arg]
        if layer is not None and layer.__class__.__name__ == "TFOpLambda":  # ops take (x1, x2) positionally
            if set(kwargs) != {"y"}:
                raise ModelError(f"layer {layer.name}: tf.{getattr(layer, 'symbol', '?')} called with "
                                 f"{sorted(kwargs)}; only (x, y) operations translate")
            out.append({"args": [arg, kwargs["y"]], "kwargs": {}})
            continue
        for name in arg_names[1:]:  # Keras 3 records positional tensors positionally
            if name in kwargs and tensor_ref(kwargs[name]) is not None and len(args) == arg_names.index(name):
                args.append(kwargs.pop(name))
        out.append({"args": args, "kwargs": kwargs})
    return out


# tf_keras-only keys that never change what a layer computes at inference: performance hints (RNN
# ``implementation``), shapes tf_keras records on layers that the InputLayer already fixes, MHA's
# build shapes (Keras 3 keeps them in build_config), and the random-number generator kind of the
# augmentation layers (Keras 3 has its own SeedGenerator; both are identity at inference).
_REVERSE_HARMLESS = {"implementation", "batch_input_shape", "query_shape", "key_shape", "value_shape",
                     "rng_type", "force_generator"}


def _reverse_generic(entry: dict, tf_layer) -> dict:
    """Default tf_keras -> Keras 3 layer translation: tf_keras-only keys dropped when at their default."""
    import keras
    import tf_keras

    class_name = entry["class_name"]
    k3_cls = getattr(keras.layers, class_name, None)
    tf_cls = getattr(tf_keras.layers, class_name, None)
    name = entry.get("name") or entry["config"].get("name")
    if k3_cls is None or tf_cls is None:
        raise ModelError(f"layer {name}: {class_name} has no Keras 3 translation")
    accepted = accepted_args(k3_cls, {"input_dim", "input_shape"})  # what Keras 3's Layer takes via **kwargs
    tf_default = defaults_of(tf_cls)
    config = {}
    for key, value in entry["config"].items():
        if key in WRAPPED and isinstance(value, dict) and "class_name" in value:
            config[key] = REVERSE.get(value["class_name"], _reverse_generic)(copy.deepcopy(value), None)
            continue
        if key in ("activation", "recurrent_activation"):
            if isinstance(value, dict) and value.get("class_name") == "function":
                value = value["config"]  # tf_keras writes registered functions as {"class_name": "function"}
            value = k3_activation_name(value)
        if key not in accepted:
            if key in tf_default and same_value(value, tf_default[key]) or key in _REVERSE_HARMLESS \
                    or key.endswith("_initializer"):  # initializers only shape new weights; ours are copied
                continue
            raise ModelError(f"layer {name}: tf_keras argument {key}={value!r} has no Keras 3 equivalent")
        config[key] = value
    out = {"module": "keras.layers", "class_name": class_name, "config": config, "registered_name": None}
    if "name" in entry:
        out["name"] = entry["name"]
    return out


def to_k3_config(class_name: str, config: dict, tf_model) -> dict:
    """A tf_keras Functional/Sequential config → Keras 3 config (new-style nodes, Keras 3 layer args).

    Args:
        class_name: ``"Sequential"``, ``"Functional"`` or ``"Model"``.
        config: ``tf_model.get_config()``.
        tf_model: the tf_keras model (its layers give call signatures and output shapes).
    """
    out = {k: v for k, v in config.items() if k != "layers"}
    layers = {layer.name: layer for layer in tf_model.layers}

    def shapes(name):
        layer = layers.get(name)
        try:
            shape = layer.output_shape
        except (AttributeError, RuntimeError):
            return [None]
        return list(shape[0]) if isinstance(shape, list) else list(shape)

    sequential = {e.get("config", {}).get("name") for e in config["layers"] if e["class_name"] == "Sequential"}
    out_layers = []
    for entry in config["layers"]:
        cls = entry["class_name"]
        name = entry.get("name") or entry["config"].get("name")
        if cls in REVERSE:
            new = REVERSE[cls](copy.deepcopy(entry), layers.get(name))
        elif cls in ("Functional", "Sequential", "Model"):
            new = {"module": "keras" if cls == "Sequential" else "keras.src.models.functional",
                   "class_name": "Sequential" if cls == "Sequential" else "Functional",
                   "config": to_k3_config(cls, entry["config"], layers[name]),
                   "registered_name": "Sequential" if cls == "Sequential" else "Functional"}
        else:
            new = _reverse_generic(entry, layers.get(name))
        if "name" in entry:
            new["name"] = entry["name"]
        if "inbound_nodes" in entry:
            nodes = entry["inbound_nodes"]
            if sequential:
                nodes = json.loads(json.dumps(nodes))
                _unshift(nodes, sequential)
            new["inbound_nodes"] = _k3_nodes(nodes, layers.get(name), shapes)
        out_layers.append(new)
    out["layers"] = out_layers
    if class_name in ("Functional", "Model"):
        for key in ("input_layers", "output_layers"):
            refs = json.loads(json.dumps(config[key]))
            _unshift(refs, sequential)
            out[key] = refs[0] if len(refs) == 1 else refs  # Keras 3 writes a lone tensor unwrapped
    return out


@reverse_translator("BatchNormalization")
def batch_normalization_reverse(entry: dict, tf_layer) -> dict:
    """A built tf_keras BatchNormalization writes ``axis`` as a list (``[3]``); Keras 3 takes an int.

    Args:
        entry: the serialized tf_keras BatchNormalization.
        tf_layer: the live layer.
    """
    axis = entry["config"].get("axis")
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise ModelError(f"layer {entry['config']['name']}: BatchNormalization over axes {axis} "
                             "has no Keras 3 equivalent")
        entry = copy.deepcopy(entry)
        entry["config"]["axis"] = axis[0]
    return _reverse_generic(entry, tf_layer)


@reverse_translator("LeakyReLU")
def leaky_relu_reverse(entry: dict, tf_layer) -> dict:
    """tf_keras ``alpha`` → Keras 3 ``negative_slope``.

    Args:
        entry: the serialized tf_keras LeakyReLU.
        tf_layer: the live layer (unused).
    """
    entry = copy.deepcopy(entry)
    entry["config"]["negative_slope"] = entry["config"].pop("alpha", 0.3)
    return _reverse_generic(entry, tf_layer)


@reverse_translator("InputLayer")
def input_layer_reverse(entry: dict, tf_layer) -> dict:
    """tf_keras ``batch_input_shape`` → Keras 3 ``batch_shape``.

    Args:
        entry: the serialized tf_keras InputLayer.
        tf_layer: the live layer (unused).
    """
    config = {k: v for k, v in entry["config"].items() if k != "batch_input_shape"}
    config["batch_shape"] = entry["config"]["batch_input_shape"]
    return {"module": "keras.layers", "class_name": "InputLayer", "config": config, "registered_name": None,
            "name": entry.get("name")}


def _unshift(obj: Any, sequential: set) -> None:
    if isinstance(obj, list):
        if len(obj) in (3, 4) and isinstance(obj[0], str) and obj[0] in sequential and isinstance(obj[1], int):
            obj[1] -= 1
        for v in obj:
            _unshift(v, sequential)
    elif isinstance(obj, dict):
        for v in obj.values():
            _unshift(v, sequential)


@reverse_translator("TFOpLambda")
def tf_op_lambda(entry: dict, tf_model) -> dict:
    """A tf_keras TFOpLambda doing binary arithmetic → the Keras 3 operation entry.

    Args:
        entry: the serialized TFOpLambda.
        tf_model: the live layer (unused).
    """
    function = entry["config"]["function"]
    if function not in _TF_OPS:
        raise ModelError(f"layer {entry['config']['name']}: tf.{function} has no Keras 3 translation")
    return {"module": "keras.src.ops.numpy", "class_name": _TF_OPS[function],
            "config": {"name": entry["config"]["name"]}, "registered_name": _TF_OPS[function],
            "name": entry.get("name")}
