"""Decoupled knowledge distillation (DKD; Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022).

The KL·T² teacher term splits into two parts (their eq. 5): KD = TCKD + (1 − p_t^T)·NCKD,

- TCKD (target class): KL between the binary distributions [p_t, 1 − p_t] of teacher and
  student — how sure each is of the target class t;
- NCKD (non-target classes): KL between the teacher's and the student's distributions over
  the other classes, renormalised without t — the "dark knowledge".

In KD the NCKD part is weighed down by (1 − p_t^T): the better the teacher knows a sample,
the less its dark knowledge counts. DKD weighs the two freely:

    DKD = T²·(α·TCKD + β·NCKD)      (α = 1, β = 8, T = 4 in the paper's CIFAR-100 recipe;
                                     edgeqd defaults to β = 2 for problems with few classes)

The target is the label; on unlabelled data the teacher's top class, and with mixed
(soft) labels the largest share.
"""

from __future__ import annotations

import tensorflow as tf

from edgeqd.distillation.losses import DEFAULT_TEMPERATURE, DistillationLoss
from edgeqd.settings import DistillSettings

_DEFAULTS = DistillSettings()
DEFAULT_TCKD_WEIGHT = _DEFAULTS.tckd_weight
DEFAULT_NCKD_WEIGHT = _DEFAULTS.nckd_weight


def _target_mask(labels, teacher_logits):
    """One-hot of the target class: the label, the largest share of soft labels, or the teacher's top class."""
    classes = teacher_logits.shape[-1]
    if labels is None:
        target = tf.argmax(teacher_logits, axis=-1)
    elif len(labels.shape) == 2 and labels.shape[-1] == classes and classes != 1:
        target = tf.argmax(labels, axis=-1)
    else:
        target = tf.reshape(tf.cast(labels, tf.int64), [-1])
    return tf.one_hot(target, classes, dtype=tf.float32)


def _kl(p_log, q_log):
    """Σ p·(log p − log q) over the last axis, from log-probabilities."""
    return tf.reduce_sum(tf.exp(p_log) * (p_log - q_log), axis=-1)


def dkd_terms(teacher_logits, student_logits, labels=None, temperature: float = DEFAULT_TEMPERATURE) -> dict:
    """TCKD and NCKD, each already multiplied by T² and averaged over the batch: ``{"tckd", "nckd"}``.

    Args:
        teacher_logits: teacher outputs before softmax, (batch, classes).
        student_logits: student outputs before softmax, same shape.
        labels: integer labels (batch,), class probabilities (batch, classes), or None
            (the teacher's top class is the target).
        temperature: softmax temperature T > 0.

    >>> import numpy as np
    >>> {k: float(v) for k, v in dkd_terms(np.array([[2., 0., 0.]]), np.array([[2., 0., 0.]]), [0]).items()}
    {'tckd': 0.0, 'nckd': 0.0}
    """
    temperature = float(temperature)
    teacher = tf.cast(teacher_logits, tf.float32) / temperature
    student = tf.cast(student_logits, tf.float32) / temperature
    if not isinstance(labels, tf.Tensor) and labels is not None:
        labels = tf.convert_to_tensor(labels)
    mask = _target_mask(labels, teacher)
    # Binary [p_t, 1 − p_t] in log space: log p_t and log Σ_{j≠t} p_j, both by logsumexp.
    big = 1e9  # removes a class from a logsumexp without inf − inf
    t_log_z, s_log_z = tf.reduce_logsumexp(teacher, -1), tf.reduce_logsumexp(student, -1)
    t_target = tf.reduce_sum(teacher * mask, -1) - t_log_z
    s_target = tf.reduce_sum(student * mask, -1) - s_log_z
    t_rest = tf.reduce_logsumexp(teacher - big * mask, -1) - t_log_z
    s_rest = tf.reduce_logsumexp(student - big * mask, -1) - s_log_z
    tckd = _kl(tf.stack([t_target, t_rest], -1), tf.stack([s_target, s_rest], -1))
    # Non-target distributions: softmax over the other classes only (the target masked out).
    t_other = tf.nn.log_softmax(teacher - big * mask, -1)
    s_other = tf.nn.log_softmax(student - big * mask, -1)
    # The masked class has probability 0 on both sides: its p·(log p − log q) is 0·finite.
    nckd = tf.reduce_sum(tf.exp(t_other) * (t_other - s_other) * (1.0 - mask), -1)
    scale = temperature ** 2
    return {"tckd": scale * tf.reduce_mean(tckd), "nckd": scale * tf.reduce_mean(nckd)}


def dkd_loss(teacher_logits, student_logits, labels=None, temperature: float = DEFAULT_TEMPERATURE,
             tckd_weight: float = DEFAULT_TCKD_WEIGHT, nckd_weight: float = DEFAULT_NCKD_WEIGHT):
    """T²·(α·TCKD + β·NCKD), a scalar (see :func:`dkd_terms`).

    Args:
        teacher_logits: teacher outputs before softmax, (batch, classes).
        student_logits: student outputs before softmax, same shape.
        labels: integer labels, class probabilities, or None (teacher's top class).
        temperature: softmax temperature T > 0.
        tckd_weight: α, the weight of the target-class part.
        nckd_weight: β, the weight of the non-target-class part.

    >>> import numpy as np
    >>> float(dkd_loss(np.array([[1., 0.]]), np.array([[1., 0.]]), [0]))
    0.0
    """
    terms = dkd_terms(teacher_logits, student_logits, labels, temperature)
    return float(tckd_weight) * terms["tckd"] + float(nckd_weight) * terms["nckd"]


class DecoupledKD(DistillationLoss):
    """The teacher term of DKD: T²·(α·TCKD + β·NCKD) (see :func:`dkd_loss`); a drop-in for
    :class:`~edgeqd.distillation.losses.LogitsDistillation`.

    Args:
        temperature: softmax temperature T > 0.
        tckd_weight: α, the weight of the target-class part (paper: 1).
        nckd_weight: β, the weight of the non-target-class part (paper: 8 on CIFAR-100,
            0.5 on ImageNet; edgeqd's default 2 suits ~10 classes).

    >>> import numpy as np
    >>> float(DecoupledKD(4.0).compute_loss(np.array([[1., 0.]]), np.array([[1., 0.]]), np.array([1])))
    0.0
    """

    name = "kd"  # the teacher term, under the same key as LogitsDistillation's

    def __init__(self, temperature: float = DEFAULT_TEMPERATURE, tckd_weight: float = DEFAULT_TCKD_WEIGHT,
                 nckd_weight: float = DEFAULT_NCKD_WEIGHT):
        DistillSettings(temperature=temperature, tckd_weight=tckd_weight, nckd_weight=nckd_weight)  # the checks
        self.temperature = float(temperature)
        self.tckd_weight = float(tckd_weight)
        self.nckd_weight = float(nckd_weight)

    def compute_loss(self, teacher_output, student_output, labels=None):
        return dkd_loss(teacher_output, student_output, labels, self.temperature, self.tckd_weight,
                        self.nckd_weight)

    def __repr__(self) -> str:
        return (f"DecoupledKD(temperature={self.temperature:g}, tckd_weight={self.tckd_weight:g}, "
                f"nckd_weight={self.nckd_weight:g})")
