"""Learning-rate schedules of a distillation run (``--schedule constant|cosine``, ``--warmup-epochs``).

Patient distillation (Beyer et al. 2022) trains with a cosine decay after a linear warm-up:
the warm-up keeps the first steps of a freshly initialised student from overshooting, the
decay lets it settle on the teacher's function at the end instead of bouncing around it.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine decay to 0 at ``total_steps``.

    rate(step) = peak·step/warmup_steps while step < warmup_steps, then
    peak·½·(1 + cos(π·(step − warmup_steps)/(total_steps − warmup_steps))); 0 after ``total_steps``.

    Args:
        peak: the highest learning rate, reached at the end of the warm-up.
        total_steps: optimizer steps of the whole run (epochs × steps per epoch).
        warmup_steps: steps of the linear warm-up (less than ``total_steps``).

    >>> schedule = WarmupCosine(1e-3, total_steps=100, warmup_steps=10)
    >>> [round(float(schedule(step)), 6) for step in (0, 5, 10, 55, 100)]
    [0.0, 0.0005, 0.001, 0.0005, 0.0]
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0):
        super().__init__()
        self.peak = float(peak)
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps - 1))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = float(self.warmup_steps)
        decay_steps = float(self.total_steps - self.warmup_steps)
        progress = tf.clip_by_value((step - warmup) / decay_steps, 0.0, 1.0)
        cosine = self.peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
        if not self.warmup_steps:
            return cosine
        return tf.where(step < warmup, self.peak * step / warmup, cosine)

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


def learning_rate(schedule: str, peak: float, epochs: int, steps_per_epoch: int, warmup_epochs: int = 0):
    """What the optimizer gets: ``peak`` itself (constant) or a :class:`WarmupCosine`.

    Args:
        schedule: ``"constant"`` or ``"cosine"``.
        peak: the (peak) learning rate.
        epochs: most epochs of the run.
        steps_per_epoch: optimizer steps per epoch.
        warmup_epochs: epochs of linear warm-up (cosine only).

    >>> learning_rate("constant", 1e-3, 10, 100)
    0.001
    >>> learning_rate("cosine", 1e-3, 10, 100, 1).warmup_steps
    100
    """
    if schedule == "constant":
        return float(peak)
    return WarmupCosine(peak, epochs * steps_per_epoch, warmup_epochs * steps_per_epoch)
