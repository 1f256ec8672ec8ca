"""The QAT stage: calibrated quantization-aware fine-tuning that starts where PTQ ends.

:func:`train_qat` takes any real Keras model through :func:`edgeqd.quantization.prepare.prepare_qat`
(rewrites TFMOT rejects into equivalents, checks them, leaves the rest float), then:

1. **calibrates** every fake-quant range on real data before the first step
   (:func:`edgeqd.quantization.calibrate.calibrate_ranges`) — TFMOT's default [−6, 6]
   ranges with a 0.999 moving average cost fer's mini-Xception 30 points — and freezes
   the batch norms on their moving statistics;
2. **fine-tunes** by distillation: from the user's own float model by default
   (self-distillation: the int8 model learns to compute what the float model computes),
   from ``teacher`` when one is given (``schedule="joint"``: in every step, with
   ``--feature`` terms; ``"two-phase"``: distil the float model first, then QAT from it);
3. **keeps the best epoch** on a validation split held out of the training data, judged
   by top-1 agreement (then KL divergence) with the model it aims at, the untrained
   calibrated state counted as epoch 0 (:mod:`edgeqd.quantization.finetune`).

The pipeline then compares the QAT int8 artifact with PTQ's on the same validation split
and ships the better (:mod:`edgeqd.qat_stage`).
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
# Calibration samples when the caller gives none: TFLite's PTQ converter is usually given
# a few hundred; the ranges hardly move past 200 on the models checked.
DEFAULT_CALIBRATION_SAMPLES = 200
# α when --alpha is not given: only the teacher term when the teacher is the float model
# itself (the labels would pull the int8 model away from the function it should keep).
SELF_DISTILLATION_ALPHA = 1.0
TEACHER_ALPHA = 0.3


@dataclass
class QATOutcome:
    """What the QAT stage produced.

    Attributes:
        model: the quantization-aware (fake-quant) ``tf_keras`` model at its best epoch; it
            outputs logits.
        section: the manifest's ``quantize`` section (settings, rewrites, layers left
            float, calibration, epochs and their validation figures, notes).
        validation: indices (into the training data used) of the validation split.
        target_logits: logits of the model the run aims at on the validation split (the
            float model, or the teacher in joint mode, or the float model distilled from it).
        softmax: whether the user's model ends in a softmax that the QAT model leaves out.
    """

    model: Any
    section: dict[str, Any] = field(default_factory=dict)
    validation: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    target_logits: Optional[np.ndarray] = None
    softmax: bool = False


def _accuracy(model, x: np.ndarray, y: Optional[np.ndarray]) -> Optional[float]:
    if y is None:
        return None
    return float((model.predict(x, batch_size=256, verbose=0).argmax(1) == y).mean())


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
    if not has_teacher and not settings.self_distill and dataset.y_train is None:
        raise DataError(f"{dataset.name} has no labels, no --teacher was given and --no-self-distill is set: "
                        "quantization-aware training needs labels or a teacher to learn from")
    if settings.features and not has_teacher:
        raise UsageError("--feature needs --teacher: feature distillation matches the teacher's activations")
    if len(dataset.x_train) < 2:
        raise DataError(f"{dataset.name} has {len(dataset.x_train)} training sample(s): quantization-aware "
                        "training needs at least 2 (one to train on, one to validate)")


class _DistillerEpochs:
    """The distillation package's Distiller trained one epoch at a time (for --feature terms)."""

    def __init__(self, student, teacher, x, y, settings: QATSettings, alpha: float, features, seed: int):
        import tensorflow as tf
        import tf_keras as keras

        from edgeqd.distillation import Distiller

        self.distiller = Distiller(student, teacher, temperature=settings.temperature, alpha=alpha,
                                   features=features)
        self.distiller.compile(optimizer=keras.optimizers.Adam(settings.learning_rate))
        data = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y.astype(np.int32)))
        self.data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(settings.batch_size)

    def epoch(self) -> dict:
        logs = self.distiller.fit(self.data, epochs=1, verbose=0).history
        return {k: round(float(v[-1]), 5) for k, v in logs.items()}


