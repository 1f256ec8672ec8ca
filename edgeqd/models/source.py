"""Where a loaded model came from: which Keras wrote its file and, for a Keras 3 file, the proven translation.

:func:`edgeqd.models.load_model` returns a tf_keras model (what TFMOT and the rest of edgeqd work
on) and remembers its :class:`ModelSource` here, keyed by the model object (weakly: a model that is
dropped takes its record along). Stages that receive the model later ask :func:`model_source` —
the pipeline to write the manifest's ``input_model`` section and to prove a translation again on
the run's real data (:func:`prove_on_data`), distillation to give the student back in the flavour
the user brought.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from edgeqd.errors import ModelError

# Real samples a translation is proven on: enough to cover the input distribution's corners, few
# enough to cost well under a second for the applications' models at small inputs.
PROOF_SAMPLES = 64

_SOURCES: "weakref.WeakKeyDictionary[Any, ModelSource]" = weakref.WeakKeyDictionary()


@dataclass
class ModelSource:
    """What edgeqd knows of a loaded model's file.

    Attributes:
        path: the file or folder it was loaded from.
        flavour: ``"keras3"``, ``"tf_keras"`` or ``"saved_model_serving"`` (a layer-less SavedModel).
        format: ``"keras"``, ``"h5"`` or ``"saved_model"``.
        keras_version: the version that wrote the file, when it says.
        translation: for a Keras 3 file, the :class:`~edgeqd.models.keras3.Translation` (with its proof).
        saved_model_dir: for a layer-less SavedModel, the folder converters read the signature from.
    """

    path: Optional[str]
    flavour: str
    format: str
    keras_version: Optional[str] = None
    translation: Any = None
    saved_model_dir: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest's record of the source (merged into its ``input_model`` section)."""
        out: dict[str, Any] = {"flavour": self.flavour, "format": self.format, "keras_version": self.keras_version}
        if self.translation is not None:
            out["translation"] = {"to": "tf_keras", **self.translation.to_dict()}
        if self.saved_model_dir is not None:
            out["note"] = ("a SavedModel without Keras layers: converted from its serving signature "
                           "(post-training quantization only)")
        return out


def remember(model, source: ModelSource) -> None:
    """Record where ``model`` came from.

    Args:
        model: the loaded tf_keras model.
        source: its record.
    """
    _SOURCES[model] = source


def model_source(model) -> Optional[ModelSource]:
    """The record of a model :func:`edgeqd.models.load_model` loaded, or None (built in memory, or not a model).

    Args:
        model: any object.

    >>> model_source(object()) is None
    True
    """
    try:
        return _SOURCES.get(model)
    except TypeError:  # not weak-referenceable: not one of ours
        return None


def flavour_of(model, default: str = "tf_keras") -> str:
    """The flavour of the file ``model`` was loaded from, or ``default`` for a model built in memory.

    Args:
        model: a tf_keras model.
        default: the answer when edgeqd did not load it.
    """
    source = model_source(model)
    return source.flavour if source is not None else default


def prove_on_data(model, x: Optional[np.ndarray], what: str = "training data") -> Optional[dict[str, Any]]:
    """Prove a Keras 3 translation again on real inputs, replacing the random-input figures.

    Does nothing (returns None) for a model that was not translated.

    Args:
        model: a tf_keras model :func:`edgeqd.models.load_model` translated from Keras 3.
        x: real inputs in the model's input layout; the first :data:`PROOF_SAMPLES` are used.
        what: how the manifest names them.

    Returns:
        The parity figures, or None.

    Raises:
        ModelError: the two models differ by more than the tolerance on these inputs.
    """
    source = model_source(model)
    if source is None or source.translation is None or x is None or len(x) == 0:
        return None
    from edgeqd.models.keras3 import prove

    samples = np.asarray(x[:PROOF_SAMPLES])
    try:
        return prove(source.translation, model, samples, sample_source=what)
    except ModelError as exc:
        raise ModelError(f"{source.path}: {exc}") from None


def source_record(model, quantization_aware: bool = False) -> dict[str, Any]:
    """What the manifest's ``input_model`` section says of where ``model`` came from (empty when unknown).

    Args:
        model: the model a run converts.
        quantization_aware: whether the run fine-tunes it with QAT.

    >>> source_record(object())
    {}
    """
    source = model_source(model)
    if source is None:
        return {}
    record = source.to_dict()
    if source.flavour == "keras3":
        record["returned_as"] = (
            "int8 TFLite/ONNX artifacts: a quantization-aware model has no Keras 3 form" if quantization_aware
            else "TFLite/ONNX artifacts converted from the proven tf_keras translation")
    return record


def _spec_flavour(spec) -> Optional[str]:
    """The flavour of a model given as a loaded model or an existing file, None otherwise (a family name)."""
    from pathlib import Path

    if spec is None:
        return None
    if not isinstance(spec, (str, Path)):
        source = model_source(spec)
        return source.flavour if source is not None else None
    if not Path(spec).exists():
        return None
    from edgeqd.models.keras3 import detect_flavour

    try:
        return detect_flavour(spec)["flavour"]
    except ModelError:
        return None  # the loader says what is wrong with it


def brought_flavour(teacher, student=None) -> str:
    """The Keras a distilled student goes back in: the student file's when the user brought one, else the teacher's.

    Args:
        teacher: the teacher as given (a path or a model :func:`edgeqd.models.load_model` loaded).
        student: the student as given (a path, a model, a family name, or None).

    Returns:
        ``"keras3"`` or ``"tf_keras"`` (also for models built in memory).

    >>> brought_flavour("no-such-teacher.keras", "cnn")
    'tf_keras'
    """
    for spec in (student, teacher):
        flavour = _spec_flavour(spec)
        if flavour is not None:
            return "keras3" if flavour == "keras3" else "tf_keras"
    return "tf_keras"
