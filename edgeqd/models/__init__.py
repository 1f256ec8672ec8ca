"""Loading and saving Keras models safely, whichever Keras wrote them.

Models load with Keras' ``safe_mode``. Before Keras sees a file, its stored configuration is
decoded and walked (:mod:`edgeqd.models.safety`): a model holding code that would run on load
(Lambda layers, TF op layers calling non-math functions, modules Keras would import) is
refused unless the user opts in with ``unsafe_deserialization`` (``--unsafe-deserialization``).

Keras 3 files are loaded with Keras 3 and translated to tf_keras, the proof of parity included
(:mod:`edgeqd.models.keras3`); where each model came from is remembered
(:mod:`edgeqd.models.source`) so that students go back in the flavour the user brought
(:func:`save_model` with ``flavour="keras3"``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from edgeqd.errors import ModelError
from edgeqd.models.safety import check_model_file
from edgeqd.models.source import (ModelSource, brought_flavour, flavour_of, model_source, prove_on_data,
                                  remember, source_record)
from edgeqd.atomic import atomic_file

__all__ = ["load_model", "load_own_model", "load_serving_model", "is_serving_saved_model", "save_model", "save_keras3",
           "model_signature", "file_sha256", "describe_model", "ModelSource", "model_source", "flavour_of",
           "brought_flavour", "prove_on_data", "source_record", "MODEL_SUFFIXES"]

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
SERVING_REFUSAL = ("is a SavedModel without Keras layers (e.g. Keras 3 model.export()): post-training "
                   "quantization works from its serving signature (edgeqd convert without --mode qat), but "
                   "quantization-aware training and distillation need the layers; pass the .keras file the "
                   "model was exported from")


def _check_path(path: Path) -> None:
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ModelError(f"{path} is a folder without saved_model.pb; give a .keras, .h5 or SavedModel")
    elif path.suffix not in MODEL_SUFFIXES:
        raise ModelError(f"{path}: unknown model format {path.suffix!r}; give a .keras, .h5 or SavedModel folder")


def load_model(path: str | Path, unsafe_deserialization: bool = False,
               custom_objects: Optional[dict[str, Any]] = None, samples=None):
    """Load a ``.keras``, ``.h5`` or SavedModel Keras model, refusing code-carrying layers by default.

    A Keras 3 file is loaded with Keras 3, translated to tf_keras layer by layer and proven: both
    models' outputs must agree within 1e-5 of the output scale on ``samples`` (random inputs of
    the right shape and dtype when None; :func:`prove_on_data` proves it again on real data).
    Every load reserves the model's layer names (TFMOT hangs on collisions otherwise).

    Args:
        path: the model file or SavedModel folder.
        unsafe_deserialization: skip the code check (Lambda layers' code runs on load).
        custom_objects: extra classes Keras needs to rebuild custom layers.
        samples: real inputs to prove a Keras 3 translation on (an array, or one per input).

    Returns:
        The ``tf_keras`` model, not compiled; :func:`model_source` tells where it came from.

    Raises:
        ModelError: missing, corrupt, code-carrying, a layer-less SavedModel, or a Keras 3 model
            that does not translate (naming the layers) or whose translation differs (exit 3).

    >>> load_model("missing.keras")
    Traceback (most recent call last):
    edgeqd.errors.ModelError: model not found: missing.keras
    """
    path = Path(path)
    _check_path(path)
    if not unsafe_deserialization:
        # Decoded and walked before Keras sees the file: Keras' own safe_mode covers only .keras
        # Lambda bytecode, and nothing at all in .h5 and SavedModel files.
        check_model_file(path)
    from edgeqd.models import keras3

    info = keras3.detect_flavour(path)
    if info["flavour"] == keras3.SERVING:
        raise ModelError(f"{path} {SERVING_REFUSAL}")
    translation = None
    if info["flavour"] == keras3.KERAS3:
        model, translation = keras3.load_keras3_file(path, info, unsafe_deserialization, custom_objects, samples)
    else:
        model = _load_tf_keras(path, unsafe_deserialization, custom_objects)
    remember(model, ModelSource(str(path), info["flavour"], info["format"], info.get("keras_version"), translation))
    return model


def _load_tf_keras(path: Path, unsafe_deserialization: bool, custom_objects: Optional[dict[str, Any]]):
    """A tf_keras (Keras 2) file loaded with tf_keras, its layer names reserved."""
    import tf_keras as keras

    from edgeqd.models.keras3 import register_activations, reserve_layer_names

    register_activations()  # translated models saved by tf_keras name Keras 3 activations edgeqd registers
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
    reserve_layer_names(model)
    return model


def load_own_model(path: str | Path):
    """Load a tf_keras model that edgeqd itself saved in this run (e.g. for a child process) — no safety walk.

    The parent checked the user's file before saving this copy. Like every load, it registers the
    Keras 3 activations a translated model may use (tf_keras needs them to rebuild it) and reserves
    the model's layer names (TFMOT's ``quantize_model`` loops forever on name collisions otherwise).

    Args:
        path: a ``.keras`` file written by edgeqd.

    Returns:
        The tf_keras model, not compiled.
    """
    import tf_keras as keras

    from edgeqd.models.keras3 import register_activations, reserve_layer_names

    register_activations()
    model = keras.models.load_model(path, compile=False, safe_mode=False)
    reserve_layer_names(model)
    return model


def load_serving_model(path: str | Path):
    """A layer-less SavedModel (Keras 3 ``model.export()``) wrapped for post-training quantization only.

    Args:
        path: the SavedModel folder (already checked by :func:`load_model`'s rules).

    Returns:
        A tf_keras model calling the serving signature; its :class:`ModelSource` carries
        ``saved_model_dir``, from which the converters read the signature.
    """
    from edgeqd.models import keras3

    path = Path(path)
    model = keras3.serving_model(path)
    remember(model, ModelSource(str(path), keras3.SERVING, "saved_model", saved_model_dir=str(path)))
    return model


def is_serving_saved_model(path: str | Path) -> bool:
    """Whether ``path`` is a SavedModel folder without Keras layers (Keras 3 ``model.export()``).

    Args:
        path: a model path.
    """
    from edgeqd.models import keras3

    path = Path(path)
    return path.is_dir() and (path / "saved_model.pb").exists() and \
        keras3.detect_flavour(path)["flavour"] == keras3.SERVING


def save_model(model, path: str | Path, force: bool = False, *, flavour: str = "tf_keras", samples=None) -> Path:
    """Save a Keras model atomically (temporary name, then rename), as tf_keras or as Keras 3.

    Args:
        model: the ``tf_keras`` model.
        path: destination (``.keras`` or ``.h5``; Keras 3 only ``.keras``).
        force: replace an existing file.
        flavour: ``"tf_keras"``, or ``"keras3"`` to write a Keras 3 file verified by reloading it
            with Keras 3 (:func:`save_keras3`).
        samples: inputs for the Keras 3 check (random ones when None).
    """
    path = Path(path)
    if flavour == "keras3":
        save_keras3(model, path, force=force, samples=samples)
        return path
    if path.suffix not in (".keras", ".h5"):
        raise ModelError(f"{path}: save models as .keras or .h5")
    if path.suffix == ".h5" and _uses_registered_activations(model):
        raise ModelError(f"{path}: the model uses Keras 3 activations edgeqd registers with tf_keras, which "
                         "tf_keras' .h5 format cannot hold; save it as .keras")
    with atomic_file(path, force=force, suffix=path.suffix) as tmp:
        model.save(tmp)
    return path


def _uses_registered_activations(model) -> bool:
    from edgeqd.models.keras3.common import all_layers

    return any(getattr(getattr(layer, attr, None), "__name__", "").startswith("k3_")
               for layer in all_layers(model) for attr in ("activation", "recurrent_activation"))


def save_keras3(model, path: str | Path, force: bool = False, samples=None) -> dict[str, Any]:
    """Write a tf_keras model as a Keras 3 ``.keras`` file, atomically, verified by reloading it with Keras 3.

    Args:
        model: a tf_keras model without TFMOT wrappers (a float student).
        path: destination ``.keras`` file.
        force: replace an existing file.
        samples: inputs for the check (an array; random ones when None).

    Returns:
        The parity figures of the Keras 3 file against ``model`` (``max_abs_diff``, ``relative_diff``, ...).

    Raises:
        ModelError: not ``.keras``, a layer with no Keras 3 translation, or a file that computes
            something else (exit 3).
    """
    from edgeqd.models.keras3 import to_keras3

    path = Path(path)
    if path.suffix != ".keras":
        raise ModelError(f"{path}: a Keras 3 model is written as .keras (Keras 3 cannot always read back "
                         "the legacy .h5 it writes)")
    if samples is not None:
        samples = samples[:64]
    with atomic_file(path, force=force, suffix=".keras") as tmp:
        return to_keras3(model, tmp, samples=samples)


def model_signature(model) -> tuple[tuple[Optional[int], ...], int]:
    """The model's per-sample input shape and its number of outputs (classes).

    Args:
        model: a single-input, single-output Keras model.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{model.name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "edgeqd handles single-input, single-output models (a classifier or a regression "
                         "head): export each output as a model of its own, or concatenate the inputs into one")
    input_shape = tuple(model.inputs[0].shape[1:])
    output_shape = tuple(model.outputs[0].shape[1:])
    if len(output_shape) != 1 or output_shape[0] is None:
        raise ModelError(f"{model.name} outputs shape {output_shape}; expected one vector per sample "
                         "(num_classes,) or (num_targets,): flatten or pool the output")
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
