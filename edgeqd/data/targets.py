"""What ``y`` holds — class labels or regression targets — and inputs in the dtype the model takes.

An ``.npz``'s ``y`` is a **classification** label array when it is integer, integral floats, or
one-hot rows (one column per model output); it is a **regression** target array when it holds
real values (a float that is not a whole number) or has several columns that are not one-hot.
Both splits (``y`` and ``y_val``) are read as the same task.

Inputs stay as they are stored until the model is known: a model with an integer input (token
ids, indices) gets them in its own integer dtype, never through float32; a float model gets
float32 (:func:`as_input_dtype`).

>>> read_targets(np.array([0.5, 1.25]), None, "y")[3]
'regression'
>>> read_targets(np.array([0.0, 2.0]), None, "y")[3]
'classification'
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from edgeqd.errors import DataError

CLASSIFICATION = "classification"
REGRESSION = "regression"


def _is_one_hot(y: np.ndarray) -> bool:
    return y.ndim == 2 and y.shape[1] > 1 and bool(np.isin(y, (0, 1)).all()) and bool((y.sum(axis=1) == 1).all())


def is_regression(y: Optional[np.ndarray]) -> bool:
    """Whether ``y`` holds real-valued targets rather than class labels.

    Args:
        y: the stored ``y`` array, or None.

    >>> is_regression(np.array([[0.0, 1.0], [1.0, 0.0]])), is_regression(np.array([[0.2, 3.0]]))
    (False, True)
    """
    if y is None or y.dtype.kind != "f" or y.ndim == 0 or y.size == 0:
        return False
    if y.ndim == 2 and y.shape[1] > 1:
        return not _is_one_hot(y)
    finite = y[np.isfinite(y)]  # a NaN among real values is a bad target (named later), not a bad label
    return bool(finite.size and not np.equal(np.round(finite), finite).all())


def _labels(y: Optional[np.ndarray], what: str) -> tuple[Optional[np.ndarray], Optional[int]]:
    """Integer class labels from integer, integral-float or one-hot arrays, and the one-hot width."""
    if y is None:
        return None, None
    y = np.asarray(y)
    if y.dtype.kind not in "iufb":
        raise DataError(f"{what}: labels must be integers, got dtype {y.dtype}")
    if _is_one_hot(y):
        return y.argmax(axis=1).astype(np.int64), int(y.shape[1])  # one-hot rows
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{what}: labels must have shape (N,) or one-hot (N, C), got {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.equal(np.round(y), y).all():
            bad = int(np.flatnonzero(~np.isfinite(y) | (np.round(y) != y))[0])
            raise DataError(f"{what}: labels must be integers, label #{bad} is {y[bad].item()!r}")
    return y.astype(np.int64), None


def _regression_targets(y: Optional[np.ndarray], what: str) -> Optional[np.ndarray]:
    """float32 targets of shape (N,) or (N, k), every value finite."""
    if y is None:
        return None
    if y.dtype.kind not in "iufb" or y.ndim not in (1, 2):
        raise DataError(f"{what}: regression targets must be numbers of shape (N,) or (N, k), got dtype "
                        f"{y.dtype} with shape {y.shape}")
    with np.errstate(over="ignore"):
        targets = y.astype(np.float32)
    finite = np.isfinite(targets.reshape(len(targets), -1)).all(axis=1)
    if not finite.all():
        raise DataError(f"{what}: {int((~finite).sum())} regression target(s) are NaN or inf "
                        f"(first: #{int(np.flatnonzero(~finite)[0])}); clean the data")
    return targets


def read_targets(y: Optional[np.ndarray], y_val: Optional[np.ndarray], what: str
                 ) -> tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[int], str]:
    """Read ``y`` and ``y_val`` as one task: class labels or regression targets.

    Args:
        y: the stored training targets, or None.
        y_val: the stored evaluation targets, or None.
        what: the file, for messages.

    Returns:
        (y, y_val, one-hot width or None, task): labels as int64, targets as float32.
    """
    if is_regression(y) or is_regression(y_val):
        return (_regression_targets(y, f"{what} y"), _regression_targets(y_val, f"{what} y_val"), None, REGRESSION)
    labels, width = _labels(y, f"{what} y")
    labels_val, width_val = _labels(y_val, f"{what} y_val")
    if width is not None and width_val is not None and width != width_val:
        raise DataError(f"{what}: y is one-hot with {width} columns but y_val with {width_val}")
    return labels, labels_val, width or width_val, CLASSIFICATION


def target_width(y: np.ndarray) -> int:
    """Values per sample of a regression target array: 1 for (N,), k for (N, k).

    Args:
        y: regression targets.

    >>> target_width(np.zeros((4, 3)))
    3
    """
    return 1 if y.ndim == 1 else int(y.shape[1])


def as_input_dtype(x: np.ndarray, dtype: str, what: str) -> np.ndarray:
    """``x`` in the dtype of the model's input: its integer dtype for token ids/indices, else float32.

    Args:
        x: checked samples (finite, numeric).
        dtype: the model's input dtype ("float32", "int32", "int64", …).
        what: the data, for messages.

    Raises:
        DataError: an integer input given values that are not whole numbers, or out of the dtype's range.

    >>> as_input_dtype(np.array([[1.0, 2.0]]), "int32", "d").dtype.name
    'int32'
    """
    target = np.dtype(dtype)
    if target.kind not in "iu":
        return x if x.dtype == np.float32 else x.astype(np.float32)
    if x.dtype == target:
        return x
    if x.dtype.kind == "f" and not np.equal(np.round(x), x).all():
        raise DataError(f"{what}: the model's input is {target.name} (token ids, indices) but the samples hold "
                        "values that are not whole numbers; save x as integers")
    info = np.iinfo(target)
    if x.size and (x.min() < info.min or x.max() > info.max):
        raise DataError(f"{what}: the model's input is {target.name} but the samples range over "
                        f"{x.min()}..{x.max()}, beyond it")
    return x.astype(target)
