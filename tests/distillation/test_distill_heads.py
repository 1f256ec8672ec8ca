"""Distillation and the teacher's head and input: what logit distillation can learn from, and what it refuses."""

from __future__ import annotations

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import numpy as np
import pytest

from edgeqd.distillation import distill
from edgeqd.errors import DistillationError
from edgeqd.settings import DistillSettings


def _dense_teacher(outputs: int):
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(outputs)])


def _token_models():
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(0)
    tokens = keras.Input((8,), dtype="int32")
    teacher = keras.Model(tokens, layers.Dense(3)(layers.GlobalAveragePooling1D()(layers.Embedding(20, 8)(tokens))))
    ids = keras.Input((8,), dtype="int32")
    student = keras.Model(ids, layers.Dense(3)(layers.GlobalAveragePooling1D()(layers.Embedding(20, 4)(ids))))
    return teacher, student


def test_regression_and_single_output_teachers_are_refused_with_the_way_out(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "r.npz", x=rng.random((40, 6), dtype=np.float32), y=rng.normal(size=(40, 2)))
    with pytest.raises(DistillationError, match="regression targets: logit distillation matches class "
                                                "probabilities.*train a regression student on the targets"):
        distill(_dense_teacher(2), tmp_path / "r.npz", DistillSettings(student="mlp", epochs=1))
    np.savez(tmp_path / "x.npz", x=rng.random((40, 6), dtype=np.float32))
    with pytest.raises(DistillationError, match="single output: .* a softmax over one value is always 1"):
        distill(_dense_teacher(1), tmp_path / "x.npz", DistillSettings(student="mlp", epochs=1))


def test_token_id_teachers_need_a_student_that_reads_ids(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ids.npz", x=rng.integers(0, 20, (120, 8)), y=rng.integers(0, 3, 120))
    teacher, student = _token_models()
    with pytest.raises(DistillationError, match="reads int32 inputs .* --student student.keras"):
        distill(teacher, tmp_path / "ids.npz", DistillSettings(student="mlp", epochs=1))
    result = distill(teacher, tmp_path / "ids.npz", DistillSettings(epochs=1, recipe="classic"), student=student,
                     progress=False)
    assert result.student.inputs[0].dtype.name == "int32" and result.epochs_run == 1
