"""Checks made before any training: setting values, a teacher and student that read the same
samples and predict the same classes, and a teacher that really outputs logits."""

from __future__ import annotations

import numpy as np

from edgeqd.errors import DistillationError, ModelError
from edgeqd.settings import DistillSettings

_DEFAULTS = DistillSettings()


def check_settings(temperature: float, alpha: float, feature_weight: float = _DEFAULTS.feature_weight,
                   attention_weight: float = _DEFAULTS.attention_weight) -> None:
    """Raise :class:`UsageError` for a temperature ≤ 0, α outside [0, 1], a negative weight or a non-finite one.

    These are option values, so a bad one is a usage error (exit 2), like every other bad
    option; :class:`DistillationError` stays for a teacher and student that do not fit.
    The bounds and messages are those of :class:`edgeqd.settings.DistillSettings`.

    Args:
        temperature: softmax temperature.
        alpha: weight of the teacher term.
        feature_weight: weight of feature terms.
        attention_weight: weight of attention terms.

    >>> check_settings(4.0, 1.5)
    Traceback (most recent call last):
    edgeqd.errors.UsageError: --alpha must be within [0, 1], got 1.5
    """
    DistillSettings(temperature=temperature, alpha=alpha, feature_weight=feature_weight,
                    attention_weight=attention_weight)


def check_compatible(teacher, student) -> None:
    """Raise :class:`DistillationError` when teacher and student differ in input shape or number of outputs.

    Args:
        teacher: the teacher (logits version).
        student: the student (logits version).

    >>> import tf_keras as keras
    >>> t = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> check_compatible(t, keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    Traceback (most recent call last):
    edgeqd.errors.DistillationError: the teacher has 3 outputs but the student 2; the student must predict the same classes
    """
    from edgeqd.models import model_signature

    try:
        teacher_input, teacher_classes = model_signature(teacher)
        student_input, student_classes = model_signature(student)
    except ModelError as exc:
        raise DistillationError(str(exc)) from None
    if teacher_classes != student_classes:
        raise DistillationError(f"the teacher has {teacher_classes} outputs but the student {student_classes}; "
                                "the student must predict the same classes")
    fits = len(teacher_input) == len(student_input) and all(
        t is None or s is None or t == s for t, s in zip(teacher_input, student_input))
    if not fits:
        shown = lambda shape: tuple(-1 if d is None else d for d in shape)  # noqa: E731
        raise DistillationError(f"the teacher takes inputs of shape {shown(teacher_input)} but the student "
                                f"{shown(student_input)}; both must read the same samples")


def check_teacher_outputs_logits(teacher, x_sample: np.ndarray) -> None:
    """Raise :class:`DistillationError` when the teacher's outputs look like probabilities.

    A softmax hidden inside a custom layer cannot be found by
    :func:`~edgeqd.distillation.layers.logits_model`; its outputs give it away: every
    row in [0, 1] and summing to 1.

    Args:
        teacher: the teacher (logits version).
        x_sample: a few input samples.

    >>> import numpy as np, tf_keras as keras
    >>> t = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, kernel_initializer="ones")])
    >>> check_teacher_outputs_logits(t, np.ones((1, 2), "float32"))  # logits 2, 2: fine
    """
    outputs = np.asarray(teacher(x_sample, training=False), dtype=np.float64)
    sums = outputs.sum(axis=-1)
    if outputs.min() >= 0.0 and outputs.max() <= 1.0 and np.abs(sums - 1.0).max() < 1e-3:
        raise DistillationError(
            f"the teacher outputs probabilities (on {len(outputs)} samples every value is in [0, 1] and each "
            f"row sums to 1 within {np.abs(sums - 1.0).max():.1e}) and no final softmax layer was found to take "
            "the logits from; save the teacher with a linear last layer (logits) and pass it again")


def check_distillable(teacher, dataset, builtin_student: bool) -> None:
    """Raise :class:`DistillationError` for a teacher logit distillation cannot learn from.

    Logit distillation matches softened class probabilities: a regression head (real-valued
    targets) or a single output (a softmax over one value is always 1) gives it nothing to match.
    The built-in students read float features, so a teacher on integer inputs (token ids) needs a
    student model of the user's own, with its own Embedding.

    Args:
        teacher: the teacher (logits version).
        dataset: the loaded data (:attr:`~edgeqd.types.Dataset.task`).
        builtin_student: the student is a built-in family (``--student cnn``…), not a model file.

    >>> import types
    >>> check_distillable(types.SimpleNamespace(outputs=[np.zeros((1, 1))], inputs=[np.zeros((1, 3))]),
    ...                   types.SimpleNamespace(regression=False), True)
    Traceback (most recent call last):
    edgeqd.errors.DistillationError: the teacher has a single output: logit distillation matches class probabilities, and a softmax over one value is always 1; distil classifiers (2 or more outputs), or train a regression student on the targets directly
    """
    if dataset.regression or int(teacher.outputs[0].shape[-1]) == 1:
        why = ("the data has regression targets: logit distillation matches class probabilities, which a regression "
               "head does not output" if dataset.regression else "the teacher has a single output: logit "
               "distillation matches class probabilities, and a softmax over one value is always 1")
        raise DistillationError(f"{why}; distil classifiers (2 or more outputs), or train a regression student on "
                                "the targets directly")
    dtype = getattr(teacher.inputs[0], "dtype", None)
    if builtin_student and getattr(dtype, "is_integer", False):
        raise DistillationError(f"the teacher reads {dtype.name} inputs (token ids, indices) but the built-in "
                                "students read float features; pass a student model of your own that takes the "
                                "same ids (e.g. with an Embedding): --student student.keras")
