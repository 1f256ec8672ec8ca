"""Finding code in a stored Keras model configuration before anything is deserialized.

A Keras model file is data plus a JSON configuration that Keras turns back into objects. Some
of those objects carry code: a ``Lambda`` layer stores Python bytecode that runs on load, a
``TFOpLambda`` layer calls whatever TensorFlow function its config names (``io.write_file``
writes files), and a ``module`` field makes Keras import that Python module. edgeqd refuses
such files unless the user passes ``--unsafe-deserialization``.

The check is structural, never a text search: the stored configuration is decoded as JSON
(exactly the bytes Keras will read) and every dict and list in it is walked, so no encoding
(``"class_name" : "Lambda"``, ``"\\u004cambda"``) and no container (nested models,
``TimeDistributed``, ``Bidirectional``, a container Keras adds later) can hide a layer.
The walk understands both the tf_keras layout (``class_name`` + ``config``) and the Keras 3
layout (``module``, ``class_name``, ``registered_name``, ``config``).
"""

from __future__ import annotations

import builtins
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator, Optional

from edgeqd.errors import ModelError

# Classes whose config is (or names) Python code: refused whatever their config says.
# Compared after JSON decoding and after stripping a module prefix ("keras.layers.Lambda") or
# a registered-name package ("my_pkg>Lambda"); case variants ("lambda") are other classes.
CODE_CLASSES = frozenset({"Lambda"})
# Keras' marker for a Python function serialized as bytecode (Keras 3 and tf_keras' new format),
# wherever it appears: a Lambda's function, an activation, a loss.
SERIALIZED_LAMBDA = "__lambda__"
# Layers that call the TensorFlow function named in their config (tf_keras' "op layers").
TF_OP_CLASSES = frozenset({"TFOpLambda", "SlicingOpLambda"})
# Packages whose classes Keras resolves from its own registry; any other ``module`` is imported
# by tf_keras' deserializer (importlib.import_module), which runs that module's code.
KERAS_PACKAGES = frozenset({"keras", "tf_keras", "keras_hub", "keras_cv", "keras_nlp"})
# Top-level keys Keras only reads when compiling; edgeqd always loads with compile=False, so a
# custom loss or metric stored there is never deserialized and must not block the load.
COMPILE_ONLY_KEYS = frozenset({"compile_config", "training_config"})
MAX_NAMED = 10  # layers named in the error; the rest are counted

