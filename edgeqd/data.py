"""Datasets: the built-in Fashion-MNIST, ``.npz`` archives and image folders.

``load_dataset`` turns a user's ``--data`` value into a validated :class:`Dataset`;
``check_fits_model`` checks it against a model before any work is done.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgeqd.errors import DataError
from edgeqd.types import Dataset

FASHION_MNIST = "fashion-mnist"
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_eval": "t10k-images-idx3-ubyte.gz",
    "y_eval": "t10k-labels-idx1-ubyte.gz",
}
_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


def cache_dir() -> Path:
    """edgeqd's cache folder: ``$EDGEQD_CACHE``, else ``~/.cache/edgeqd``."""
    return Path(os.environ.get("EDGEQD_CACHE", Path.home() / ".cache" / "edgeqd"))


def _fashion_candidates() -> list[Path]:
    candidates = []
    if os.environ.get("EDGEQD_DATA"):
        candidates.append(Path(os.environ["EDGEQD_DATA"]))
    candidates.append(_SYSTEM_DIR)
    candidates.append(cache_dir() / "fashion-mnist" / "usr/share/datasets/fashion-mnist")
    return candidates


def find_fashion_mnist() -> Optional[Path]:
    """The first folder holding the four Fashion-MNIST IDX files, or None.

    Looks in ``$EDGEQD_DATA``, Debian's ``/usr/share/datasets/fashion-mnist`` and the
    edgeqd cache, in that order.
    """
    for folder in _fashion_candidates():
        if all((folder / name).is_file() for name in _FASHION_FILES.values()):
            return folder
    return None


