"""Loading and saving Keras models safely.

Models load with Keras' ``safe_mode``. Before Keras sees a file, its stored configuration is
decoded and walked (:mod:`edgeqd.models.safety`): a model holding code that would run on load
(Lambda layers, TF op layers calling non-math functions, modules Keras would import) is
refused unless the user opts in with ``unsafe_deserialization`` (``--unsafe-deserialization``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from edgeqd.errors import ModelError
from edgeqd.models.safety import check_model_file
from edgeqd.atomic import atomic_file

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def load_model(path: str | Path, unsafe_deserialization: bool = False,
               custom_objects: Optional[dict[str, Any]] = None):
    """Load a ``.keras``, ``.h5`` or SavedModel Keras model, refusing code-carrying layers by default.

    Args:
        path: the model file or SavedModel folder.
        unsafe_deserialization: skip the code check (Lambda layers' code runs on load).
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
    if not unsafe_deserialization:
        # Decoded and walked before Keras sees the file: Keras' own safe_mode covers only .keras
        # Lambda bytecode, and nothing at all in .h5 and SavedModel files.
        check_model_file(path)
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
