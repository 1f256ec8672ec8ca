"""Built-in students: every registered family builds, outputs logits, sizes itself to the
teacher, refuses data of the wrong rank, and (except conv1d) survives TFMOT's QAT wrapping."""

from __future__ import annotations

import pytest

import edgeqd  # noqa: F401
from edgeqd.errors import DistillationError, UsageError
from edgeqd.distillation.students import FRACTION_BAND, STUDENTS, build_student, list_students, size_to_teacher

# One sample shape per family: the registry test below fails when a family has none.
CASES = {"cnn": (28, 28, 1), "mobilenet": (32, 32, 3), "conv1d": (64, 3), "mlp": (20,)}
DEMO_TEACHER_PARAMS = 871_210  # edgeqd.demo.build_teacher()


def test_every_registered_family_has_a_case():
    assert set(STUDENTS) == set(CASES), "add a sample shape for the new family to CASES"


@pytest.mark.parametrize("family", sorted(CASES))
def test_family_builds_logits_model(family):
    import tf_keras as keras

    model = build_student(family, CASES[family], 7, width=0.5)
    assert model.output_shape == (None, 7)
    last = model.layers[-1]
    assert isinstance(last, keras.layers.Dense) and last.activation is keras.activations.linear
    wider = build_student(family, CASES[family], 7, width=1.0)
    deeper = build_student(family, CASES[family], 7, width=0.5, depth=2.0)
    assert wider.count_params() > model.count_params()
    assert len(deeper.layers) > len(model.layers)


@pytest.mark.parametrize("family", ["cnn", "mobilenet", "mlp"])
def test_default_size_is_a_tenth_to_a_twentieth_of_the_teacher(family):
    width = size_to_teacher(family, (28, 28, 1), 10, DEMO_TEACHER_PARAMS)
    params = build_student(family, (28, 28, 1), 10, width).count_params()
    low, high = FRACTION_BAND
    assert low <= params / DEMO_TEACHER_PARAMS <= high, (family, width, params)


def test_wrong_rank_lists_the_families_that_fit():
    with pytest.raises(DistillationError, match=r"rank 3 .* shape \(64, 3\) .* families that fit: conv1d, mlp"):
        build_student("cnn", (64, 3), 4)
    # A bad --width is a bad option value: a usage error (exit 2), not a teacher/student misfit.
    for width in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(UsageError, match=f"--width must be a finite number > 0, got {width}"):
            build_student("mlp", (20,), 4, width=width)
    with pytest.raises(UsageError, match="--depth must be a finite number > 0, got inf"):
        build_student("mlp", (20,), 4, width=1.0, depth=float("inf"))


def test_list_students_rows():
    rows = {r["family"]: r for r in list_students((64, 3), 4, teacher_params=200_000)}
    assert rows["conv1d"]["fits"] and not rows["cnn"]["fits"] and rows["cnn"]["params"] is None
    assert rows["conv1d"]["params"] > 0 and 0 < rows["conv1d"]["fraction_of_teacher"] < 1


@pytest.mark.parametrize("family", ["cnn", "mobilenet", "mlp"])
def test_qat_wraps_image_and_flat_students(family):
    # Issue 4 quantizes these students with TFMOT: its quantize_model raises on layer
    # orders it cannot fold, so every family except conv1d must wrap cleanly.
    import tensorflow_model_optimization as tfmot

    model = build_student(family, CASES[family] if family != "cnn" else (28, 28, 1), 10, width=0.25)
    qat = tfmot.quantization.keras.quantize_model(model)
    assert qat.output_shape == (None, 10)
