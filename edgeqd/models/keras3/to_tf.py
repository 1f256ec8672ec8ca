"""Keras 3 config → tf_keras config, one layer at a time (a registry of per-class translators).

Every layer goes through :data:`TRANSLATORS` (keyed by Keras 3 class name) or the generic default:
plain values (dtype policies → dtype strings, serialized tensors → lists, private ``keras.src``
module paths → public ones), Keras-3-only arguments dropped **only** when they hold Keras 3's default
(else the layer is untranslatable and named), activations mapped to tf_keras functions with the
same maths. Functional nodes are rewritten from Keras 3's ``{"args", "kwargs"}`` form to tf_keras'
``[layer, node, tensor, kwargs]`` lists; Keras 3 operations on tensors (``x + 3.0``) become
``TFOpLambda`` layers. A new Keras 3 layer or argument needs one small translator here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from .activations import tf_keras_activation
from .common import (CONSTANT, WRAPPED, accepted_args, call_arg_names, defaults_of, same_value,
                     tensor_ref)
from .ops import OPS, mask_only_ops, translate_op_or_layer


@dataclass
class Context:
    """What a translator may consult or record while translating one model."""

    k3_layers: dict[str, Any]  # name -> Keras 3 layer object of the model being translated
    special: dict[str, str] = field(default_factory=dict)  # layer name -> translator that ran
    untranslatable: dict[str, str] = field(default_factory=dict)  # layer name -> why
    count: int = 0
    implicit_masks: set = field(default_factory=set)  # mask-computing Keras 3 ops left to tf_keras
    dropped: dict[str, int] = field(default_factory=dict)  # "Class.argument" -> layers it was dropped from


Translator = Callable[[dict, Context], dict]
TRANSLATORS: dict[str, Translator] = {}  # Keras 3 class name -> translator


def translator(*class_names: str, table: dict = TRANSLATORS):
    """Register the decorated function as the translator of these Keras 3 layer classes.

    A translator takes the serialized Keras 3 layer (``{"module", "class_name", "config", ...}``) and
    the :class:`Context`, and returns the tf_keras layer entry; it raises ValueError with the reason
    when the layer cannot be translated (the bridge names the layer and the reason).

    Args:
        class_names: Keras 3 class names (``"LeakyReLU"``).
        table: the registry (the tf_keras-bound one by default).

    >>> @translator("MyDoc", table={})
    ... def my_doc(entry, ctx):
    ...     return {"module": "keras.layers", "class_name": "Dense", "config": entry["config"]}
    >>> my_doc.__name__
    'my_doc'
    """
    def register(function):
        for name in class_names:
            table[name] = function
        return function
    return register


def _plain_value(value: Any) -> Any:
    """Keras 3 serialized values (dtype policies, tensors, arrays) -> what tf_keras configs hold."""
    if isinstance(value, dict):
        cls = value.get("class_name")
        if cls in ("DTypePolicy", "FloatDTypePolicy") and isinstance(value.get("config"), dict):
            return value["config"]["name"]
        if cls in ("QuantizedDTypePolicy", "QuantizedFloat8DTypePolicy", "GPTQDTypePolicy", "AWQDTypePolicy"):
            raise ValueError(f"quantized dtype policy {value['config'].get('name')} (Keras 3 model.quantize)")
        if cls in ("__tensor__", "__numpy__") and isinstance(value.get("config"), dict):
            return value["config"]["value"]
        if "module" in value and "class_name" in value and isinstance(value.get("config"), dict):
            return _translate_object(value)
        return {k: _plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    return value


def _translate_object(obj: dict) -> dict:
    """A serialized initializer / regularizer / constraint / nested layer, Keras 3 -> tf_keras."""
    module = str(obj.get("module") or "")
    config = dict(obj["config"])
    if module.endswith("initializers"):
        # Keras 3.15 adds fan axes for EinsumDense initialization; only matters for *new* weights.
        config.pop("input_axes", None)
        config.pop("output_axes", None)
    if module.startswith(("keras.layers", "keras.src.layers", "keras.src.models")):
        raise ValueError("holds a layer config under an argument the bridge does not know; "
                         "register a translator for this class")
    out = {k: v for k, v in obj.items() if k != "config"}
    out["config"] = {k: _plain_value(v) for k, v in config.items()}
    if module.startswith("keras.src."):  # private Keras 3 path; tf_keras resolves public names
        out["module"] = "keras." + module.split(".")[2]
    return out


# what tf_keras' base Layer takes through **kwargs
_BASE_KWARGS = {"input_dim", "input_shape", "batch_input_shape", "batch_size", "weights",
                "activity_regularizer", "autocast", "implementation"}


# Keras 3-only arguments whose value here is what tf_keras always does
_TF_KERAS_IMPLIED = {"data_format": "channels_last"}


def _tf_keras_knows_activation(name: str) -> bool:
    import tf_keras

    try:
        tf_keras.activations.get(name)
    except ValueError:
        return False
    return True


def _generic_config(class_name: str, config: dict, ctx: Context, layer_name: str) -> dict:
    """Default translation: plain values; Keras 3-only keys dropped when they hold Keras 3's default."""
    import keras
    import tf_keras

    tf_cls = getattr(tf_keras.layers, class_name, None)
    k3_cls = getattr(keras.layers, class_name, None)
    out = {}
    for key, value in config.items():
        if key in WRAPPED and isinstance(value, dict) and "class_name" in value:
            out[key] = value  # translated by _default_translator
            continue
        if key in ("activation", "recurrent_activation") and isinstance(value, str):
            out[key] = tf_keras_activation(value)
            if out[key] != value:
                ctx.special.setdefault(layer_name, f"activation:{value}")
            elif not _tf_keras_knows_activation(value):
                raise ValueError(f"activation {value!r} does not exist in tf_keras")
            continue
        out[key] = _plain_value(value)
    if tf_cls is None:
        return out
    accepted = accepted_args(tf_cls, _BASE_KWARGS)
    k3_default = defaults_of(k3_cls) if k3_cls is not None else {}
    for key in [k for k in out if k not in accepted]:
        # A Keras 3-only argument left at its default means the feature is unused: dropping it is exact.
        # So is one holding what tf_keras does without being asked (its image layers are channels_last).
        if (key in k3_default and same_value(out[key], k3_default[key])) or \
                (key in _TF_KERAS_IMPLIED and same_value(out[key], _TF_KERAS_IMPLIED[key])):
            del out[key]
            ctx.dropped[f"{class_name}.{key}"] = ctx.dropped.get(f"{class_name}.{key}", 0) + 1
        else:
            raise ValueError(f"Keras 3 argument {key}={out[key]!r} has no tf_keras equivalent")
    return out


