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
