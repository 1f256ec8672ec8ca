"""Shared fixtures: small real data (a Fashion-MNIST slice) and a small real model.

Every test runs the real TensorFlow, LiteRT, ONNX Runtime and tf2onnx; models are
tiny and trained for one epoch on a slice so the suite stays fast on 2 cores.
"""

from __future__ import annotations

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

from pathlib import Path

import numpy as np
import pytest

from edgeqd.data import find_fashion_mnist, load_fashion_mnist

N_TRAIN, N_VAL = 1500, 400


def pytest_collection_modifyitems(config, items):
    """Without the Fashion-MNIST files (`make test` provides them) data tests are skipped, loudly."""
    if find_fashion_mnist() is None:
        skip = pytest.mark.skip(reason="Fashion-MNIST not installed: run `make data` (edgeqd data fetch)")
        for item in items:
            if "fashion" in item.fixturenames or "small_npz" in item.fixturenames:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def fashion():
    """The real built-in dataset."""
    return load_fashion_mnist()


@pytest.fixture(scope="session")
def small_npz(fashion, tmp_path_factory) -> Path:
    """An .npz slice of Fashion-MNIST in the user format: x, y, x_val, y_val."""
    path = tmp_path_factory.mktemp("data") / "fashion_small.npz"
    np.savez(path, x=fashion.x_train[:N_TRAIN], y=fashion.y_train[:N_TRAIN],
             x_val=fashion.x_eval[:N_VAL], y_val=fashion.y_eval[:N_VAL])
    return path


def build_small_cnn(input_shape=(28, 28, 1), num_classes=10, seed=0):
    """A tiny CNN (Conv-BN-ReLU, pool, conv, pool, dense logits): ~5 k parameters."""
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(8, 3, use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(16, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


@pytest.fixture(scope="session")
def small_model_path(fashion, tmp_path_factory) -> Path:
    """The tiny CNN trained for 8 epochs on the slice (~75% accuracy), saved as .keras."""
    import tf_keras as keras

    model = build_small_cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(fashion.x_train[:N_TRAIN], fashion.y_train[:N_TRAIN], epochs=8, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("models") / "small_cnn.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def converted(small_model_path, small_npz, tmp_path_factory):
    """One real `convert` run of the tiny CNN into the four default formats."""
    from edgeqd.pipeline import convert
    from edgeqd.settings import CalibrationSettings, ConvertSettings

    out = tmp_path_factory.mktemp("convert") / "out"
    return convert(small_model_path, small_npz, out, ConvertSettings(calibration=CalibrationSettings(samples=100)))
