"""Small real teachers and data for the distillation tests, built once per session.

The image teacher is a ~106 k-parameter CNN trained for 3 epochs on 3,000
Fashion-MNIST images (~85% accuracy, a few seconds on 2 cores): big enough that the
default ``cnn`` student is >10× smaller, small enough to run in every test.
The sequence teacher learns a synthetic 3-class N×T×C task (which of three
frequencies a noisy sine wave has) that a 1-D CNN solves almost perfectly.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from edgeqd.types import Dataset

N_TEACHER = 3000  # images the teacher learns from
N_STUDENT = 600  # images a student distils from (a disjoint slice)
N_EVAL = 300


def build_image_teacher(seed: int = 0, softmax: bool = False):
    """Conv-BN-ReLU ×2 with pooling, dense 64, dense logits (or probabilities with ``softmax``)."""
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="t_conv1")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="t_bn1")(x)
    x = layers.ReLU(name="t_relu1")(x)
    x = layers.MaxPooling2D(name="t_pool1")(x)
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="t_conv2")(x)
    x = layers.BatchNormalization(momentum=0.9, name="t_bn2")(x)
    x = layers.ReLU(name="t_relu2")(x)
    x = layers.MaxPooling2D(name="t_pool2")(x)
    x = layers.Flatten(name="t_flatten")(x)
    x = layers.Dense(64, activation="relu", name="t_hidden")(x)
    outputs = layers.Dense(10, activation="softmax" if softmax else None, name="t_logits")(x)
    return keras.Model(inputs, outputs, name="test_teacher")


@functools.lru_cache(maxsize=None)
def fashion_slices():
    """(teacher x, y), a student Dataset (labelled) — disjoint slices of Fashion-MNIST."""
    from edgeqd.data import load_fashion_mnist

    data = load_fashion_mnist()
    lo, hi = N_TEACHER, N_TEACHER + N_STUDENT
    student = Dataset("fashion-slice", data.x_train[lo:hi], data.y_train[lo:hi],
                      data.x_eval[:N_EVAL], data.y_eval[:N_EVAL], data.class_names)
    return (data.x_train[:N_TEACHER], data.y_train[:N_TEACHER]), student


@functools.lru_cache(maxsize=None)
def image_teacher_path() -> Path:
    """The trained image teacher, saved as .keras in a session temp folder."""
    import tf_keras as keras

    (x, y), _ = fashion_slices()
    model = build_image_teacher()
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    path = Path(tempfile.mkdtemp(prefix="edgeqd-test-teacher-")) / "teacher.keras"
    model.save(path)
    return path


def sine_sequences(n: int, steps: int = 64, channels: int = 2, seed: int = 0):
    """N×T×C noisy sine waves; the class is which of three frequencies they have."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    t = np.arange(steps)[None, :, None]
    freq = np.array([0.05, 0.12, 0.25])[y][:, None, None]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, channels))
    x = np.sin(2 * np.pi * freq * t + phase) + 0.3 * rng.standard_normal((n, steps, channels))
    return x.astype(np.float32), y.astype(np.int64)


@functools.lru_cache(maxsize=None)
def sequence_teacher_path() -> Path:
    """A Conv1D teacher (~30 k parameters) trained on 1,500 sine sequences, saved as .keras."""
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(0)
    x, y = sine_sequences(1500, seed=1)
    inputs = keras.Input(x.shape[1:], name="sequence")
    h = layers.Conv1D(32, 7, padding="same", activation="relu", name="t_conv1")(inputs)
    h = layers.MaxPooling1D()(h)
    h = layers.Conv1D(64, 5, padding="same", activation="relu", name="t_conv2")(h)
    h = layers.GlobalAveragePooling1D()(h)
    h = layers.Dense(64, activation="relu")(h)
    outputs = layers.Dense(3, name="t_logits")(h)
    model = keras.Model(inputs, outputs, name="sequence_teacher")
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=4, batch_size=64, verbose=0)
    path = Path(tempfile.mkdtemp(prefix="edgeqd-test-seq-teacher-")) / "sequence_teacher.keras"
    model.save(path)
    return path


def tiny_user_student(name: str = "user_student"):
    """A small tf_keras student a user might bring (28×28×1 images, 10 logits; a BN to fold)."""
    import tf_keras as keras
    from tf_keras import layers

    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="s_conv1")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="s_bn1")(x)
    x = layers.ReLU(name="s_relu1")(x)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="s_conv2")(x)
    x = layers.Flatten(name="s_flatten")(x)
    outputs = layers.Dense(10, name="s_logits")(x)
    return keras.Model(inputs, outputs, name=name)
