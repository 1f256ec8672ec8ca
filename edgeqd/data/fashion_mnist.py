"""The built-in dataset: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package.

Found in ``$EDGEQD_DATA``, ``/usr/share/datasets/fashion-mnist`` or edgeqd's cache; fetched
with apt; read from its gzipped IDX files with every field checked (magic numbers, dimensions,
byte counts, labels 0..9, as many labels as images), so a damaged copy is a :class:`DataError`
that says how to replace it (``edgeqd data fetch --force``), never a traceback.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Optional

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


def provide_fashion_mnist(force: bool = False) -> Path:
    """Make the Fashion-MNIST files available, check them, and return their folder.

    As root, installs Debian's ``dataset-fashion-mnist``; otherwise downloads the
    package with ``apt-get download`` and unpacks it with ``dpkg -x`` into the cache.
    Idempotent: returns at once when intact files are already there.

    Args:
        force: fetch again even when the files are there, the cure for damaged files: as
            root, reinstall the package when its copy is the one in use; otherwise replace
            the copy in the cache.

    Raises:
        DataError: the package cannot be fetched, or the folder in use still holds a damaged file.

    >>> provide_fashion_mnist()  # doctest: +SKIP
    PosixPath('/usr/share/datasets/fashion-mnist')
    """
    in_use = find_fashion_mnist()
    if in_use and not force:
        read_fashion_mnist_files(in_use)  # a damaged copy is reported with the way to replace it
        return in_use
    errors = []
    installed = False
    if os.geteuid() == 0 and shutil.which("apt-get") and in_use in (None, _SYSTEM_DIR):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q"] + (["--reinstall"] if force else [])
        for cmd in (install + [FASHION_MNIST_PACKAGE],
                    ["sh", "-c", f"apt-get update -q && {' '.join(install)} {FASHION_MNIST_PACKAGE}"]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode == 0 and find_fashion_mnist():
                installed = True
                break
            errors.append(proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"])
    if not installed and shutil.which("apt-get") and shutil.which("dpkg"):
        error = _fetch_into_cache()
        if error:
            errors.append(error)
    found = find_fashion_mnist()
    if found is None:
        raise DataError(
            f"Fashion-MNIST is not installed and could not be fetched ({errors or 'no apt-get'}); "
            f"install Debian's {FASHION_MNIST_PACKAGE}, or set EDGEQD_DATA to a folder with the "
            "four IDX .gz files, or pass --data with your own .npz or image folder")
    try:
        read_fashion_mnist_files(found)
    except DataError as exc:
        cache = cache_dir() / "fashion-mnist" / "usr/share/datasets/fashion-mnist"
        notes = ([f"fetching failed: {errors}"] if errors else []) + (
            [f"{found} is looked up before the copy in {cache}"] if found != cache else [])
        raise DataError("; ".join([str(exc)] + notes)) from None
    return found


def _fetch_into_cache() -> Optional[list[str]]:
    """Download and unpack the Debian package into the cache, replacing any old copy; an error or None."""
    target = cache_dir() / "fashion-mnist"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fashion-mnist.tmp-") as tmp:
        proc = subprocess.run(["apt-get", "download", FASHION_MNIST_PACKAGE], cwd=tmp,
                              capture_output=True, text=True, timeout=900)
        debs = list(Path(tmp).glob("*.deb"))
        if proc.returncode != 0 or not debs:
            return proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        fresh = Path(tmp) / "unpacked"
        unpack = subprocess.run(["dpkg", "-x", str(debs[0]), str(fresh)], capture_output=True, text=True,
                                timeout=300)
        if unpack.returncode != 0:
            return unpack.stderr.strip().splitlines()[-1:] or [f"dpkg -x exit {unpack.returncode}"]
        read_fashion_mnist_files(fresh / "usr/share/datasets/fashion-mnist")  # never install a bad copy
        old = Path(tmp) / "old"
        if target.exists():
            target.rename(old)  # removed with the temporary folder
        fresh.rename(target)
    return None


_IDX_NDIM = {"x": 3, "y": 1}  # images (N, rows, cols), labels (N,)


def _idx_error(path: Path, problem: str) -> DataError:
    """A DataError for a damaged IDX file that says how to get a good copy."""
    fix = "run `edgeqd data fetch --force` to fetch a fresh copy"
    if os.environ.get("EDGEQD_DATA") and path.parent == Path(os.environ["EDGEQD_DATA"]):
        fix = f"replace it, or unset EDGEQD_DATA and {fix}"
    elif path.parent == _SYSTEM_DIR:
        fix = f"reinstall Debian's {FASHION_MNIST_PACKAGE} (apt-get install --reinstall) or {fix}"
    return DataError(f"{path}: {problem}; {fix}")


def _read_idx(path: Path, kind: str = "x") -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format: magic, dims, then raw uint8), checking every field.

    Args:
        path: the ``.gz`` file.
        kind: "x" (images: 3 dimensions) or "y" (labels: 1 dimension).
    """
    from edgeqd.data.npz import memory_limit

    ndim = _IDX_NDIM[kind]
    try:
        with gzip.open(path, "rb") as handle:
            header = handle.read(4 + 4 * ndim)
            if len(header) < 4 or header[:3] != b"\0\0\x08" or header[3] != ndim:
                raise _idx_error(path, f"not an IDX file of unsigned bytes with {ndim} dimension(s) "
                                       f"(magic {header[:4].hex() or 'missing'}, expected 000008{ndim:02x})")
            if len(header) < 4 + 4 * ndim:
                raise _idx_error(path, f"truncated IDX header ({len(header)} bytes)")
            dims = [int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
            expected = int(np.prod(dims, dtype=object))
            if not all(dims) or expected > memory_limit():
                raise _idx_error(path, f"IDX header declares dimensions {dims}: corrupt")
            raw = handle.read(expected)
            trailing = handle.read(1)  # reaching the end makes gzip check its CRC and length
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, ValueError) as exc:  # BadGzipFile is an OSError
        raise _idx_error(path, f"corrupt or truncated gzip file ({type(exc).__name__}: {str(exc)[:120]})") from None
    if len(raw) != expected or trailing:
        raise _idx_error(path, f"IDX header declares {expected:,} bytes of data ({dims}) but the file holds "
                               f"{len(raw):,}{' and more' if trailing else ''}")
    array = np.frombuffer(raw, dtype=np.uint8).reshape(dims)
    if kind == "y" and len(array) and array.max() >= len(FASHION_MNIST_CLASSES):
        raise _idx_error(path, f"label {int(array.max())} found; Fashion-MNIST labels are "
                               f"0..{len(FASHION_MNIST_CLASSES) - 1}")
    return array