# TFOpLambda functions allowed without --unsafe-deserialization. The rule: after dropping a
# "compat.v1." / "compat.v2." prefix, the TensorFlow symbol must be either
#   * a lower-case function in a pure-computation namespace (math, nn, linalg, signal,
#     bitwise, image, __operators__), or
#   * one of the pure tensor functions in PURE_TOP_LEVEL below.
# Everything else is refused: tf.io, tf.py_function, numpy_function, compat.v1.py_func,
# raw_ops (which include WriteFile, Save, PyFunc), print and debugging, summary, data,
# saved_model, load_library / load_op_library, rpc_*, xla_custom_call, control flow taking
# callables, classes (upper-case names such as nn.RNNCellResidualWrapper), and any name
# TensorFlow adds later. These namespaces hold only tensor-in, tensor-out ops that read no
# files, write nothing and call no Python: what functional models and edgeqd's own rewrite
# produce (``x + 1`` is ``__operators__.add``, ``tf.nn.relu`` is ``nn.relu``).
PURE_NAMESPACES = ("__operators__.", "math.", "nn.", "linalg.", "signal.", "bitwise.", "image.")
PURE_TOP_LEVEL = frozenset("""
    abs acos acosh add add_n arg_max arg_min argmax argmin argsort asin asinh atan atan2 atanh
    batch_gather batch_to_space batch_to_space_nd bitcast boolean_mask broadcast_dynamic_shape
    broadcast_static_shape broadcast_to cast ceil clip_by_global_norm clip_by_norm clip_by_value
    complex concat conj convert_to_tensor cos cosh count_nonzero cumprod cumsum depth_to_space
    div div_no_nan divide dynamic_partition dynamic_stitch einsum ensure_shape equal erf erfc exp
    expand_dims expm1 extract_image_patches extract_volume_patches eye fill floor floor_div
    floordiv floormod gather gather_nd greater greater_equal identity identity_n imag
    invert_permutation is_finite is_inf is_nan less less_equal lin_space linspace log log1p
    log_sigmoid logical_and logical_not logical_or logical_xor matmul matrix_band_part
    matrix_diag matrix_diag_part matrix_set_diag matrix_transpose maximum meshgrid minimum mod
    multiply negative norm not_equal one_hot ones ones_like pad parallel_stack pow range rank
    real realdiv reciprocal reduce_all reduce_any reduce_logsumexp reduce_max reduce_mean
    reduce_min reduce_prod reduce_sum repeat reshape reverse reverse_sequence reverse_v2 rint
    roll round rsqrt saturate_cast scalar_mul scatter_nd searchsorted segment_max segment_mean
    segment_min segment_prod segment_sum sequence_mask shape shape_n sigmoid sign sin sinh size
    slice sort space_to_batch space_to_batch_nd space_to_depth split sqrt square
    squared_difference squeeze stack stop_gradient strided_slice subtract tan tanh
    tensor_scatter_nd_add tensor_scatter_nd_max tensor_scatter_nd_min tensor_scatter_nd_sub
    tensor_scatter_nd_update tensordot tile to_bfloat16 to_double to_float to_int32 to_int64
    transpose truediv truncatediv truncatemod unique unique_with_counts unravel_index
    unsorted_segment_max unsorted_segment_mean unsorted_segment_min unsorted_segment_prod
    unsorted_segment_sum unstack where where_v2 zeros zeros_like
""".split())
# ClassMethod layers call CLASS.METHOD from the config: only the ragged/sparse constructors.
PURE_CLASS_METHODS = re.compile(r"(compat\.v1\.)?(RaggedTensor|SparseTensor)\.from_[a-z_]+")
# InstanceProperty / InstanceMethod layers read an attribute of a tensor: public names only
# (a dunder such as __class__ or __reduce__ is a way out of the tensor).
PUBLIC_ATTRIBUTE = re.compile(r"[a-z][a-z0-9_]*")


def is_pure_tf_function(symbol: Any) -> bool:
    """Whether a ``TFOpLambda`` may call this TensorFlow symbol without ``--unsafe-deserialization``.

    Args:
        symbol: the layer config's ``function`` field, as tf_keras stores it (``"nn.relu"``).

    >>> is_pure_tf_function("__operators__.add"), is_pure_tf_function("io.write_file")
    (True, False)
    """
    if not isinstance(symbol, str):
        return False
    for prefix in ("compat.v1.", "compat.v2."):
        if symbol.startswith(prefix):
            symbol = symbol[len(prefix):]
            break
    if symbol in PURE_TOP_LEVEL:
        return True
    last = symbol.rsplit(".", 1)[-1]
    return (symbol.startswith(PURE_NAMESPACES) and re.fullmatch(r"[a-z_][a-z0-9_]*", last) is not None
            and not last.startswith("__"))


def _short_class(name: str) -> str:
    """``keras.layers.Lambda`` and ``my_pkg>Lambda`` → ``Lambda``."""
    return name.rsplit(">", 1)[-1].rsplit(".", 1)[-1]


def _layer_name(node: dict) -> Optional[str]:
    """The ``name`` of a serialized layer, in either layout."""
    inner = node.get("config")
    name = inner.get("name") if isinstance(inner, dict) else None
    name = name if isinstance(name, str) else node.get("name")
    return name if isinstance(name, str) else None


def _walk(config: Any) -> Iterator[tuple[dict, str]]:
    """Every dict in a decoded JSON tree with the name of the closest enclosing layer (iterative: no depth limit)."""
    stack: list[tuple[Any, str, bool]] = [(config, "model", True)]
    while stack:
        node, owner, top = stack.pop()
        if isinstance(node, dict):
            if "class_name" in node:
                owner = _layer_name(node) or owner
            yield node, owner
            children = [value for key, value in node.items() if not (top and key in COMPILE_ONLY_KEYS)]
        elif isinstance(node, list):
            children = node
        else:
            continue
        stack.extend((value, owner, False) for value in reversed(children))  # visited in stored order


