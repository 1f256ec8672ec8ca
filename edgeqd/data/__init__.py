"""Datasets: the built-in Fashion-MNIST, ``.npz`` archives and image folders.

``load_dataset`` turns a user's ``--data`` value into a validated :class:`Dataset`;
``check_fits_model`` checks it against a model before any work is done.
"""

from __future__ import annotations

import dataclasses
import os
import unicodedata
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgeqd.errors import DataError
# The built-in dataset lives in its own module; its names stay importable from here.
from edgeqd.data.fashion_mnist import (FASHION_MNIST, FASHION_MNIST_CLASSES, FASHION_MNIST_PACKAGE,  # noqa: F401
                                  cache_dir, find_fashion_mnist, load_fashion_mnist, provide_fashion_mnist,
                                  read_fashion_mnist_files)
from edgeqd.types import Dataset

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


def _labels(y: Optional[np.ndarray], what: str) -> tuple[Optional[np.ndarray], Optional[int]]:
    """Integer class labels from integer, integral-float or one-hot arrays, and the one-hot width.

    Returns:
        (labels, width): ``width`` is the number of one-hot columns, None for integer labels.
    """
    if y is None:
        return None, None
    y = np.asarray(y)
    if y.dtype.kind not in "iufb":
        raise DataError(f"{what}: labels must be integers, got dtype {y.dtype}")
    if y.ndim == 2 and y.shape[1] > 1 and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
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


def _split(x: np.ndarray, y: Optional[np.ndarray], val_fraction: float, seed: int):
    n = len(x)
    n_val = max(1, int(round(n * val_fraction))) if n > 1 else 0
    order = np.random.default_rng(seed).permutation(n)
    val, train = order[:n_val], order[n_val:]
    if len(train) == 0:
        raise DataError(f"only {n} sample(s): need at least 2 to hold one out for evaluation")
    pick = (lambda a, idx: None if a is None else a[idx])
    return x[train], pick(y, train), x[val], pick(y, val)


_NPZ_ARRAYS = ("x", "y", "x_val", "y_val", "class_names")


