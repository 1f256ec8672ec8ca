"""Data loading: the built-in set, .npz archives and image folders, and their validation."""

from __future__ import annotations

import numpy as np
import pytest

from edgeqd.data import check_fits_model, load_dataset, load_image_folder
from edgeqd.errors import DataError


def test_fashion_mnist_is_the_real_dataset(fashion):
    assert fashion.x_train.shape == (60000, 28, 28, 1) and fashion.x_eval.shape == (10000, 28, 28, 1)
    assert fashion.x_train.dtype == np.float32
    assert 0.0 == fashion.x_train.min() and fashion.x_train.max() == 1.0
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    assert np.bincount(fashion.y_train).tolist() == [6000] * 10
    assert np.bincount(fashion.y_eval).tolist() == [1000] * 10
    assert fashion.class_names[9] == "Ankle boot"


def test_npz_without_validation_arrays_gets_a_seeded_split(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(100, dtype=np.float32).reshape(100, 1), y=np.arange(100) % 3)
    a, b = load_dataset(path, seed=3), load_dataset(path, seed=3)
    assert len(a.x_train) == 80 and len(a.x_eval) == 20
    assert np.array_equal(a.x_eval, b.x_eval)
    assert not np.array_equal(a.x_eval, load_dataset(path, seed=4).x_eval)
    # Every sample lands in exactly one split.
    assert sorted(np.concatenate([a.x_train, a.x_eval])[:, 0].tolist()) == list(range(100))


def test_npz_one_hot_labels_and_unlabelled_data(tmp_path):
    labelled = tmp_path / "onehot.npz"
    np.savez(labelled, x=np.zeros((10, 2), np.float32), y=np.eye(3)[np.arange(10) % 3])
    assert sorted(set(load_dataset(labelled).y_train.tolist())) == [0, 1, 2]
    unlabelled = tmp_path / "x_only.npz"
    np.savez(unlabelled, x=np.zeros((10, 2), np.float32))
    dataset = load_dataset(unlabelled)
    assert dataset.y_train is None and not dataset.labelled


def test_labels_for_only_one_split_are_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 2)), y=np.zeros(4, int), x_val=np.zeros((2, 2)))
    with pytest.raises(DataError, match="both x and x_val, or for neither"):
        load_dataset(path)


def _write_png(path, value, size=(12, 10)):
    import tensorflow as tf

    image = np.full((*size, 3), value, np.uint8)
    path.write_bytes(tf.io.encode_png(image).numpy())


def test_image_folder_follows_the_keras_convention(tmp_path):
    for label, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        for i in range(5):
            _write_png(tmp_path / name / f"{i}.png", 40 * label + i)
    dataset = load_image_folder(tmp_path, image_size=(8, 8), channels=3)
    assert dataset.class_names == ("cat", "dog")
    assert dataset.x_train.shape[1:] == (8, 8, 3)
    assert len(dataset.x_train) + len(dataset.x_eval) == 10
    # Pixels stay in [0, 255] as image_dataset_from_directory gives them; dogs are brighter.
    brightness = np.concatenate([dataset.x_train, dataset.x_eval]).mean(axis=(1, 2, 3))
    labels = np.concatenate([dataset.y_train, dataset.y_eval])
    assert brightness[labels == 1].min() > brightness[labels == 0].max()


def test_flat_image_folder_is_unlabelled(tmp_path):
    for i in range(4):
        _write_png(tmp_path / f"{i}.png", i)
    dataset = load_dataset(tmp_path, image_size=(6, 6), channels=1)
    assert dataset.y_train is None and dataset.x_train.shape[1:] == (6, 6, 1)


def test_unreadable_image_is_a_data_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        load_dataset(tmp_path)


def test_check_fits_model_allows_dynamic_dimensions(fashion):
    check_fits_model(fashion, (None, None, 1), 10)
    with pytest.raises(DataError, match=r"expects inputs of shape \(28, 28, 3\)"):
        check_fits_model(fashion, (28, 28, 3), 10)
    with pytest.raises(DataError, match="labels go up to 9 but the model has 5 outputs"):
        check_fits_model(fashion, (28, 28, 1), 5)


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2\n")
    with pytest.raises(DataError, match="unsupported data file"):
        load_dataset(path)


def _write_idx(path, array):
    import gzip

    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_edgeqd_data_points_at_another_copy_of_the_idx_files(tmp_path, monkeypatch):
    from edgeqd.data import load_fashion_mnist

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (6, 28, 28)), np.arange(6) % 10
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv("EDGEQD_DATA", str(tmp_path))
    dataset = load_fashion_mnist()
    assert dataset.x_train.shape == (6, 28, 28, 1)
    assert np.allclose(dataset.x_train[..., 0] * 255, images)  # IDX bytes read back exactly
    assert dataset.y_eval.tolist() == labels.tolist()