def provide_fashion_mnist() -> Path:
    """Make the Fashion-MNIST files available and return their folder.

    As root, installs Debian's ``dataset-fashion-mnist``; otherwise downloads the
    package with ``apt-get download`` and unpacks it with ``dpkg -x`` into the cache.
    Idempotent: returns at once when the files are already there.
    """
    found = find_fashion_mnist()
    if found:
        return found
    errors = []
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "install", "-y", "-q", FASHION_MNIST_PACKAGE],
                    ["sh", "-c", f"apt-get update -q && apt-get install -y -q {FASHION_MNIST_PACKAGE}"]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode == 0 and find_fashion_mnist():
                return find_fashion_mnist()
            errors.append(proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"])
    if shutil.which("apt-get") and shutil.which("dpkg"):
        target = cache_dir() / "fashion-mnist"
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run(["apt-get", "download", FASHION_MNIST_PACKAGE], cwd=tmp,
                                  capture_output=True, text=True, timeout=900)
            debs = list(Path(tmp).glob("*.deb"))
            if proc.returncode == 0 and debs:
                target.mkdir(parents=True, exist_ok=True)
                subprocess.run(["dpkg", "-x", str(debs[0]), str(target)], check=True, timeout=300)
                if find_fashion_mnist():
                    return find_fashion_mnist()
            errors.append(proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"])
    raise DataError(
        f"Fashion-MNIST is not installed and could not be fetched ({errors or 'no apt-get'}); "
        f"install Debian's {FASHION_MNIST_PACKAGE}, or set EDGEQD_DATA to a folder with the "
        "four IDX .gz files, or pass --data with your own .npz or image folder")


def _read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format: magic, dims, then raw uint8)."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist() -> Dataset:
    """The built-in dataset: 60,000 training and 10,000 test images, 28×28×1 in [0, 1].

    Falls back to Keras' download only when the Debian files are nowhere to be found.
    """
    folder = find_fashion_mnist()
    if folder is not None:
        arrays = {key: _read_idx(folder / name) for key, name in _FASHION_FILES.items()}
    else:
        try:
            import tf_keras as keras  # noqa: F401  (edgeqd sets TF_USE_LEGACY_KERAS)

            (xt, yt), (xe, ye) = keras.datasets.fashion_mnist.load_data()
            arrays = {"x_train": xt, "y_train": yt, "x_eval": xe, "y_eval": ye}
        except Exception as exc:  # offline: say what the options are
            raise DataError(
                f"Fashion-MNIST not found in {', '.join(map(str, _fashion_candidates()))} and the "
                f"Keras download failed ({type(exc).__name__}); run `edgeqd data fetch` (uses "
                f"Debian's {FASHION_MNIST_PACKAGE}), set EDGEQD_DATA, or pass --data") from None
    scale = 1.0 / 255.0

    def images(a: np.ndarray) -> np.ndarray:
        return (a.astype(np.float32) * scale)[..., None]

    return Dataset(name=FASHION_MNIST, x_train=images(arrays["x_train"]),
                   y_train=arrays["y_train"].astype(np.int64), x_eval=images(arrays["x_eval"]),
                   y_eval=arrays["y_eval"].astype(np.int64), class_names=FASHION_MNIST_CLASSES,
                   normalization={"scale": scale, "offset": 0.0})


def _labels(y: Optional[np.ndarray], what: str) -> Optional[np.ndarray]:
    """Integer class labels from integer, integral-float or one-hot arrays."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.dtype.kind not in "iufb":
        raise DataError(f"{what}: labels must be integers, got dtype {y.dtype}")
    if y.ndim == 2 and y.shape[1] > 1 and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
        return y.argmax(axis=1).astype(np.int64)  # one-hot rows
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{what}: labels must have shape (N,) or one-hot (N, C), got {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.equal(np.round(y), y).all():
            bad = int(np.flatnonzero(~np.isfinite(y) | (np.round(y) != y))[0])
            raise DataError(f"{what}: labels must be integers, label #{bad} is {y[bad].item()!r}")
    return y.astype(np.int64)


def _split(x: np.ndarray, y: Optional[np.ndarray], val_fraction: float, seed: int):
    n = len(x)
    n_val = max(1, int(round(n * val_fraction))) if n > 1 else 0
    order = np.random.default_rng(seed).permutation(n)
    val, train = order[:n_val], order[n_val:]
    if len(train) == 0:
        raise DataError(f"only {n} sample(s): need at least 2 to hold one out for evaluation")
    pick = (lambda a, idx: None if a is None else a[idx])
    return x[train], pick(y, train), x[val], pick(y, val)


def load_npz(path: Path, val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """An ``.npz`` with ``x`` and optional ``y``, ``x_val``, ``y_val``.

    Inputs are passed to the model as they are (cast to float32). Without
    ``x_val`` a seeded ``val_fraction`` of the samples is held out.

    Args:
        path: the archive; loaded with ``allow_pickle=False``.
        val_fraction: share held out for evaluation when there is no ``x_val``.
        seed: seed of that split.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as exc:
        raise DataError(f"{path}: cannot read arrays without pickle ({exc}); save plain numeric arrays") from None
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc})") from None
    if "x" not in arrays:
        raise DataError(f"{path}: no array named 'x' (found: {', '.join(sorted(arrays)) or 'none'})")
    unknown = set(arrays) - {"x", "y", "x_val", "y_val"}
    if unknown:
        raise DataError(f"{path}: unexpected arrays {sorted(unknown)}; allowed are x, y, x_val, y_val")
    x = arrays["x"]
    if x.dtype.kind not in "iufb":
        raise DataError(f"{path}: x must be numeric, got dtype {x.dtype}")
    y = _labels(arrays.get("y"), f"{path} y")
    if y is not None and len(y) != len(x):
        raise DataError(f"{path}: x has {len(x)} samples but y has {len(y)}")
    if "x_val" in arrays:
        x_val = arrays["x_val"]
        y_val = _labels(arrays.get("y_val"), f"{path} y_val")
        if (y is None) != (y_val is None):
            raise DataError(f"{path}: give labels for both x and x_val, or for neither")
        if y_val is not None and len(y_val) != len(x_val):
            raise DataError(f"{path}: x_val has {len(x_val)} samples but y_val has {len(y_val)}")
        x_train, y_train = x, y
    else:
        if len(x) == 0:
            raise DataError(f"{path}: x is empty (0 samples)")
        x_train, y_train, x_val, y_val = _split(x, y, val_fraction, seed)
    return Dataset(name=str(path), x_train=x_train.astype(np.float32), y_train=y_train,
                   x_eval=np.asarray(x_val).astype(np.float32), y_eval=y_val)


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
        if len(x) == 0:
            raise DataError(f"{dataset.name}: the {split} split is empty (0 samples)")
        _check_finite(x, f"{dataset.name} {split} split")
        if y is not None and len(y) != len(x):
            raise DataError(f"{dataset.name}: {split} split has {len(x)} inputs but {len(y)} labels")
        if y is not None and y.min() < 0:
            raise DataError(f"{dataset.name}: {split} labels must be >= 0, found {int(y.min())}")
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
    for split, y in (("training", dataset.y_train), ("evaluation", dataset.y_eval)):
        if y is not None and y.max() >= num_classes:
            raise DataError(f"{dataset.name}: {split} labels go up to {int(y.max())} but the model has "
                            f"{num_classes} outputs (labels must be 0..{num_classes - 1})")
