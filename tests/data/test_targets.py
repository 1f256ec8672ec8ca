"""What ``y`` means: class labels or regression targets; and inputs in the model's dtype."""

from __future__ import annotations

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import numpy as np
import pytest

from edgeqd.data import check_fits_model, load_dataset, with_class_names
from edgeqd.data.targets import as_input_dtype, is_regression, read_targets
from edgeqd.errors import DataError


@pytest.mark.parametrize("y, regression", [
    (np.array([0, 2, 1]), False),                        # integer labels
    (np.array([0.0, 2.0, 1.0]), False),                  # integral floats: labels
    (np.eye(3)[[0, 2, 1]], False),                       # one-hot rows
    (np.array([0.5, 2.0, 1.0]), True),                   # a real value
    (np.array([[0.2, 1.0], [3.0, 0.0]]), True),          # several columns, not one-hot
    (np.array([[1.0, 1.0], [0.0, 1.0]]), True),          # 0/1 but not one row-one 1: multi-output targets
    (np.array([[2.0], [3.0]]), False),                   # one integral column: labels
])
def test_y_is_labels_or_regression_targets(y, regression):
    assert is_regression(y) is regression


def test_both_splits_are_read_as_one_task():
    # y integral, y_val real-valued: the task is regression for both (float32 targets).
    y, y_val, width, task = read_targets(np.array([1.0, 2.0]), np.array([0.5]), "d")
    assert task == "regression" and y.dtype == np.float32 and y_val.dtype == np.float32 and width is None
    with pytest.raises(DataError, match=r"d y: 1 regression target\(s\) are NaN or inf \(first: #1\)"):
        read_targets(np.array([0.5, np.nan]), None, "d")


def test_regression_npz_fits_a_model_with_one_output_per_target(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "r.npz", x=rng.random((30, 4), dtype=np.float32), y=rng.normal(size=(30, 2)))
    dataset = load_dataset(tmp_path / "r.npz")
    assert dataset.regression and dataset.y_train.shape == (24, 2) and dataset.label_width is None
    check_fits_model(dataset, (4,), 2)
    with pytest.raises(DataError, match=r"y holds real values \(regression targets, 2 per sample\) but the model "
                                        r"has 3 outputs; give integer class labels 0\.\.2"):
        check_fits_model(dataset, (4,), 3)
    # labels.txt names the predicted values; negative targets are fine (no "labels must be >= 0").
    assert with_class_names(dataset, 2).class_names == ("output_0", "output_1")
    np.savez(tmp_path / "neg.npz", x=rng.random((10, 4), dtype=np.float32), y=-rng.random(10) - 0.5)
    assert load_dataset(tmp_path / "neg.npz").y_train.min() < 0


def test_split_targets_must_have_the_same_width(tmp_path):
    np.savez(tmp_path / "w.npz", x=np.zeros((4, 2)), y=np.full((4, 2), 0.5), x_val=np.zeros((2, 2)),
             y_val=np.full((2, 3), 0.5))
    with pytest.raises(DataError, match="y and y_val hold 2 and 3 target values per sample"):
        load_dataset(tmp_path / "w.npz")


def test_classification_data_keeps_class_names():
    from edgeqd.types import Dataset

    d = Dataset("t", np.zeros((2, 3), "f4"), np.array([0, 1]), np.zeros((1, 3), "f4"), np.array([1]))
    assert with_class_names(d, 2).class_names == ("class_0", "class_1")  # labels.txt always gets a line per output


def test_inputs_come_in_the_models_dtype():
    ids = np.array([[1, 2], [3, 40000]])
    assert as_input_dtype(ids, "int32", "d").dtype == np.int32
    assert as_input_dtype(ids, "float32", "d").dtype == np.float32
    with pytest.raises(DataError, match=r"input is int8 but the samples range over 1\.\.40000"):
        as_input_dtype(ids, "int8", "d")
