"""The QAT stage: quantization-aware fine-tuning with TFMOT, with the teacher in the SGD steps.

:func:`train_qat` takes any real Keras model through :func:`edgeqd.quantization.prepare.prepare_qat`
(rewrites TFMOT rejects into equivalents, checks them, leaves the rest float) and
fine-tunes the fake-quant model. With a teacher, distillation happens in the SGD steps
(the loss and its T² factor come from :mod:`edgeqd.distillation`, the same code
``edgeqd distill`` trains with):

* ``schedule="joint"``: QAT with the distillation loss from the first step;
* ``schedule="two-phase"``: distil in float first, then QAT on the labels.

Without a teacher QAT trains on the labels alone (TFMOT's recipe). The pipeline then
hands the trained model to the quantized converters, so the ranges learnt in training
are the ones that ship.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from edgeqd.errors import DataError, ModelError, UsageError
from edgeqd.settings import QATSettings
from edgeqd.types import Dataset

ProgressCallback = Callable[[str, int, int], None]


@dataclass
class QATOutcome:
    """What the QAT stage produced.

    Attributes:
        model: the trained quantization-aware (fake-quant) ``tf_keras`` model.
        section: the manifest's ``quantize`` section (settings, rewrites, layers left
            float, training history, notes).
    """

    model: Any
    section: dict[str, Any] = field(default_factory=dict)


def _accuracy(model, x: np.ndarray, y: Optional[np.ndarray]) -> Optional[float]:
    if y is None:
        return None
    return float((model.predict(x, batch_size=256, verbose=0).argmax(1) == y).mean())


def _tf_data(x: np.ndarray, y: Optional[np.ndarray], batch_size: int, seed: int):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y.astype(np.int32)))
    return ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size).prefetch(2)


def _epoch_callback(phase: str, progress: ProgressCallback, offset: int, total: int, history: list):
    """A Keras callback that appends each epoch's figures to ``history`` and reports progress."""
    import tf_keras as keras

    def on_epoch_end(epoch, logs=None):
        figures = {k: round(float(v), 5) for k, v in (logs or {}).items()}
        history.append({"phase": phase, "epoch": epoch + 1, **figures})
        progress(f"{phase}: epoch {epoch + 1} done", offset + epoch + 1, total)

    return keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)


def _fit_distiller(student, teacher, x, y, settings: QATSettings, features, seed: int, callback) -> Any:
    """Train ``student`` (float or fake-quant) against ``teacher``; return the trained student."""
    import tf_keras as keras

    from edgeqd.distillation import Distiller

    distiller = Distiller(student, teacher, temperature=settings.temperature, alpha=settings.alpha,
                          features=features)
    distiller.compile(optimizer=keras.optimizers.Adam(settings.learning_rate))
    distiller.fit(_tf_data(x, y, settings.batch_size, seed), epochs=settings.epochs, verbose=0, callbacks=[callback])
    return distiller.student


def _fit_labels(model, x, y, settings: QATSettings, seed: int, callback) -> Any:
    """Train ``model`` on hard labels with cross-entropy on its logits."""
    import tf_keras as keras

    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    model.fit(_tf_data(x, y, settings.batch_size, seed), epochs=settings.epochs, verbose=0, callbacks=[callback])
    return model


def _copy(model):
    import tf_keras as keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def training_subset(dataset: Dataset, train_samples: Optional[int], seed: int):
    """The training inputs and labels, or ``train_samples`` of them drawn with ``seed``.

    Args:
        dataset: the data.
        train_samples: how many to keep (None = all).
        seed: seed of the draw.
    """
    x, y = dataset.x_train, dataset.y_train
    if train_samples is None or train_samples >= len(x):
        return x, y
    order = np.sort(np.random.default_rng(seed).permutation(len(x))[:train_samples])
    return x[order], None if y is None else y[order]


def check_qat_inputs(model, dataset: Dataset, settings: QATSettings, has_teacher: bool) -> None:
    """Refuse QAT runs that cannot learn anything, before any training.

    Args:
        model: the float model to fine-tune.
        dataset: its data.
        settings: the QAT settings.
        has_teacher: whether a teacher was given.
    """
    if not model.trainable_weights:
        raise ModelError(f"{model.name} has no trainable weights: there is nothing for quantization-aware "
                         "training to fine-tune (use post-training quantization)")
    if not has_teacher and dataset.y_train is None:
        raise DataError(f"{dataset.name} has no labels and no --teacher was given: quantization-aware "
                        "training needs labels or a teacher to learn from")
    if settings.features and not has_teacher:
        raise UsageError("--feature needs --teacher: feature distillation matches the teacher's activations")