def _translate_nodes(nodes: list, layer, ctx: Context, preserve_structure: bool = False,
                     shift: Callable[[list], list] = lambda ref: ref,
                     arg_names: Optional[list[str]] = None) -> list:
    """Keras 3 ``{"args": [...], "kwargs": {...}}`` nodes -> tf_keras ``[[name, node, tensor, kwargs]]``.

    tf_keras special-cases the first call argument: each tensor in it carries
    ``[layer_name, node_index, tensor_index, kwargs]`` where ``kwargs`` holds every other argument
    (positional ones under their parameter names) and tensors inside it are ``[name, node, tensor]``.
    """
    arg_names = arg_names or call_arg_names(layer)
    out = []
    for node in nodes:
        if isinstance(node, list):  # already legacy (a Keras 3 .h5 written in legacy mode)
            out.append(node)
            continue
        args, kwargs = list(node.get("args", [])), dict(node.get("kwargs", {}))
        if not args and arg_names and arg_names[0] in kwargs:
            args = [kwargs.pop(arg_names[0])]
        first, rest = args[0], args[1:]
        for name, value in zip(arg_names[1:], rest):
            kwargs[name] = value
        if len(rest) > max(len(arg_names) - 1, 0):
            raise ValueError(f"{len(rest)} extra positional call arguments, signature {arg_names}")
        for key in ("mask", "training"):
            if key in kwargs and kwargs[key] is None:
                del kwargs[key]  # tf_keras passes these implicitly; explicit None breaks some layers
        mask_ref = tensor_ref(kwargs.get("mask"))
        if mask_ref is not None and mask_ref[0] in ctx.implicit_masks:
            del kwargs["mask"]  # tf_keras propagates this mask by itself (Embedding(mask_zero=True) ...)

        def plain(value):
            ref = tensor_ref(value)
            if ref is not None:
                return shift(ref)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        kw = plain(kwargs)

        def first_arg(value):
            ref = tensor_ref(value)
            if ref is not None:
                return shift(ref) + [kw]
            if isinstance(value, (list, tuple)):
                return [first_arg(v) for v in value]
            return [CONSTANT, -1, plain(value), kw]

        data = first_arg(first)
        if tensor_ref(first) is not None and not preserve_structure:
            data = [data]
        out.append(data)
    return out


