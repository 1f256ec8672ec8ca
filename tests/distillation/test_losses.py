"""The loss terms against hand-computed values: the plain functions, the term objects, and
the trap in Keras 3's default ``LogitsDistillation`` (no softmax, no T²) that ours avoids."""

from __future__ import annotations

import numpy as np
import pytest

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from edgeqd.errors import UsageError

# float32 arithmetic on a 2×3 batch: agreement with float64 numpy to ~1e-6 relative.
LOSS_TOL = 1e-5

TEACHER = np.array([[3.0, 1.0, -2.0], [0.5, 2.5, 0.0]])
STUDENT = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 1.5]])
LABELS = np.array([0, 2])


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _hand_kd(teacher, student, temperature):
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over the batch, in float64."""
    p, q = _softmax(teacher / temperature), _softmax(student / temperature)
    return temperature ** 2 * (p * np.log(p / q)).sum(axis=1).mean()


def _hand_ce(labels, student):
    return -np.log(_softmax(student)[np.arange(len(labels)), labels]).mean()


def test_loss_matches_hand_computed_value():
    from edgeqd.distillation import distillation_terms

    teacher, student, labels = TEACHER, STUDENT, LABELS
    temperature, alpha = 2.0, 0.7
    p, q = _softmax(teacher / temperature), _softmax(student / temperature)
    kl = (p * np.log(p / q)).sum(axis=1).mean()
    ce = -np.log(_softmax(student)[np.arange(2), labels]).mean()
    expected = (1 - alpha) * ce + alpha * temperature ** 2 * kl

    terms = distillation_terms(teacher, student, labels, temperature, alpha)
    assert float(terms["kd"]) == pytest.approx(temperature ** 2 * kl, rel=LOSS_TOL)
    assert float(terms["ce"]) == pytest.approx(ce, rel=LOSS_TOL)
    assert float(terms["loss"]) == pytest.approx(expected, rel=LOSS_TOL)


def test_no_label_loss_is_the_teacher_term_alone():
    from edgeqd.distillation import distillation_loss, kd_loss

    teacher = np.array([[3.0, 1.0, -2.0]])
    student = np.array([[1.0, 0.0, 0.5]])
    for alpha in (0.0, 0.5, 1.0):  # α only splits labels vs teacher; without labels it has no say
        assert float(distillation_loss(teacher, student, None, 4.0, alpha)) == pytest.approx(
            float(kd_loss(teacher, student, 4.0)), rel=LOSS_TOL)


def test_feature_and_attention_loss_values():
    from edgeqd.distillation import attention_loss, attention_map, feature_loss

    t = np.array([[1.0, 2.0, 2.0]], dtype=np.float32)
    s = np.array([[2.0, 4.0, 4.0]], dtype=np.float32)
    assert float(feature_loss(t, s, "mse")) == pytest.approx(3.0, rel=LOSS_TOL)  # (1+4+4)/3
    assert float(feature_loss(t, s, "cosine")) == pytest.approx(0.0, abs=1e-6)  # same direction

    # 2×2 maps, one channel: the map is f² normalized to unit length.
    teacher = np.array([1.0, 0.0, 0.0, 0.0], np.float32).reshape(1, 2, 2, 1)
    student = np.array([1.0, 1.0, 1.0, 1.0], np.float32).reshape(1, 2, 2, 1)
    np.testing.assert_allclose(attention_map(student).numpy(), [[0.5, 0.5, 0.5, 0.5]], atol=1e-6)
    expected = (1 - 0.5) ** 2 + 3 * 0.5 ** 2  # |[1,0,0,0] − [.5,.5,.5,.5]|²
    assert float(attention_loss(teacher, student)) == pytest.approx(expected, rel=LOSS_TOL)
    # Different channel counts and spatial sizes still compare (channel mean, resize).
    big = np.ones((2, 4, 4, 8), np.float32)
    small = np.ones((2, 2, 2, 3), np.float32)
    assert float(attention_loss(big, small)) == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- the term objects

@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 10.0])
def test_logits_distillation_is_softmax_kl_times_t_squared(temperature):
    from edgeqd.distillation import LogitsDistillation

    value = float(LogitsDistillation(temperature).compute_loss(TEACHER, STUDENT))
    assert value == pytest.approx(_hand_kd(TEACHER, STUDENT, temperature), rel=LOSS_TOL)


def test_keras3_default_logits_distillation_skips_softmax_and_t_squared_ours_does_not():
    # The trap (GUIDE §3): Keras 3's LogitsDistillation() looks its loss up with
    # keras.losses.get("kl_divergence"), which returns the plain function, not a
    # KLDivergence instance, so its softmax + T² branch never runs: the KL is taken of
    # the scaled logits themselves (clipped to [1e-7, 1]). Ours is the real T²·KL.
    import keras  # Keras 3, beside tf_keras in the same process

    from edgeqd.distillation import LogitsDistillation

    temperature = 4.0
    hand = _hand_kd(TEACHER, STUDENT, temperature)
    ours = float(LogitsDistillation(temperature).compute_loss(TEACHER, STUDENT))
    assert ours == pytest.approx(hand, rel=LOSS_TOL)

    teacher32, student32 = TEACHER.astype("float32"), STUDENT.astype("float32")
    keras_default = float(keras.distillation.LogitsDistillation(temperature=temperature)
                          .compute_loss(teacher32, student32))
    if not isinstance(keras.losses.get("kl_divergence"), keras.losses.KLDivergence):
        # Not the distillation loss at all: far from T²·KL (here by more than half of it).
        assert abs(keras_default - hand) > 0.5 * hand, (keras_default, hand)
    # Given a KLDivergence *instance*, Keras 3 computes what we do: an independent check.
    keras_instance = float(keras.distillation.LogitsDistillation(
        temperature=temperature, loss=keras.losses.KLDivergence()).compute_loss(teacher32, student32))
    assert keras_instance == pytest.approx(hand, rel=1e-4)  # Keras clips probabilities at 1e-7


def test_hard_labels_feature_and_attention_terms():
    from edgeqd.distillation import AttentionTransfer, FeatureDistillation, HardLabels

    ce = float(HardLabels().compute_loss(TEACHER, STUDENT, LABELS))
    assert ce == pytest.approx(_hand_ce(LABELS, STUDENT), rel=LOSS_TOL)
    assert HardLabels.needs_labels and not FeatureDistillation.needs_labels

    t = np.array([[1.0, 2.0, 2.0]], np.float32)
    mse = FeatureDistillation("t:s")
    mse.build((3,), (3,))  # same shape: no projection
    assert mse.projection is None and mse.trainable_layers == []
    assert float(mse.compute_loss(t, 2 * t)) == pytest.approx(3.0, rel=LOSS_TOL)
    cosine = FeatureDistillation("t:s", loss="cosine")
    cosine.build((3,), (3,))
    assert float(cosine.compute_loss(t, 2 * t)) == pytest.approx(0.0, abs=1e-6)
    projected = FeatureDistillation("t:s")
    projected.build((5,), (3,))  # a learned dense map from 3 to 5 features
    assert projected.projection.units == 5 and projected.trainable_layers == [projected.projection]
    assert projected.compute_loss(np.zeros((2, 5), np.float32), np.ones((2, 3), np.float32)).shape == ()

    teacher = np.array([1.0, 0.0, 0.0, 0.0], np.float32).reshape(1, 2, 2, 1)
    student = np.ones((1, 2, 2, 1), np.float32)
    # |[1,0,0,0] − [.5,.5,.5,.5]|² = 0.25 + 3·0.25
    assert float(AttentionTransfer("t:s").compute_loss(teacher, student)) == pytest.approx(1.0, rel=LOSS_TOL)


def test_standard_recipe_terms_and_weights():
    from edgeqd.distillation import standard_losses

    losses, weights = standard_losses(2.0, 0.75, features=["a:b"], attention=["c:d", "e:f"],
                                      feature_weight=0.5, attention_weight=20.0, feature_loss="cosine")
    assert [type(term).__name__ for term in losses] == [
        "HardLabels", "LogitsDistillation", "FeatureDistillation", "AttentionTransfer", "AttentionTransfer"]
    assert weights == [0.25, 0.75, 0.5, 20.0, 20.0]
    assert losses[1].temperature == 2.0 and str(losses[3].pair) == "c:d"


@pytest.mark.parametrize("name, args, kwargs, words", [
    ("LogitsDistillation", (0.0,), {}, "--temperature must be a finite number > 0, got 0.0"),
    ("FeatureDistillation", ("t:s",), {"loss": "l1"}, "--feature-loss 'l1': choose mse or cosine"),
    ("AttentionTransfer", ("no-colon",), {}, "--attention 'no-colon': write it as teacher_layer:student_layer"),
    ("standard_losses", (), {"alpha": 1.5}, "--alpha must be within [0, 1], got 1.5"),
])
def test_bad_term_settings_are_usage_errors(name, args, kwargs, words):
    import edgeqd.distillation

    with pytest.raises(UsageError) as error:
        getattr(edgeqd.distillation, name)(*args, **kwargs)
    assert words in str(error.value)


# --------------------------------------------------------------------------- decoupled KD

def _hand_dkd_parts(teacher, student, labels, temperature):
    """Per-sample TCKD and NCKD from their definitions (Zhao et al. 2022, eq. 1–4), in float64."""
    p, q = _softmax(teacher / temperature), _softmax(student / temperature)
    tckd, nckd = [], []
    for i, t in enumerate(labels):
        b_teacher = np.array([p[i, t], 1 - p[i, t]])
        b_student = np.array([q[i, t], 1 - q[i, t]])
        tckd.append((b_teacher * np.log(b_teacher / b_student)).sum())
        others = [j for j in range(p.shape[1]) if j != t]
        p_hat, q_hat = p[i, others] / p[i, others].sum(), q[i, others] / q[i, others].sum()
        nckd.append((p_hat * np.log(p_hat / q_hat)).sum())
    return np.array(tckd), np.array(nckd)


@pytest.mark.parametrize("temperature, tckd_weight, nckd_weight", [(1.0, 1.0, 1.0), (4.0, 1.0, 8.0),
                                                                   (2.0, 0.5, 2.0)])
def test_dkd_matches_a_hand_computation(temperature, tckd_weight, nckd_weight):
    from edgeqd.distillation import DecoupledKD, dkd_terms

    tckd, nckd = _hand_dkd_parts(TEACHER, STUDENT, LABELS, temperature)
    terms = dkd_terms(TEACHER, STUDENT, LABELS, temperature)
    assert float(terms["tckd"]) == pytest.approx(temperature ** 2 * tckd.mean(), rel=LOSS_TOL)
    assert float(terms["nckd"]) == pytest.approx(temperature ** 2 * nckd.mean(), rel=LOSS_TOL)
    expected = temperature ** 2 * (tckd_weight * tckd + nckd_weight * nckd).mean()
    term = DecoupledKD(temperature, tckd_weight, nckd_weight)
    assert float(term.compute_loss(TEACHER, STUDENT, LABELS)) == pytest.approx(expected, rel=LOSS_TOL)


def test_kd_is_tckd_plus_nckd_weighed_by_the_teachers_non_target_mass():
    # The paper's eq. 5, the reason for decoupling: KD = TCKD + (1 − p_t^T)·NCKD, per sample.
    temperature = 3.0
    tckd, nckd = _hand_dkd_parts(TEACHER, STUDENT, LABELS, temperature)
    p = _softmax(TEACHER / temperature)
    p_target = p[np.arange(len(LABELS)), LABELS]
    expected = temperature ** 2 * (tckd + (1 - p_target) * nckd).mean()
    assert _hand_kd(TEACHER, STUDENT, temperature) == pytest.approx(expected, rel=1e-9)


def test_dkd_targets_without_labels_and_with_mixed_labels():
    from edgeqd.distillation import dkd_terms

    teacher_top = TEACHER.argmax(axis=1)  # unlabelled: the teacher's class is the target
    hand = _hand_dkd_parts(TEACHER, STUDENT, teacher_top, 2.0)
    terms = dkd_terms(TEACHER, STUDENT, None, 2.0)
    assert float(terms["nckd"]) == pytest.approx(4.0 * hand[1].mean(), rel=LOSS_TOL)
    mixed = np.array([[0.7, 0.0, 0.3], [0.0, 0.4, 0.6]], np.float32)  # mixup: the largest share is the target
    from_mixed = dkd_terms(TEACHER, STUDENT, mixed, 2.0)
    from_labels = dkd_terms(TEACHER, STUDENT, LABELS, 2.0)
    assert float(from_mixed["tckd"]) == pytest.approx(float(from_labels["tckd"]), rel=LOSS_TOL)


def test_dkd_gradients_are_finite_with_a_confident_teacher():
    # The masked class is removed with a large negative offset, never with log(0).
    import tensorflow as tf

    from edgeqd.distillation import dkd_loss

    student = tf.Variable([[1.0, 0.0, -1.0]])
    with tf.GradientTape() as tape:
        loss = dkd_loss(np.array([[60.0, -60.0, 0.0]]), student, np.array([0]), 1.0, 1.0, 8.0)
    gradient = tape.gradient(loss, student).numpy()
    assert np.isfinite(float(loss)) and np.isfinite(gradient).all() and np.abs(gradient).sum() > 0


def test_soft_labels_give_cross_entropy_against_the_mixture():
    from edgeqd.distillation import hard_label_loss

    mixed = np.array([[0.7, 0.0, 0.3], [0.0, 0.4, 0.6]])
    log_q = np.log(_softmax(STUDENT))
    expected = -(mixed * log_q).sum(axis=1).mean()
    assert float(hard_label_loss(mixed, STUDENT)) == pytest.approx(expected, rel=LOSS_TOL)
    # One-hot soft labels are the integer labels.
    assert float(hard_label_loss(np.eye(3)[LABELS], STUDENT)) == pytest.approx(_hand_ce(LABELS, STUDENT),
                                                                               rel=LOSS_TOL)


def test_bad_dkd_weights_are_usage_errors():
    from edgeqd.distillation import DecoupledKD

    with pytest.raises(UsageError, match="--nckd-weight must be a finite number >= 0, got -1"):
        DecoupledKD(4.0, 1.0, -1.0)
