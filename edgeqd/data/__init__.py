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
from edgeqd.data.targets import REGRESSION, as_input_dtype, read_targets, target_width
from edgeqd.types import Dataset

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


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
    """Check an input array as stored (numeric, a sample axis, finite); floats and booleans become float32.

    Integer samples stay integer (token ids must not pass through float32; :func:`load_for_input`
    casts them for the model). Finiteness is checked here, before any split, so a bad sample is
    named by its index in the file.
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
    return x if x.dtype.kind in "iu" else cast


def load_npz(path: Path, val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """An ``.npz`` with ``x`` and optional ``y``, ``x_val``, ``y_val`` and ``class_names``.

    Inputs are passed to the model as they are (floats as float32, integers kept as integers
    for a model with an integer input). ``y`` holds class labels (integers, integral floats,
    one-hot rows) or regression targets (real values, or several columns that are not one-hot:
    :mod:`edgeqd.data.targets`). Without ``x_val`` a seeded ``val_fraction`` of the samples is
    held out. ``class_names``, if present, is a 1-D unicode array (``np.array(["cat", "dog"])``),
    one name per class (per output for regression).

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
    y, y_val, width, task = read_targets(arrays.get("y"), arrays.get("y_val") if "x_val" in arrays else None,
                                         str(path))
    if y is not None and len(y) != len(x):
        raise DataError(f"{path}: x has {len(x)} samples but y has {len(y)}")
    class_names = _npz_class_names(path, arrays.get("class_names"))
    if "x_val" in arrays:
        x_val = _samples(path, "x_val", arrays["x_val"])
        if (y is None) != (y_val is None):
            raise DataError(f"{path}: give labels for both x and x_val, or for neither")
        if y_val is not None and len(y_val) != len(x_val):
            raise DataError(f"{path}: x_val has {len(x_val)} samples but y_val has {len(y_val)}")
        x_train, y_train = x, y
    else:
        if len(x) == 0:
            raise DataError(f"{path}: x is empty (0 samples)")
        x_train, y_train, x_val, y_val = _split(x, y, val_fraction, seed)
    if task == REGRESSION:
        outputs = {target_width(a) for a in (y_train, y_val) if a is not None}
        if len(outputs) > 1:
            raise DataError(f"{path}: y and y_val hold {' and '.join(map(str, sorted(outputs)))} target values "
                            "per sample; give both the same number")
        if class_names and outputs and len(class_names) != min(outputs):
            raise DataError(f"{path}: class_names has {len(class_names)} names but the regression targets hold "
                            f"{min(outputs)} values per sample (one name per output)")
    highest = max((int(a.max()) for a in (y_train, y_val) if a is not None and len(a)), default=-1) \
        if task != REGRESSION else -1
    if class_names and (highest >= len(class_names) or width not in (None, len(class_names))):
        needed = width if width is not None else highest + 1
        raise DataError(f"{path}: class_names has {len(class_names)} names but the labels need {needed}")
    return Dataset(name=str(path), x_train=x_train, y_train=y_train, x_eval=x_val, y_eval=y_val,
                   class_names=class_names, label_width=width, task=task)


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
                 channels: int = 3, val_fraction: float = 0.2, seed: int = 0, input_dtype: str = "float32") -> Dataset:
    """Load ``--data``: ``fashion-mnist``, an ``.npz`` file or an image folder.

    Args:
        spec: the name ``fashion-mnist`` or a path.
        image_size: (height, width) for image folders (usually the model's input size).
        channels: channels for image folders (usually the model's).
        val_fraction: share held out for evaluation when the data has no split of its own.
        seed: seed of that split.
        input_dtype: the dtype the inputs are returned in (an integer one keeps token ids exact).

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
    return _in_dtype(dataset, input_dtype)


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
        if y is not None and not dataset.regression and y.min() < 0:
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
    if dataset.regression:
        _check_regression_fits(dataset, num_classes)
        return
    if dataset.label_width is not None and dataset.label_width != num_classes:
        raise DataError(f"{dataset.name}: labels are one-hot with {dataset.label_width} columns but the model "
                        f"has {num_classes} outputs; one-hot labels need one column per output")
    for split, y in (("training", dataset.y_train), ("evaluation", dataset.y_eval)):
        if y is not None and y.max() >= num_classes:
            hint = ("; a single-output (sigmoid) binary classifier is not supported: give the model 2 softmax "
                    "outputs" if num_classes == 1 else "")
            raise DataError(f"{dataset.name}: {split} labels go up to {int(y.max())} but the model has "
                            f"{num_classes} outputs (labels must be 0..{num_classes - 1}){hint}")
    if len(dataset.class_names) > num_classes:
        raise DataError(f"{dataset.name} names {len(dataset.class_names)} classes but the model has only "
                        f"{num_classes} outputs")


def _check_regression_fits(dataset: Dataset, outputs: int) -> None:
    """Regression targets need one value per model output; a classifier gets told how to give labels."""
    width = target_width(dataset.y_train if dataset.y_train is not None else dataset.y_eval)
    if width != outputs:
        hint = (f"give integer class labels 0..{outputs - 1} (or one-hot rows) for a classifier, or targets of "
                f"shape (N, {outputs}) for a regression head" if outputs > 1 else
                "give one target value per sample, shape (N,) or (N, 1)")
        raise DataError(f"{dataset.name}: y holds real values (regression targets, {width} per sample) but the "
                        f"model has {outputs} outputs; {hint}")
    if dataset.class_names and len(dataset.class_names) != outputs:
        raise DataError(f"{dataset.name} names {len(dataset.class_names)} outputs but the model has {outputs}")


def with_class_names(dataset: Dataset, num_classes: int) -> Dataset:
    """The dataset with one class name per model output: its own, or ``class_0 … class_{N-1}``.

    ``labels.txt`` and the artifacts' metadata list one line per output; data without
    names (an ``.npz`` without ``class_names``) gets numbered ones (``output_0 …`` for regression).

    Args:
        dataset: validated data that fits the model.
        num_classes: the model's number of outputs.

    >>> d = Dataset("t", np.zeros((2, 3), "f4"), None, np.zeros((1, 3), "f4"), None)
    >>> with_class_names(d, 2).class_names
    ('class_0', 'class_1')
    """
    if dataset.class_names:
        return dataset
    prefix = "output" if dataset.regression else "class"  # regression: one name per predicted value
    return dataclasses.replace(dataset, class_names=tuple(f"{prefix}_{i}" for i in range(num_classes)))


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
    dataset = load_for_input(data, input_shape, seed, input_dtype=model_input_dtype(model))
    check_fits_model(dataset, input_shape, num_classes)
    return with_class_names(dataset, num_classes)  # labels.txt needs a name per output


def model_input_dtype(model) -> str:
    """The numpy name of a Keras model's (first) input dtype: "float32", or "int32" for token ids.

    Args:
        model: a ``tf_keras`` model.
    """
    dtype = getattr(model.inputs[0], "dtype", None)
    return str(getattr(dtype, "name", dtype) or "float32")


def load_for_input(data: str | os.PathLike | Dataset, input_shape: Sequence[Optional[int]], seed: int = 0,
                   input_dtype: str = "float32") -> Dataset:
    """Load ``--data`` for an input of ``input_shape`` (one sample, no batch axis).

    Image folders are resized to its height and width and decoded with its channel
    count — the same way for a Keras model (:func:`load_for_model`) and for an artifact
    (``edgeqd bench``). Samples come in the input's dtype: integers for an integer input
    (token ids stay exact), float32 otherwise.

    Args:
        data: a dataset spec for :func:`load_dataset`, or a loaded :class:`Dataset`.
        input_shape: the per-sample input shape; None or -1 marks a free dimension.
        seed: seed of the held-out split when the data has none.
        input_dtype: the input's dtype ("float32", "int32", …).
    """
    if isinstance(data, Dataset):
        validate_dataset(data)
        return _in_dtype(data, input_dtype)
    shape = [None if d is None or d < 0 else int(d) for d in input_shape]
    image_size = tuple(shape[:2]) if len(shape) == 3 and None not in shape[:2] else None
    channels = int(shape[-1]) if len(shape) == 3 and shape[-1] in (1, 3, 4) else 3
    return load_dataset(data, image_size=image_size, channels=channels, seed=seed, input_dtype=input_dtype)


def _in_dtype(dataset: Dataset, dtype: str) -> Dataset:
    """``dataset`` with both splits' inputs in ``dtype`` (:func:`edgeqd.data.targets.as_input_dtype`)."""
    x_train, x_eval = (as_input_dtype(x, dtype, dataset.name) for x in (dataset.x_train, dataset.x_eval))
    if x_train is dataset.x_train and x_eval is dataset.x_eval:
        return dataset
    return dataclasses.replace(dataset, x_train=x_train, x_eval=x_eval)


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
