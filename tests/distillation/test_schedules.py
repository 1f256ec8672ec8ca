"""The learning-rate schedules of a run: warm-up then cosine decay, and what the optimizer gets."""

from __future__ import annotations

import math

import pytest

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from edgeqd.distillation.schedules import WarmupCosine, learning_rate


def _hand(step, peak, total, warmup):
    if step < warmup:
        return peak * step / warmup
    progress = min(1.0, (step - warmup) / (total - warmup))
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("warmup", [0, 10, 25])
def test_warmup_cosine_values(warmup):
    peak, total = 2e-3, 100
    schedule = WarmupCosine(peak, total, warmup)
    for step in (0, 1, warmup // 2, warmup, warmup + 1, 50, 75, 99, 100, 150):
        # float32 arithmetic in the graph: ~1e-7 of the peak.
        assert float(schedule(step)) == pytest.approx(_hand(step, peak, total, warmup), abs=1e-9)
    assert float(schedule(warmup)) == pytest.approx(peak)  # the peak at the end of the warm-up
    assert float(schedule(total)) == pytest.approx(0.0, abs=1e-12)  # decayed to 0 at the end


def test_warmup_is_capped_below_the_whole_run_and_the_config_round_trips():
    schedule = WarmupCosine(1e-3, total_steps=10, warmup_steps=50)
    assert schedule.warmup_steps == 9
    assert WarmupCosine(**schedule.get_config()).get_config() == schedule.get_config()


def test_the_optimizer_gets_a_constant_or_the_schedule_over_the_runs_steps():
    assert learning_rate("constant", 3e-3, 20, 100) == 3e-3
    schedule = learning_rate("cosine", 3e-3, 20, 100, warmup_epochs=2)
    assert (schedule.total_steps, schedule.warmup_steps, schedule.peak) == (2000, 200, 3e-3)


def test_a_distiller_follows_the_schedule_step_by_step():
    import numpy as np
    import tf_keras as keras

    from edgeqd.distillation import Distiller, LogitsDistillation

    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    distiller = Distiller(student, teacher, [LogitsDistillation(2.0)])
    schedule = WarmupCosine(1e-2, total_steps=8, warmup_steps=2)
    distiller.compile(optimizer=keras.optimizers.Adam(schedule))
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    distiller.fit(x, batch_size=8, epochs=1, verbose=0)  # 4 steps
    assert int(distiller.optimizer.iterations) == 4
    # tf_keras reports the rate of the last update: the 4th, taken at step index 3.
    assert float(distiller.optimizer.learning_rate) == pytest.approx(_hand(3, 1e-2, 8, 2), rel=1e-5)
