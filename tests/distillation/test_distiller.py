"""The Distiller: teacher frozen and student trained after a step, TFMOT-wrapped students,
and the list of weighted terms (Σ weight·term, the no-label rule, refused combinations)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from distill_helpers import tiny_user_student
from edgeqd.data import find_fashion_mnist
from edgeqd.errors import UsageError

needs_fashion = pytest.mark.skipif(find_fashion_mnist() is None,
                                   reason="Fashion-MNIST not installed: run `make data`")

# float32 arithmetic on a small batch against float64 numpy: ~1e-6 relative.
LOSS_TOL = 1e-5


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)




def _dense_pair(seed=0):
    """A 4-in, 3-class teacher and student (plain Dense logits), seeded."""
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="t_logits")], name="teacher")
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="s_logits")], name="student")
    return teacher, student


@needs_fashion
def test_teacher_frozen_student_trained_after_a_step(teacher_path, student_data):
    import tf_keras as keras

    from edgeqd.distillation import Distiller
    from edgeqd.models import load_model

    teacher = load_model(teacher_path)
    student = tiny_user_student()
    distiller = Distiller(student, teacher, features=["t_relu2:s_relu1"], attention=["t_relu1:s_relu1"])
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    logs = distiller.train_on_batch(student_data.x_train[:64], student_data.y_train[:64], return_dict=True)
    assert {"loss", "ce", "kd", "feature", "attention", "accuracy"} <= set(logs)
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)  # bit-identical: no gradient, no BN update
    changed = [not np.array_equal(b, a) for b, a in zip(student_before, student.get_weights())]
    assert all(changed[:3]), "the student's first conv and batch norm must have moved"
    assert distiller.projections, "t_relu2 (7×7×32) vs s_relu1 (14×14×8) needs a projection"


@needs_fashion
def test_qat_wrapped_student_layers_found_by_original_name(teacher_path, student_data):
    # Issue 4 trains a TFMOT-wrapped student with this Distiller: `--feature t:s` written
    # for the float student must still find `s` after quantize_model renamed it quant_s.
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    from edgeqd.distillation import Distiller, find_layer
    from edgeqd.models import load_model
    from edgeqd.distillation.students import build_student

    student = build_student("cnn", (28, 28, 1), 10, width=0.5)
    qat = tfmot.quantization.keras.quantize_model(student)
    assert find_layer(qat, "relu2_2").name == "quant_relu2_2"
    distiller = Distiller(qat, load_model(teacher_path), features=["t_relu2:relu2_2"])
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    logs = distiller.train_on_batch(student_data.x_train[:32], student_data.y_train[:32], return_dict=True)
    assert math.isfinite(logs["loss"]) and math.isfinite(logs["feature"])


# --------------------------------------------------------------------------- the list of terms

def test_loss_is_the_weighted_sum_of_the_terms():
    from edgeqd.distillation import Distiller, HardLabels, LogitsDistillation

    teacher, student = _dense_pair()
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    labels = np.arange(8) % 3
    temperature, alpha = 2.0, 0.7
    distiller = Distiller(student, teacher, [HardLabels(), LogitsDistillation(temperature)], [1 - alpha, alpha])
    terms = distiller.loss_terms(x, labels, training=False)
    t, s = teacher.predict(x, verbose=0).astype(np.float64), student.predict(x, verbose=0).astype(np.float64)
    p, q = _softmax(t / temperature), _softmax(s / temperature)
    kd = temperature ** 2 * (p * np.log(p / q)).sum(axis=1).mean()
    ce = -np.log(_softmax(s)[np.arange(8), labels]).mean()
    assert float(terms["kd"]) == pytest.approx(kd, rel=LOSS_TOL)
    assert float(terms["ce"]) == pytest.approx(ce, rel=LOSS_TOL)
    assert float(terms["loss"]) == pytest.approx((1 - alpha) * ce + alpha * kd, rel=LOSS_TOL)
    # Without labels the hard-label weight moves to the teacher term: loss = T²·KL, whatever α is.
    unlabelled = distiller.loss_terms(x, None, training=False)
    assert "ce" not in unlabelled
    assert float(unlabelled["loss"]) == pytest.approx(kd, rel=LOSS_TOL)
    # The keyword shortcuts build the same recipe.
    shortcut = Distiller(student, teacher, temperature=temperature, alpha=alpha).loss_terms(x, labels, training=False)
    assert float(shortcut["loss"]) == pytest.approx(float(terms["loss"]), rel=LOSS_TOL)


def test_terms_sharing_a_name_are_summed_and_only_the_student_trains():
    import tf_keras as keras

    from edgeqd.distillation import Distiller, LogitsDistillation

    teacher, student = _dense_pair(seed=1)
    x = np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32)
    distiller = Distiller(student, teacher, [LogitsDistillation(1.0), LogitsDistillation(4.0)], [0.5, 2.0])
    terms = distiller.loss_terms(x, None, training=False)
    one = Distiller(student, teacher, [LogitsDistillation(1.0)]).loss_terms(x, None, training=False)["kd"]
    four = Distiller(student, teacher, [LogitsDistillation(4.0)]).loss_terms(x, None, training=False)["kd"]
    assert float(terms["kd"]) == pytest.approx(float(one) + float(four), rel=LOSS_TOL)
    assert float(terms["loss"]) == pytest.approx(0.5 * float(one) + 2.0 * float(four), rel=LOSS_TOL)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-1))
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    logs = distiller.train_on_batch(x, return_dict=True)
    assert math.isfinite(logs["loss"]) and "ce" not in logs and "accuracy" not in logs
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert not np.array_equal(student_before[0], student.get_weights()[0])


@pytest.mark.parametrize("losses, weights, kwargs, words", [
    ("kd", [1.0, 2.0], {}, "2 weights for 1 loss terms"),
    ("kd", [float("nan")], {}, "must be a finite number >= 0, got nan"),
    ("kd", [-1.0], {}, "must be a finite number >= 0, got -1.0"),
    ("kd", None, {"temperature": 2.0}, "give either losses (with weights) or the keyword shortcuts"),
    ("none", None, {}, "losses must be a non-empty list of DistillationLoss terms"),
])
def test_refused_term_lists(losses, weights, kwargs, words):
    from edgeqd.distillation import Distiller, LogitsDistillation

    teacher, student = _dense_pair()
    terms = [LogitsDistillation(2.0)] if losses == "kd" else []
    with pytest.raises(UsageError) as error:
        Distiller(student, teacher, terms, weights, **kwargs)
    assert words in str(error.value)


def test_unlabelled_data_needs_a_term_without_labels():
    from edgeqd.distillation import Distiller, HardLabels
    from edgeqd.errors import DistillationError

    teacher, student = _dense_pair()
    distiller = Distiller(student, teacher, [HardLabels()])
    with pytest.raises(DistillationError, match="no loss term works without them"):
        distiller.loss_terms(np.zeros((2, 4), np.float32), None, training=False)