def _distil_float(student, teacher, x, y, settings: QATSettings, alpha: float, features, seed: int) -> Any:
    """Two-phase, phase 1: distil the float student from the teacher (``settings.epochs`` epochs)."""
    trainer = _DistillerEpochs(_copy(student), teacher, x, y, settings, alpha, features, seed)
    for _ in range(settings.epochs):
        trainer.epoch()
    return trainer.distiller.student


def _plan(settings: QATSettings, teacher_model) -> tuple[str, float]:
    """The run's schedule name and α."""
    if teacher_model is not None:
        schedule = settings.schedule
    else:
        schedule = "self-distillation" if settings.self_distill else "labels"
    default = TEACHER_ALPHA if schedule == "joint" else SELF_DISTILLATION_ALPHA
    alpha = 0.0 if schedule == "labels" else (settings.alpha if settings.alpha is not None else default)
    return schedule, alpha


def _logits_models(model, teacher, dataset: Dataset) -> tuple[Any, Any, list[str]]:
    """The student and the teacher as logits models (a final softmax skipped), checked; and notes."""
    from edgeqd.distillation import check_compatible, check_teacher_outputs_logits, logits_model

    student_logits, note = logits_model(model, "student")
    # The artifacts end in the softmax again (edgeqd.converters.export): only training skips it.
    notes = [f"{model.name}'s final softmax is left out while training (QAT trains on the logits); its "
             "artifacts end in it, as the model does"] if note else []
    teacher_model = None
    if teacher is not None:
        teacher_model, note = logits_model(teacher, "teacher")
        check_compatible(teacher_model, student_logits)
        check_teacher_outputs_logits(teacher_model, dataset.x_train[:32])
        notes += [note] if note else []
    return student_logits, teacher_model, notes