def train_qat(model, dataset: Dataset, settings: QATSettings, *, teacher=None, teacher_name: Optional[str] = None,
              per_channel: bool = True, seed: int = 0, eval_samples: Optional[int] = None,
              progress: Optional[ProgressCallback] = None) -> QATOutcome:
    """Rewrite ``model`` for TFMOT and fine-tune it quantization-aware, distilling from ``teacher`` if given.

    Args:
        model: the float ``tf_keras`` model (not modified).
        dataset: the data (checked against the model already).
        settings: epochs, learning rate, schedule, distillation settings.
        teacher: a loaded teacher model, or None (labels only).
        teacher_name: how the manifest names the teacher (its path).
        per_channel: per-channel weight quantizers (TFMOT's default) or per tensor.
        seed: seed of data order, subsets and new weights.
        eval_samples: figures on the first N held-out samples only (None = all).
        progress: called as ``progress(step, done, total)``.

    Returns:
        The trained fake-quant model and the manifest's ``quantize`` section.

    >>> train_qat(model, dataset, QATSettings(epochs=1))  # doctest: +SKIP
    """
    import tf_keras as keras

    from edgeqd.distillation import (check_compatible, check_teacher_outputs_logits, logits_model,
                                     parse_layer_pairs)
    from edgeqd.quantization.prepare import prepare_qat

    report = progress or (lambda step, done, total: None)
    started = time.perf_counter()
    check_qat_inputs(model, dataset, settings, teacher is not None)
    features = parse_layer_pairs(settings.features)  # malformed pairs fail now, before any training
    notes: list[str] = []
    student_logits, note = logits_model(model, "student")
    notes += [note] if note else []
    teacher_model = None
    if teacher is not None:
        teacher_model, note = logits_model(teacher, "teacher")
        check_compatible(teacher_model, student_logits)
        check_teacher_outputs_logits(teacher_model, dataset.x_train[:32])
        notes += [note] if note else []
    x_train, y_train = training_subset(dataset, settings.train_samples, seed)
    x_eval = dataset.x_eval[:eval_samples]
    y_eval = None if dataset.y_eval is None else dataset.y_eval[:eval_samples]
    float_accuracy = _accuracy(student_logits, x_eval, y_eval)
    keras.utils.set_random_seed(seed)
    schedule = settings.schedule if teacher_model is not None else "labels"
    phases = 2 if schedule == "two-phase" else 1
    total = phases * settings.epochs + 1
    history: list[dict] = []
    float_student, float_after_phase1 = student_logits, None
    if schedule == "two-phase":
        report("two-phase: distilling in float", 0, total)
        float_student = _fit_distiller(_copy(student_logits), teacher_model, x_train, y_train, settings, features,
                                       seed, _epoch_callback("float distillation", report, 0, total, history))
        float_after_phase1 = _accuracy(float_student, x_eval, y_eval)
    report("rewriting for quantization", (phases - 1) * settings.epochs, total)
    prepared = prepare_qat(float_student, x_train, per_channel=per_channel, strict=settings.strict)
    callback = _epoch_callback("qat", report, (phases - 1) * settings.epochs, total, history)
    if schedule == "joint":
        qat_model = _fit_distiller(prepared.qat_model, teacher_model, x_train, y_train, settings, features, seed,
                                   callback)
    elif y_train is not None:
        qat_model = _fit_labels(prepared.qat_model, x_train, y_train, settings, seed, callback)
    else:  # two-phase without labels: the teacher's targets are the only signal left
        notes.append("no labels: the QAT phase of two-phase learns from the teacher's targets")
        qat_model = _fit_distiller(prepared.qat_model, teacher_model, x_train, None, settings, (), seed, callback)
    section = {**settings.to_dict(), "schedule": schedule, "train_samples": int(len(x_train)),
               "per_channel": per_channel, "seed": seed, "teacher": teacher_name if teacher_model is not None else None,
               "float_accuracy": float_accuracy,
               "teacher_accuracy": None if teacher_model is None else _accuracy(teacher_model, x_eval, y_eval),
               "float_accuracy_after_distillation": float_after_phase1, "fake_quant_accuracy":
                   _accuracy(qat_model, x_eval, y_eval), **prepared.to_dict(), "history": history, "notes": notes,
               "training_seconds": round(time.perf_counter() - started, 1)}
    return QATOutcome(model=qat_model, section=section)
