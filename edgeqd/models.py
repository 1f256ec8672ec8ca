"""Loading and saving Keras models safely.

Models load with Keras' ``safe_mode``. Lambda layers carry Python code, so a model
that contains one is refused before it is deserialized unless the user opts in
with ``unsafe_deserialization`` (``--unsafe-deserialization``); for ``.h5`` and
SavedModel files, where Keras has no safe mode of its own, the stored
configuration is scanned for Lambda layers first.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Optional

from edgeqd.errors import ModelError
from edgeqd.outputs import atomic_file

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def _stored_config(path: Path) -> Optional[str]:
    """The model's stored architecture as text, read without deserializing anything."""
    if path.is_dir():
        meta = path / "keras_metadata.pb"
        return meta.read_bytes().decode("utf-8", "replace") if meta.exists() else None
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            return archive.read("config.json").decode("utf-8")
    import h5py

    with h5py.File(path, "r") as handle:
        config = handle.attrs.get("model_config")
    return config.decode() if isinstance(config, bytes) else config


def _lambda_layers(config_text: str) -> list[str]:
    """Names of Lambda layers in a stored model configuration."""
    names = []
    for match in re.finditer(r'"class_name":\s*"Lambda"', config_text):
        tail = config_text[match.end(): match.end() + 400]
        found = re.search(r'"name":\s*"([^"]+)"', tail)
        names.append(found.group(1) if found else "?")
    return list(dict.fromkeys(names))  # SavedModel metadata repeats each layer


def load_model(path: str | Path, unsafe_deserialization: bool = False,
               custom_objects: Optional[dict[str, Any]] = None):
    """Load a ``.keras``, ``.h5`` or SavedModel Keras model, refusing Lambda layers by default.

    Args:
        path: the model file or SavedModel folder.
        unsafe_deserialization: allow Lambda layers (their code runs on load).
        custom_objects: extra classes Keras needs to rebuild custom layers.

    Returns:
        The ``tf_keras`` model, not compiled.

    >>> load_model("missing.keras")
    Traceback (most recent call last):
    edgeqd.errors.ModelError: model not found: missing.keras
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ModelError(f"{path} is a folder without saved_model.pb; give a .keras, .h5 or SavedModel")
    elif path.suffix not in MODEL_SUFFIXES:
        raise ModelError(f"{path}: unknown model format {path.suffix!r}; give a .keras, .h5 or SavedModel folder")
    try:
        config_text = _stored_config(path)
    except Exception as exc:
        raise ModelError(f"{path}: corrupt or unreadable model file ({type(exc).__name__}: {exc})") from None
    if config_text and not unsafe_deserialization:
        lambdas = _lambda_layers(config_text)
        if lambdas:
            raise ModelError(
                f"{path} contains Lambda layer(s) {', '.join(lambdas)}, whose Python code would run on "
                "load; pass --unsafe-deserialization only if you trust this file")
    import tf_keras as keras

    try:
        if path.suffix == ".keras":
            model = keras.models.load_model(path, custom_objects=custom_objects, compile=False,
                                            safe_mode=not unsafe_deserialization)
        else:
            model = keras.models.load_model(path, custom_objects=custom_objects, compile=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: cannot load the model ({type(exc).__name__}: {first[:300]})") from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"{path}: holds a {type(model).__name__}, not a Keras model")
    return model


def save_model(model, path: str | Path, force: bool = False) -> Path:
    """Save a Keras model atomically (temporary name, then rename).

    Args:
        model: the ``tf_keras`` model.
        path: destination (``.keras`` or ``.h5``).
        force: replace an existing file.
    """
    path = Path(path)
    if path.suffix not in (".keras", ".h5"):
        raise ModelError(f"{path}: save models as .keras or .h5")
    with atomic_file(path, force=force, suffix=path.suffix) as tmp:
        model.save(tmp)
    return path


def model_signature(model) -> tuple[tuple[Optional[int], ...], int]:
    """The model's per-sample input shape and its number of outputs (classes).

    Args:
        model: a single-input, single-output Keras model.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{model.name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "edgeqd handles single-input, single-output classifiers")
    input_shape = tuple(model.inputs[0].shape[1:])
    output_shape = tuple(model.outputs[0].shape[1:])
    if len(output_shape) != 1 or output_shape[0] is None:
        raise ModelError(f"{model.name} outputs shape {output_shape}; expected (num_classes,)")
    return input_shape, int(output_shape[0])


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files in sorted order (paths included).

    Args:
        path: a file or a folder.
    """
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def describe_model(model) -> dict[str, Any]:
    """Name, parameter count and layer count of a model, for manifests.

    Args:
        model: a Keras model.
    """
    return {"name": model.name, "params": int(model.count_params()), "layers": len(model.layers),
            "config_digest": hashlib.sha256(json.dumps(model.get_config(), sort_keys=True,
                                                       default=str).encode()).hexdigest()[:16]}