def _findings(node: dict) -> Iterator[str]:
    """Why one serialized object would run code on load (none, one or several reasons)."""
    for key, value in node.items():
        # Legacy bytecode markers: Lambda's "function_type", the RNN cell wrappers' "residual_fn_type".
        if isinstance(key, str) and key.endswith("_type") and value == "lambda":
            yield f"Python bytecode in {key[:-5]!r}"
    class_names = [value for value in (node.get("class_name"), node.get("registered_name")) if isinstance(value, str)]
    if not class_names:
        return
    short = {_short_class(name) for name in class_names}
    inner = node.get("config") if isinstance(node.get("config"), dict) else node
    if short & CODE_CLASSES:
        yield "Lambda"
    if SERIALIZED_LAMBDA in class_names:
        yield "Python bytecode"
    for op_class in sorted(short & TF_OP_CLASSES):
        function = inner.get("function")
        if not is_pure_tf_function(function):
            yield f"{op_class} calling tf.{function}, not a pure tensor op"
    if "ClassMethod" in short:
        symbol = f"{inner.get('cls_symbol')}.{inner.get('method_name')}"
        if not PURE_CLASS_METHODS.fullmatch(symbol):
            yield f"ClassMethod calling tf.{symbol}"
    if short & {"InstanceProperty", "InstanceMethod"}:
        attribute = inner.get("attr_name")
        if not (isinstance(attribute, str) and PUBLIC_ATTRIBUTE.fullmatch(attribute)):
            yield f"tensor attribute {attribute!r}"
    module = node.get("module")
    if isinstance(module, str):
        if module == "builtins":
            # Keras looks a stored function's (or class's) name up in its own modules, then in Python's
            # builtins (tf_keras' _retrieve_class_or_fn), so "eval", "exec" or "open" would become callables.
            name = node.get("config") if node.get("class_name") == "function" else node.get("class_name")
            if isinstance(name, str) and hasattr(builtins, name):
                yield f"Python builtin {name!r}"
        elif module.split(".", 1)[0] not in KERAS_PACKAGES:
            yield f"{node.get('class_name')} from module {module!r}, which would be imported"


def find_code_layers(config: Any) -> list[str]:
    """Everything in a decoded Keras model configuration that would run code when Keras loads it.

    Works on both layouts: tf_keras (``.h5`` ``model_config``, SavedModel metadata, tf_keras
    ``.keras``) and Keras 3 ``.keras`` (``module``/``class_name``/``registered_name``/``config``).
    Every dict and list is visited, whatever key holds it, so nested models and wrappers
    (``TimeDistributed.layer``, ``Bidirectional.backward_layer``) are covered. Top-level
    ``compile_config``/``training_config`` are skipped: edgeqd loads with ``compile=False``.

    Args:
        config: the JSON-decoded configuration (a dict, or a list of them).

    Returns:
        One ``"layer name (reason)"`` per layer that carries code (its first reason), in stored
        order; empty when nothing would run code.

    >>> find_code_layers({"class_name": "Sequential", "config": {"layers": [
    ...     {"class_name": "TimeDistributed", "config": {"name": "td", "layer": {
    ...         "class_name": "keras.layers.Lambda", "config": {"name": "double"}}}}]}})
    ['double (Lambda)']
    """
    found: dict[str, str] = {}
    for node, owner in _walk(config):
        for reason in _findings(node):
            found.setdefault(owner, _printable(f"{owner} ({reason})"))
    return list(found.values())


def _printable(text: str, limit: int = 160) -> str:
    """Names come from the file: no control characters (a newline would forge a second error line), bounded length."""
    text = re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", "?", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _strict_json(text: Any, where: str) -> Any:
    """JSON-decode ``text``; duplicate keys are refused (a second "class_name" must not hide the first)."""
    def pairs(items):
        keys = [key for key, _ in items]
        if len(set(keys)) != len(keys):
            duplicated = sorted({key for key in keys if keys.count(key) > 1})
            raise ValueError(f"duplicate key(s) {', '.join(map(repr, duplicated))} in one object")
        return dict(items)

    try:
        if isinstance(text, bytes):  # numpy.bytes_ included
            text = text.decode("utf-8")
        if not isinstance(text, str):
            raise ValueError(f"stored as {type(text).__name__}, not text")
        return json.loads(text, object_pairs_hook=pairs)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ModelError(f"{where}: the stored model configuration cannot be decoded "
                         f"({type(exc).__name__}: {str(exc)[:200]}); refusing to load it") from None


