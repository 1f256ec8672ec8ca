"""Which Keras wrote a model file, and loading Keras 3 files with Keras 3."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Optional

from .common import KERAS3, SERVING, TF_KERAS, ModelError


def _major(version: Optional[str]) -> Optional[int]:
    """The major number of a version string such as ``"3.15.1"``, or None."""
    try:
        return int(str(version).split(".")[0])
    except (TypeError, ValueError):
        return None


def detect_flavour(path: str | Path) -> dict[str, Any]:
    """Which Keras wrote a model file, from its metadata alone.

    Args:
        path: a ``.keras`` file, an ``.h5``/``.hdf5`` file or a SavedModel folder.

    Raises:
        ModelError: missing, unreadable or of an unknown kind (exit 3).

    Returns:
        ``{"flavour": "keras3" | "tf_keras" | "saved_model_serving", "format": ..., "keras_version": ...}``.
        ``saved_model_serving`` is a SavedModel without Keras layers (Keras 3 ``model.export()``,
        tf_keras ``model.export()`` or plain ``tf.saved_model.save``): usable for PTQ only.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ModelError(f"{path} is a folder without saved_model.pb; give a .keras, .h5 or SavedModel")
        from edgeqd.models.safety import stored_configs

        # tf_keras SavedModels keep their layers' configs in keras_metadata.pb (or, before TF 2.5, in
        # saved_model.pb); Keras 3 model.export() and tf.saved_model.save keep none: a serving graph.
        has_layers = bool(stored_configs(path))
        return {"flavour": TF_KERAS if has_layers else SERVING, "format": "saved_model", "keras_version": None}
    if path.suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                meta = json.loads(archive.read("metadata.json")) if "metadata.json" in names else {}
                config = json.loads(archive.read("config.json"))
        except (zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise ModelError(f"{path}: not a valid .keras archive ({type(exc).__name__}: {exc})") from None
        version = meta.get("keras_version")
        major = _major(version)
        if major is None:  # no metadata: Keras 3 writes its private module paths into config.json
            module = config.get("module", "") if isinstance(config, dict) else ""
            major = 3 if str(module).startswith("keras.src") else 2
        return {"flavour": KERAS3 if major >= 3 else TF_KERAS, "format": "keras", "keras_version": version}
    if path.suffix in (".h5", ".hdf5"):
        import h5py

        try:
            with h5py.File(path, "r") as handle:
                attrs = {k: handle.attrs[k] for k in ("keras_version", "backend", "model_config")
                         if k in handle.attrs}
        except OSError as exc:
            raise ModelError(f"{path}: not a readable HDF5 file ({exc})") from None
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        if "model_config" not in attrs:
            raise ModelError(f"{path} holds weights only (no model_config); save the whole model")
        version = attrs.get("keras_version")
        major = _major(version) or 2
        return {"flavour": KERAS3 if major >= 3 else TF_KERAS, "format": "h5", "keras_version": version,
                "backend": attrs.get("backend")}
    raise ModelError(f"{path}: unknown model format {path.suffix!r}; give a .keras, .h5 or SavedModel folder")


def stored_config(path: Path, fmt: str) -> dict:
    """The JSON configuration stored in a ``.keras`` (``fmt="keras"``) or ``.h5`` file (already checked by safety)."""
    if fmt == "keras":
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    import h5py

    with h5py.File(path, "r") as handle:
        text = handle.attrs["model_config"]
    return json.loads(text.decode() if isinstance(text, bytes) else text)


def _operation_class(class_name: str):
    """The Keras 3 operation class of that name (``keras.src.ops.*``), or None."""
    from keras.src.ops import core, image, linalg, math, nn, numpy

    for module in (numpy, core, nn, math, image, linalg):
        candidate = getattr(module, class_name, None)
        if isinstance(candidate, type):
            return candidate
    return None


def load_keras3(path: Path, info: dict, unsafe: bool, custom_objects: Optional[dict] = None):
    """Load a Keras 3 file with Keras 3, working around Keras 3's own .h5 bug for operations.

    Args:
        path: the ``.keras``/``.h5`` file (its configuration already walked by :mod:`edgeqd.models.safety`).
        info: what :func:`detect_flavour` said about it.
        unsafe: load with Keras' ``safe_mode`` off (``--unsafe-deserialization``).
        custom_objects: extra classes Keras needs to rebuild custom layers.

    Keras 3 writes ``x + 3.0`` (an operation, e.g. inside MobileNetV3) into a legacy .h5 as
    ``{"class_name": "Add", "config": {"name": ...}}`` without a module, and reads it back as the
    *layer* ``Add``, which fails ("Only input tensors may be passed as positional arguments").
    Operation entries are recognisable (their config holds only a name), so they are renamed to
    private class names bound to the operation classes and the model is rebuilt from the config.
    """
    import keras

    try:
        return keras.saving.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=not unsafe)
    except Exception as exc:
        error = exc
    hint = ""
    if info["format"] == "h5":
        try:
            repaired = _load_keras3_h5_with_ops(path, unsafe)
        except Exception:  # the original error is the one worth showing
            repaired = None
        if repaired is not None:
            return repaired
        # e.g. Attention: the legacy reader turns score_mode="dot" into the function keras.ops.dot
        hint = ("; Keras 3 cannot always read back the legacy .h5 it writes: load the model where it was "
                "built and save it with model.save('model.keras')")
    first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    raise ModelError(f"{path}: Keras {info['keras_version']} cannot load it ({type(error).__name__}: "
                     f"{first}){hint}") from None


def _load_keras3_h5_with_ops(path: Path, unsafe: bool):
    """The model rebuilt from a Keras 3 ``.h5`` whose operation entries are bound to ``keras.src.ops``; None
    when the file holds no operation entry (then the original error stands)."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format, saving_options, saving_utils
    from keras.src.saving import serialization_lib

    config = stored_config(path, "h5")
    custom: dict[str, Any] = {}

    def repair(obj):
        if isinstance(obj, dict):
            cfg = obj.get("config")
            # layers always record trainable/dtype; an operation's config holds its name alone
            operation = (_operation_class(obj["class_name"]) if isinstance(cfg, dict) and set(cfg) <= {"name"}
                         and "inbound_nodes" in obj and isinstance(obj.get("class_name"), str) else None)
            if operation is not None:
                private = f"_edgeqd_op_{obj['class_name']}"
                custom[private] = operation
                obj["class_name"] = private
            for value in obj.values():
                repair(value)
        elif isinstance(obj, list):
            for value in obj:
                repair(value)

    repair(config)
    if not custom:
        return None
    with saving_options.keras_option_scope(use_legacy_config=True), serialization_lib.SafeModeScope(not unsafe):
        model = saving_utils.model_from_config(config, custom_objects=custom)
        with h5py.File(path, "r") as handle:
            legacy_h5_format.load_weights_from_hdf5_group(handle["model_weights"], model)
    return model