def train_qat(model, dataset: Dataset, settings: QATSettings, *, teacher=None, teacher_name: Optional[str] = None,
              per_channel: bool = True, seed: int = 0, eval_samples: Optional[int] = None,
              calibration: Optional[np.ndarray] = None, progress: Optional[ProgressCallback] = None) -> QATOutcome:
    """Rewrite ``model`` for TFMOT, calibrate its ranges and fine-tune it, keeping the best epoch.

    Args:
        model: the float ``tf_keras`` model (not modified).
        dataset: the data (checked against the model already).
        settings: epochs, learning rate, schedule, distillation and validation settings.
        teacher: a loaded teacher model, or None (the float model teaches itself).
        teacher_name: how the manifest names the teacher (its path).
        per_channel: per-channel weight quantizers (TFMOT's default) or per tensor.
        seed: seed of data order, subsets, the validation split and new weights.
        eval_samples: figures on the first N held-out samples only (None = all).
        calibration: the samples to calibrate the ranges on (PTQ's, so that epoch 0 is
            PTQ); None = the first 200 fine-tuning samples.
        progress: called as ``progress(step, done, total)``.

    Returns:
        The fake-quant model at its best epoch, the manifest's ``quantize`` section and the
        validation split.

    >>> train_qat(model, dataset, QATSettings(epochs=1))  # doctest: +SKIP
    """
    import tf_keras as keras

    from edgeqd.distillation import parse_layer_pairs
    from edgeqd.quantization.calibrate import agreement_and_kl, calibrate_ranges, freeze_batchnorm
    from edgeqd.quantization.finetune import KDTrainer, best_epoch, validation_split
    from edgeqd.quantization.prepare import prepare_qat

    report = progress or (lambda step, done, total: None)
    started = time.perf_counter()
    check_qat_inputs(model, dataset, settings, teacher is not None)
    features = parse_layer_pairs(settings.features)  # malformed pairs fail now, before any training
    student_logits, teacher_model, notes = _logits_models(model, teacher, dataset)
    x_train, y_train = training_subset(dataset, settings.train_samples, seed)
    fit, validation = validation_split(len(x_train), settings.validation_samples, seed)
    x_fit, y_fit, x_val = x_train[fit], None if y_train is None else y_train[fit], x_train[validation]
    x_eval = dataset.x_eval[:eval_samples]
    y_eval = None if dataset.y_eval is None else dataset.y_eval[:eval_samples]
    keras.utils.set_random_seed(seed)
    schedule, alpha = _plan(settings, teacher_model)
    total = settings.epochs * (2 if schedule == "two-phase" else 1) + 2
    float_student, float_after_phase1 = student_logits, None
    if schedule == "two-phase":
        report("two-phase: distilling in float", 0, total)
        float_student = _distil_float(student_logits, teacher_model, x_fit, y_fit, settings, TEACHER_ALPHA,
                                      features, seed)
        float_after_phase1 = _accuracy(float_student, x_eval, y_eval)
    done = total - settings.epochs - 2
    report("rewriting for quantization", done, total)
    prepared = prepare_qat(float_student, x_fit, per_channel=per_channel, strict=settings.strict)
    qat_model = prepared.qat_model
    samples = x_fit[:DEFAULT_CALIBRATION_SAMPLES] if calibration is None else calibration
    ranges = calibrate_ranges(qat_model, prepared.float_model, samples)
    frozen = freeze_batchnorm(qat_model)
    # What the run aims at: the teacher when it teaches every step, else the float model QAT quantizes.
    target = teacher_model if schedule == "joint" else float_student
    target_val = target.predict(x_val, batch_size=256, verbose=0)
    if features:
        train_epoch = _DistillerEpochs(qat_model, teacher_model, x_fit, y_fit, settings, alpha, features, seed).epoch
    else:
        # The teacher is frozen and sees no augmentation: its logits are computed once.
        teacher_logits = None if alpha == 0 else target.predict(x_fit, batch_size=256, verbose=0)
        kd = KDTrainer(qat_model, x_fit, teacher_logits, y_fit, temperature=settings.temperature, alpha=alpha,
                       learning_rate=settings.learning_rate, batch_size=settings.batch_size, seed=seed)

        def train_epoch() -> dict:
            return {"loss": round(kd.epoch(), 5)}

    def evaluate() -> dict:
        agreement, kl = agreement_and_kl(qat_model.predict(x_val, batch_size=256, verbose=0), target_val)
        return {"agreement": round(agreement, 5), "kl": float(f"{kl:.4g}")}

    def epoch_done(epoch: int, figures: dict) -> None:
        report(f"qat: epoch {epoch} of {settings.epochs}: agreement {100 * figures['agreement']:.2f}% "
               "on the validation split", done + 1 + epoch, total)

    chosen, history = best_epoch(qat_model, train_epoch, evaluate, settings.epochs, len(x_val), epoch_done)
    section = {**settings.to_dict(), "alpha": alpha, "schedule": schedule, "train_samples": int(len(x_fit)),
               "validation_samples": int(len(x_val)), "per_channel": per_channel, "seed": seed,
               "teacher": teacher_name if teacher_model is not None else "the float model itself"
               if schedule == "self-distillation" else None,
               "float_accuracy": _accuracy(student_logits, x_eval, y_eval),
               "teacher_accuracy": None if teacher_model is None else _accuracy(teacher_model, x_eval, y_eval),
               "float_accuracy_after_distillation": float_after_phase1,
               "fake_quant_accuracy": _accuracy(qat_model, x_eval, y_eval), **prepared.to_dict(),
               "range_calibration": {**ranges, "samples": int(len(samples))}, "frozen_batch_norms": frozen,
               "selection": {"target": {"joint": "teacher", "two-phase": "float model distilled from the teacher"}
                             .get(schedule, "float model"), "best_epoch": chosen,
                             "rule": "top-1 agreement with the target; within 1/sqrt(n), the lower KL"},
               "history": history, "notes": notes, "training_seconds": round(time.perf_counter() - started, 1)}
    return QATOutcome(model=qat_model, section=section, validation=validation, target_logits=target_val,
                      softmax=student_logits is not model)