def _sequential_shift(config_layers: list) -> Callable[[list], list]:
    """tf_keras counts a nested Sequential's own input->output node as node 0; Keras 3 does not."""
    sequential = {entry.get("config", {}).get("name") or entry.get("name")
                  for entry in config_layers if entry.get("class_name") == "Sequential"}

    def shift(ref: list) -> list:
        name, node_index, tensor_index = ref
        return [name, node_index + 1 if name in sequential else node_index, tensor_index]
    return shift


def translate_layer(entry: dict, ctx: Context, k3_layer=None, shift=None) -> dict:
    """One serialized Keras 3 layer (``{"module", "class_name", "config", ...}``) → its tf_keras form.

    Args:
        entry: the layer as Keras 3 serializes it inside a model config.
        ctx: the translation context (records what ran and what failed).
        k3_layer: the live Keras 3 layer (its call signature names positional arguments), or None.
        shift: node-index correction for references to nested Sequential models.

    Returns:
        The tf_keras entry, or ``{}`` when it failed (the reason is in ``ctx.untranslatable``).
    """
    class_name = entry["class_name"]
    name = entry.get("name") or entry.get("config", {}).get("name")
    ctx.count += 1
    try:
        if class_name in TRANSLATORS:
            if not getattr(TRANSLATORS[class_name], "routine", False):
                ctx.special[name] = TRANSLATORS[class_name].__name__
            out = TRANSLATORS[class_name](entry, ctx)
        else:
            out = _default_translator(entry, ctx)
        if "inbound_nodes" in entry:
            preserve = out["class_name"] == "TFOpLambda"
            out["inbound_nodes"] = _translate_nodes(entry["inbound_nodes"], k3_layer, ctx, preserve,
                                                    shift or (lambda ref: ref))
    except ValueError as exc:
        ctx.untranslatable[name] = f"{class_name}: {exc}"
        return {}
    if "name" in entry:
        out["name"] = entry["name"]
    return out


def _default_translator(entry: dict, ctx: Context) -> dict:
    import tf_keras

    class_name = entry["class_name"]
    module = str(entry.get("module") or "")
    if not (module.startswith("keras.layers") or module.startswith("keras.src.layers")):
        raise ValueError(f"not a built-in Keras layer (module {module!r}); register a translator for it")
    if getattr(tf_keras.layers, class_name, None) is None:
        raise ValueError("tf_keras has no layer of that class")
    name = entry.get("name") or entry["config"].get("name")
    config = _generic_config(class_name, entry["config"], ctx, name)
    for key in WRAPPED:  # wrappers (Bidirectional, TimeDistributed, RNN) hold layer configs
        if isinstance(entry["config"].get(key), dict) and "class_name" in entry["config"][key]:
            inner = entry["config"][key]
            inner_out = translate_layer(inner, ctx)
            if not inner_out:
                raise ValueError(f"inner {key} {inner['class_name']} cannot be translated: "
                                 f"{ctx.untranslatable.pop(inner.get('config', {}).get('name'), '')}")
            config[key] = inner_out
    return {"module": "keras.layers", "class_name": class_name, "config": config, "registered_name": None}


@translator("Functional", "Sequential")
def nested_model(entry: dict, ctx: Context) -> dict:
    """A model used as a layer: translate its own layers recursively.

    Args:
        entry: the nested model's serialized entry.
        ctx: the translation context.
    """
    name = entry.get("name") or entry["config"]["name"]
    inner_model = ctx.k3_layers.get(name)
    inner = translate_model_config(entry["class_name"], entry["config"], ctx, inner_model)
    return {"module": "keras", "class_name": entry["class_name"], "config": inner, "registered_name": None}


@translator("InputLayer")
def input_layer(entry: dict, ctx: Context) -> dict:
    """``batch_shape`` → ``batch_input_shape``; ``optional`` only when set (older tf_keras lacks it).

    Args:
        entry: the serialized InputLayer.
        ctx: the translation context.
    """
    config = dict(entry["config"])
    config["batch_input_shape"] = config.pop("batch_shape")
    if not config.get("optional"):
        config.pop("optional", None)
    config["dtype"] = _plain_value(config.get("dtype"))
    return {"module": "keras.layers", "class_name": "InputLayer", "config": config, "registered_name": None}


input_layer.routine = True  # every model has one: not worth a line in the report


@translator("Normalization")
def normalization(entry: dict, ctx: Context) -> dict:
    """Same config (a given mean/variance as float32 lists); the weight copy calls ``finalize_state()``.

    Args:
        entry: the serialized Normalization layer.
        ctx: the translation context.
    """
    out = _default_translator(entry, ctx)
    for key in ("mean", "variance"):
        value = out["config"].get(key)
        if value is not None:
            out["config"][key] = np.asarray(value, dtype="float32").tolist()
    return out