def read_fashion_mnist_files(folder: Path) -> dict[str, np.ndarray]:
    """The four IDX files of ``folder``, checked: formats, sizes, labels 0..9, as many labels as images.

    Args:
        folder: a folder holding the four ``*-ubyte.gz`` files.
    """
    arrays = {key: _read_idx(folder / name, key[0]) for key, name in _FASHION_FILES.items()}
    for images, labels in (("x_train", "y_train"), ("x_eval", "y_eval")):
        if len(arrays[images]) != len(arrays[labels]):
            raise _idx_error(folder / _FASHION_FILES[labels], f"{len(arrays[labels]):,} labels for "
                             f"{len(arrays[images]):,} images in {_FASHION_FILES[images]}")
    if arrays["x_train"].shape[1:] != arrays["x_eval"].shape[1:]:
        raise _idx_error(folder / _FASHION_FILES["x_eval"], f"images of {arrays['x_eval'].shape[1:]} but the "
                         f"training images are {arrays['x_train'].shape[1:]}")
    return arrays


def load_fashion_mnist() -> Dataset:
    """The built-in dataset: 60,000 training and 10,000 test images, 28×28×1 in [0, 1].

    Falls back to Keras' download only when the Debian files are nowhere to be found.
    """
    folder = find_fashion_mnist()
    if folder is not None:
        arrays = read_fashion_mnist_files(folder)
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