def _samples(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    """Check an input array as stored (numeric, a sample axis, finite) and cast it to float32.

    Finiteness is checked here, before any split, so a bad sample is named by its index in the file.
    """
    if x.dtype.kind not in "iufb":
        raise DataError(f"{path}: {name} must be numeric, got dtype {x.dtype}")
    if x.ndim == 0:
        raise DataError(f"{path}: {name} is a single number (shape ()); it needs a sample axis: "
                        f"save {name} with shape (N, ...)")
    if len(x) and x.size == 0:
        raise DataError(f"{path}: {name} has {len(x)} samples of shape {x.shape[1:]}, which hold no values")
    with np.errstate(over="ignore"):  # values beyond float32 become inf and are reported below
        cast = x.astype(np.float32)
    if len(cast):
        finite = np.isfinite(cast.reshape(len(cast), -1)).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            why = "NaN or inf" if x.dtype.kind != "f" or not np.isfinite(x[bad[0]]).all() else \
                "values beyond float32's range (±3.4e38)"
            raise DataError(f"{path}: {len(bad)} sample(s) of {name} contain {why} (first: {name}[{bad[0]}], "
                            "its index in the file); clean the data")
    return cast


def load_npz(path: Path, val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """An ``.npz`` with ``x`` and optional ``y``, ``x_val``, ``y_val`` and ``class_names``.

    Inputs are passed to the model as they are (cast to float32). Without
    ``x_val`` a seeded ``val_fraction`` of the samples is held out. ``class_names``,
    if present, is a 1-D unicode array (``np.array(["cat", "dog"])``), one name per class.

    Args:
        path: the archive; read without pickle, every header checked first (:mod:`edgeqd.data.npz`).
        val_fraction: share held out for evaluation when there is no ``x_val``.
        seed: seed of that split.
    """
    from edgeqd.data.npz import read_npz

    arrays = read_npz(path, _NPZ_ARRAYS)
    if "x" not in arrays:
        raise DataError(f"{path}: no array named 'x' (found: {', '.join(sorted(arrays)) or 'none'})")
    if "y_val" in arrays and "x_val" not in arrays:
        raise DataError(f"{path}: y_val is given without x_val; give both or neither")
    x = _samples(path, "x", arrays["x"])
    y, width = _labels(arrays.get("y"), f"{path} y")
    if y is not None and len(y) != len(x):
        raise DataError(f"{path}: x has {len(x)} samples but y has {len(y)}")
    class_names = _npz_class_names(path, arrays.get("class_names"))
    if "x_val" in arrays:
        x_val = _samples(path, "x_val", arrays["x_val"])
        y_val, width_val = _labels(arrays.get("y_val"), f"{path} y_val")
        if (y is None) != (y_val is None):
            raise DataError(f"{path}: give labels for both x and x_val, or for neither")
        if y_val is not None and len(y_val) != len(x_val):
            raise DataError(f"{path}: x_val has {len(x_val)} samples but y_val has {len(y_val)}")
        if width is not None and width_val is not None and width != width_val:
            raise DataError(f"{path}: y is one-hot with {width} columns but y_val with {width_val}")
        width = width or width_val
        x_train, y_train = x, y
    else:
        if len(x) == 0:
            raise DataError(f"{path}: x is empty (0 samples)")
        x_train, y_train, x_val, y_val = _split(x, y, val_fraction, seed)
    highest = max((int(a.max()) for a in (y_train, y_val) if a is not None and len(a)), default=-1)
    if class_names and (highest >= len(class_names) or width not in (None, len(class_names))):
        needed = width if width is not None else highest + 1
        raise DataError(f"{path}: class_names has {len(class_names)} names but the labels need {needed}")
    return Dataset(name=str(path), x_train=x_train, y_train=y_train, x_eval=x_val, y_eval=y_val,
                   class_names=class_names, label_width=width)


def _npz_class_names(path: Path, names: Optional[np.ndarray]) -> tuple[str, ...]:
    """The optional ``class_names`` array: 1-D unicode, one safe name per class."""
    if names is None:
        return ()
    if names.dtype.kind != "U" or names.ndim != 1 or len(names) == 0:
        raise DataError(f"{path}: class_names must be a non-empty 1-D array of strings (dtype '<U…'), got "
                        f"dtype {names.dtype} with shape {names.shape}")
    result = tuple(str(n) for n in names.tolist())
    for name in result:
        check_class_name(name, f"{path}: class_names entry")
    return result


def check_class_name(name: str, where: str) -> None:
    """Refuse a class name that would break ``labels.txt`` (one name per line).

    Control characters (newline, CR, tab, …), Unicode line and paragraph separators
    (which ``str.splitlines`` splits on) and bytes that are not UTF-8 would add or shift
    lines for every app reading the labels, so they are refused rather than escaped.

    Args:
        name: the class name.
        where: what to name in the error (e.g. the folder it came from).

    >>> check_class_name("Ankle boot", "folder")
    """
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")]
    if not name.strip() or bad:
        what = "is blank" if not name.strip() else f"contains {', '.join(sorted({repr(c) for c in bad}))}"
        raise DataError(f"{where} {name!r} {what}: class names become lines of labels.txt; rename it "
                        "(letters, digits, spaces and punctuation only)")


def load_image_folder(path: Path, image_size: Optional[tuple[int, int]] = None,
                      channels: int = 3, val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A folder of images: one sub-folder per class, or images directly in it (no labels).

    Follows Keras' ``image_dataset_from_directory``: classes are the sorted
    sub-folder names and pixels stay in [0, 255] (the model is expected to scale them,
    as it was when trained on that function's output).

    Args:
        path: the folder.
        image_size: (height, width) to resize to; defaults to the first image's size.
        channels: 1, 3 or 4.
        val_fraction: share held out for evaluation.
        seed: seed of that split.
    """
    import tensorflow as tf

    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        class_names = tuple(p.name for p in subdirs)
        for name in class_names:
            check_class_name(name, f"{path}: class folder")
        files = [(f, label) for label, d in enumerate(subdirs)
                 for f in sorted(d.iterdir()) if f.suffix.lower() in _IMAGE_SUFFIXES]
    else:
        class_names = ()
        files = [(f, -1) for f in sorted(path.iterdir()) if f.suffix.lower() in _IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{path}: no images found (looked for {', '.join(sorted(_IMAGE_SUFFIXES))})")
    images = []
    for file, _ in files:
        try:
            img = tf.io.decode_image(tf.io.read_file(str(file)), channels=channels, expand_animations=False)
        except Exception as exc:
            raise DataError(f"{file}: not a readable image ({type(exc).__name__})") from None
        if image_size is None:
            image_size = (int(img.shape[0]), int(img.shape[1]))
        img = tf.image.resize(img, image_size, method="bilinear")
        images.append(img.numpy().astype(np.float32))
    x = np.stack(images)
    y = np.array([label for _, label in files], dtype=np.int64) if class_names else None
    x_train, y_train, x_val, y_val = _split(x, y, val_fraction, seed)
    return Dataset(name=str(path), x_train=x_train, y_train=y_train, x_eval=x_val, y_eval=y_val,
                   class_names=class_names)


def load_dataset(spec: str | os.PathLike, image_size: Optional[tuple[int, int]] = None,
                 channels: int = 3, val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Load ``--data``: ``fashion-mnist``, an ``.npz`` file or an image folder.

    Args:
        spec: the name ``fashion-mnist`` or a path.
        image_size: (height, width) for image folders (usually the model's input size).
        channels: channels for image folders (usually the model's).
        val_fraction: share held out for evaluation when the data has no split of its own.
        seed: seed of that split.

    Returns:
        A :class:`Dataset` whose arrays are finite, non-empty and consistently labelled.

    >>> load_dataset("fashion-mnist").x_eval.shape  # doctest: +SKIP
    (10000, 28, 28, 1)
    """
    if str(spec) == FASHION_MNIST:
        dataset = load_fashion_mnist()
    else:
        path = Path(spec)
        if not path.exists():
            raise DataError(f"data not found: {path} (give '{FASHION_MNIST}', an .npz file or an image folder)")
        if path.is_dir():
            dataset = load_image_folder(path, image_size, channels, val_fraction, seed)
        elif path.suffix == ".npz":
            dataset = load_npz(path, val_fraction, seed)
        else:
            raise DataError(f"{path}: unsupported data file; give an .npz with arrays x and y, or an image folder")
    validate_dataset(dataset)
    return dataset


def _check_finite(x: np.ndarray, what: str) -> None:
    if x.ndim == 0 or x.size == 0:  # shape errors are reported by the callers' checks
        return
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(f"{what}: {len(bad)} sample(s) contain NaN or inf (first: #{bad[0]}); clean the data")


def validate_dataset(dataset: Dataset) -> None:
    """Raise :class:`DataError` for empty, non-finite or inconsistently shaped data.

    Args:
        dataset: the data to check.
    """
    for split, x, y in (("training", dataset.x_train, dataset.y_train),
                        ("evaluation", dataset.x_eval, dataset.y_eval)):
        if np.ndim(x) == 0:
            raise DataError(f"{dataset.name}: the {split} inputs have no sample axis (shape {np.shape(x)})")
        if len(x) == 0:
            raise DataError(f"{dataset.name}: the {split} split is empty (0 samples)")
        _check_finite(x, f"{dataset.name} {split} split")
        if y is not None and len(y) != len(x):
            raise DataError(f"{dataset.name}: {split} split has {len(x)} inputs but {len(y)} labels")
        if y is not None and y.min() < 0:
            raise DataError(f"{dataset.name}: {split} labels must be >= 0, found {int(y.min())}")
    for name in dataset.class_names:
        check_class_name(name, f"{dataset.name}: class name")
    if dataset.x_train.shape[1:] != dataset.x_eval.shape[1:]:
        raise DataError(f"{dataset.name}: training samples have shape {dataset.x_train.shape[1:]} "
                        f"but evaluation samples {dataset.x_eval.shape[1:]}")


def check_fits_model(dataset: Dataset, input_shape: Sequence[Optional[int]], num_classes: int) -> None:
    """Raise :class:`DataError` when the data does not fit a model's input and output.

    Args:
        dataset: validated data.
        input_shape: the model's input shape without the batch dimension (None = any).
        num_classes: the size of the model's output (labels must be below it).

    >>> import numpy as np
    >>> d = Dataset("t", np.zeros((2, 3), "f4"), np.array([0, 1]), np.zeros((1, 3), "f4"), np.array([1]))
    >>> check_fits_model(d, (3,), 2)
    """
    sample = dataset.input_shape
    expected = tuple(input_shape)
    if len(sample) != len(expected) or any(e is not None and e != s for e, s in zip(expected, sample)):
        shown = tuple(-1 if e is None else e for e in expected)
        raise DataError(f"the model expects inputs of shape {shown} but {dataset.name} has samples "
                        f"of shape {sample}; reshape the data or pick the matching model")
    if dataset.label_width is not None and dataset.label_width != num_classes:
        raise DataError(f"{dataset.name}: labels are one-hot with {dataset.label_width} columns but the model "
                        f"has {num_classes} outputs; one-hot labels need one column per output")
    for split, y in (("training", dataset.y_train), ("evaluation", dataset.y_eval)):
        if y is not None and y.max() >= num_classes:
            raise DataError(f"{dataset.name}: {split} labels go up to {int(y.max())} but the model has "
                            f"{num_classes} outputs (labels must be 0..{num_classes - 1})")
    if len(dataset.class_names) > num_classes:
        raise DataError(f"{dataset.name} names {len(dataset.class_names)} classes but the model has only "
                        f"{num_classes} outputs")


def with_class_names(dataset: Dataset, num_classes: int) -> Dataset:
    """The dataset with one class name per model output: its own, or ``class_0 … class_{N-1}``.

    ``labels.txt`` and the artifacts' metadata list one line per output; data without
    names (an ``.npz`` without ``class_names``) gets numbered ones.

    Args:
        dataset: validated data that fits the model.
        num_classes: the model's number of outputs.

    >>> d = Dataset("t", np.zeros((2, 3), "f4"), None, np.zeros((1, 3), "f4"), None)
    >>> with_class_names(d, 2).class_names
    ('class_0', 'class_1')
    """
    if dataset.class_names:
        return dataset
    return dataclasses.replace(dataset, class_names=tuple(f"class_{i}" for i in range(num_classes)))


def load_for_model(model, data: str | os.PathLike | Dataset, seed: int = 0) -> Dataset:
    """The one data loader of every stage: load ``--data`` as ``model`` needs it and check that it fits.

    Image folders are resized to the model's input size and decoded with its channel
    count; labels are checked against its outputs; unnamed classes get ``class_0 …``.

    Args:
        model: the Keras model the data is for.
        data: a dataset spec for :func:`load_dataset`, or a loaded :class:`Dataset`.
        seed: seed of the held-out split when the data has none.

    >>> load_for_model(model, "fashion-mnist").input_shape  # doctest: +SKIP
    (28, 28, 1)
    """
    from edgeqd.models import model_signature

    input_shape, num_classes = model_signature(model)
    dataset = load_for_input(data, input_shape, seed)
    check_fits_model(dataset, input_shape, num_classes)
    return with_class_names(dataset, num_classes)  # labels.txt needs a name per output


def load_for_input(data: str | os.PathLike | Dataset, input_shape: Sequence[Optional[int]], seed: int = 0) -> Dataset:
    """Load ``--data`` for an input of ``input_shape`` (one sample, no batch axis).

    Image folders are resized to its height and width and decoded with its channel
    count — the same way for a Keras model (:func:`load_for_model`) and for an artifact
    (``edgeqd bench``).

    Args:
        data: a dataset spec for :func:`load_dataset`, or a loaded :class:`Dataset`.
        input_shape: the per-sample input shape; None or -1 marks a free dimension.
        seed: seed of the held-out split when the data has none.
    """
    if isinstance(data, Dataset):
        validate_dataset(data)
        return data
    shape = [None if d is None or d < 0 else int(d) for d in input_shape]
    image_size = tuple(shape[:2]) if len(shape) == 3 and None not in shape[:2] else None
    channels = int(shape[-1]) if len(shape) == 3 and shape[-1] in (1, 3, 4) else 3
    return load_dataset(data, image_size=image_size, channels=channels, seed=seed)


def calibration_subset(dataset: Dataset, samples: int, seed: int = 0) -> tuple[np.ndarray, Optional[str]]:
    """``samples`` training inputs drawn with ``seed`` for calibration, or all of them (with a note) when fewer.

    Args:
        dataset: the data.
        samples: how many to draw.
        seed: seed of the draw.

    Returns:
        The samples, and a note when fewer than asked were available (else None).

    >>> d = Dataset("d", np.arange(10, dtype="f4")[:, None], None, np.zeros((2, 1), "f4"), None)
    >>> x, note = calibration_subset(d, 4, seed=1); x.shape, note
    ((4, 1), None)
    >>> calibration_subset(d, 50)[1]
    'calibrated on all 10 training samples (50 asked for)'
    """
    available = len(dataset.x_train)
    if samples >= available:
        note = None if samples == available else f"calibrated on all {available} training samples ({samples} asked for)"
        return dataset.x_train, note
    order = np.random.default_rng(seed).permutation(available)[:samples]
    return dataset.x_train[np.sort(order)], None