@translator("LeakyReLU")
def leaky_relu(entry: dict, ctx: Context) -> dict:
    """Keras 3 renamed ``alpha`` to ``negative_slope``.

    Args:
        entry: the serialized LeakyReLU layer.
        ctx: the translation context.
    """
    entry = {**entry, "config": dict(entry["config"])}
    entry["config"]["alpha"] = entry["config"].pop("negative_slope", 0.3)
    return _default_translator(entry, ctx)


@translator("MultiHeadAttention")
def multi_head_attention(entry: dict, ctx: Context) -> dict:
    """tf_keras' from_config builds the layer from ``query_shape``/``key_shape``/``value_shape`` in the
    config (KeyError without them); Keras 3 keeps them in ``build_config["shapes_dict"]``.

    Args:
        entry: the serialized MultiHeadAttention layer.
        ctx: the translation context.
    """
    out = _default_translator(entry, ctx)
    shapes = (entry.get("build_config") or {}).get("shapes_dict") or {}
    if "query_shape" not in shapes:
        raise ValueError("no build shapes recorded (layer never called)")
    out["config"]["query_shape"] = shapes["query_shape"]
    out["config"]["value_shape"] = shapes["value_shape"]
    out["config"]["key_shape"] = shapes.get("key_shape") or shapes["value_shape"]
    return out


@translator("TextVectorization", "StringLookup", "IntegerLookup", "Hashing", "Discretization",
            "CategoryEncoding", "HashedCrossing")
def _string_preprocessing(entry: dict, ctx: Context) -> dict:
    raise ValueError("string/lookup preprocessing layers stay outside the exported model; "
                     "move them into the input pipeline")


@translator("TorchModuleWrapper", "JaxLayer", "FlaxLayer", "TFSMLayer", "Lambda")
def _foreign(entry: dict, ctx: Context) -> dict:
    raise ValueError("holds code or a foreign framework's module; rebuild it from Keras layers")


def translate_model_config(class_name: str, config: dict, ctx: Context, k3_model=None) -> dict:
    """A Keras 3 Functional/Sequential config → the tf_keras config of the same class.

    Args:
        class_name: ``"Functional"`` or ``"Sequential"``.
        config: ``k3_model.get_config()`` (or a nested model's config).
        ctx: the translation context; layers that fail are recorded in ``ctx.untranslatable``.
        k3_model: the live Keras 3 model (call signatures of its layers), or None.
    """
    parent_layers = ctx.k3_layers
    if k3_model is not None:
        ctx.k3_layers = {layer.name: layer for layer in getattr(k3_model, "layers", [])}
        if class_name == "Functional":  # Keras 3 ops (x + 3.0) are operations, not layers
            ctx.k3_layers.update({op.name: op for op in getattr(k3_model, "operations", [])})
    # a Keras 3 model-level dtype policy has no tf_keras counterpart (each layer keeps its own)
    out = {k: v for k, v in config.items() if k not in ("layers", "dtype")}
    shift = _sequential_shift(config.get("layers", [])) if class_name == "Functional" else None
    layers = []
    mask_ops = mask_only_ops(config.get("layers", []))
    ctx.implicit_masks |= mask_ops
    for entry in config.get("layers", []):
        name = entry.get("name") or entry["config"].get("name")
        if name in mask_ops:
            ctx.special[name] = "mask-op:implicit"
            continue
        try:
            op = translate_op_or_layer(entry, ctx)
        except ValueError as exc:
            ctx.untranslatable[name] = f"{entry['class_name']}: {exc}"
            continue
        if op is not None:
            ctx.count += 1
            ctx.special[name] = f"op:{entry['class_name']}->TFOpLambda"
            try:
                op["name"] = entry["name"]
                op["inbound_nodes"] = _translate_nodes(entry["inbound_nodes"], None, ctx, True,
                                                       shift or (lambda ref: ref),
                                                       ["x", OPS[entry["class_name"]][1]])
            except ValueError as exc:
                ctx.untranslatable[name] = f"{entry['class_name']}: {exc}"
                continue
            layers.append(op)
            continue
        layers.append(translate_layer(entry, ctx, ctx.k3_layers.get(name), shift))
    out["layers"] = layers
    if class_name == "Functional":
        for key in ("input_layers", "output_layers"):
            refs = config[key]
            if refs and isinstance(refs[0], str):  # Keras 3 writes a lone tensor unwrapped
                refs = [refs]
            out[key] = [shift(list(r)) for r in refs]
    ctx.k3_layers = parent_layers
    return out