def _keras_zip_config(path: Path) -> Any:
    """``config.json`` of a ``.keras`` zip, the entry tf_keras' saving_lib reads."""
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: corrupt or unreadable model file (not a .keras zip archive)")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if names.count("config.json") != 1:
            raise ModelError(f"{path}: corrupt or unreadable model file (the .keras archive holds "
                             f"{names.count('config.json')} config.json entries, expected 1)")
        return _strict_json(archive.read("config.json"), str(path))


def _h5_config(path: Path) -> Any:
    """The root ``model_config`` attribute of an HDF5 model, the one tf_keras' hdf5_format reads."""
    import h5py

    with h5py.File(path, "r") as handle:
        config = handle.attrs.get("model_config")
    if config is None:
        raise ModelError(f"{path} holds no model configuration (a weights-only .h5?); give a whole model "
                         "saved with model.save()")
    return _strict_json(config, str(path))


def _saved_model_configs(path: Path) -> list[Any]:
    """The Keras metadata of every node of a SavedModel, read the way tf_keras' loader reads it.

    tf_keras takes ``keras_metadata.pb`` when present, else the metadata that SavedModels older than
    TF 2.5 keep inside ``saved_model.pb``; both are walked the same way. A SavedModel without
    either holds no Keras layers (tf_keras returns a plain TF object, which load_model refuses);
    its graph ops run no Python.
    """
    from tensorflow.python.saved_model import loader_impl
    from tf_keras.protobuf import saved_metadata_pb2
    from tf_keras.src.saving.legacy.saved_model import constants

    metadata_file = path / constants.SAVED_METADATA_PATH
    if metadata_file.exists():
        metadata = saved_metadata_pb2.SavedMetadata()
        try:
            metadata.ParseFromString(metadata_file.read_bytes())
        except Exception as exc:  # google.protobuf.message.DecodeError
            raise ModelError(f"{metadata_file}: cannot be parsed ({type(exc).__name__}); refusing to load it") from None
        texts = [(node.metadata, f"{metadata_file} node {node.node_path}") for node in metadata.nodes]
    else:
        graph = loader_impl.parse_saved_model(str(path)).meta_graphs[0].object_graph_def
        texts = [(node.user_object.metadata, f"{path} node {node_id}") for node_id, node in enumerate(graph.nodes)
                 if node.WhichOneof("kind") == "user_object"
                 and node.user_object.identifier in constants.KERAS_OBJECT_IDENTIFIERS]
    return [_strict_json(text, where) for text, where in texts]


def stored_configs(path: Path) -> list[Any]:
    """The decoded configuration(s) Keras will deserialize from a model file, read without deserializing.

    Args:
        path: a ``.keras`` or ``.h5``/``.hdf5`` file, or a SavedModel folder (already checked to exist).

    Raises:
        ModelError: the file is unreadable, holds no model configuration, or its configuration is
            not valid JSON (exit 3).
    """
    try:
        if path.is_dir():
            return _saved_model_configs(path)
        if path.suffix == ".keras":
            return [_keras_zip_config(path)]
        return [_h5_config(path)]
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: corrupt or unreadable model file ({type(exc).__name__}: {str(exc)[:200]})") from None


def check_model_file(path: Path) -> None:
    """Refuse a model file whose configuration would run code when loaded (exit 3).

    Args:
        path: the model file or SavedModel folder.

    Raises:
        ModelError: naming every layer that carries code, or an unreadable configuration.
    """
    found = list(dict.fromkeys(finding for config in stored_configs(path) for finding in find_code_layers(config)))
    if found:
        shown = ", ".join(found[:MAX_NAMED]) + (f" and {len(found) - MAX_NAMED} more" if len(found) > MAX_NAMED else "")
        raise ModelError(f"{path} contains code that would run on load: {shown}; "
                         "pass --unsafe-deserialization only if you trust this file")
