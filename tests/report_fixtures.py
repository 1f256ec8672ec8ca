"""A tiny real model converted once per test process, shared by the inspect/bundle/report tests.

Building it takes ~15 s (TensorFlow import + four conversions), so it is cached at module
level rather than in a session fixture: a fixture imported into several test modules would
be built once per module.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow is imported (TFMOT needs Keras 2)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_CACHE: dict[str, Any] = {}


def tiny_model():
    """Conv → BN → ReLU → pool → Dense(32) → Dense(10): small, but the dense kernel has
    3200 weights, over the 1024 that dynamic-range quantization needs to touch a tensor."""
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 1), name="image")
    x = layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(32, activation="relu")(x)
    outputs = layers.Dense(len(CLASSES), name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


def tiny_dataset():
    """Random 12×12 'images' in 0..1 with labels; fixed seed."""
    from edgeqd.types import Dataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (192, 12, 12, 1)).astype(np.float32) / 255.0
    y = rng.integers(0, len(CLASSES), 192).astype(np.int64)
    return Dataset("tiny-random", x[:128], y[:128], x[128:], y[128:], CLASSES,
                   {"scale": 1 / 255, "offset": 0.0})


def tiny_run() -> dict[str, Any]:
    """Convert the tiny model once; return {"dir", "manifest", "model", "dynamic"} (paths)."""
    if _CACHE:
        return _CACHE
    import tensorflow as tf

    from edgeqd.pipeline import convert

    root = Path(tempfile.mkdtemp(prefix="edgeqd-report-tests-"))
    atexit.register(shutil.rmtree, root, True)
    model = tiny_model()
    from edgeqd.converters import CONVERTERS

    # Every registered format: inspect must describe whatever convert can produce.
    from edgeqd.settings import CalibrationSettings, ConvertSettings, VerifySettings

    settings = ConvertSettings(formats=tuple(sorted(CONVERTERS)), calibration=CalibrationSettings(samples=32),
                               verify=VerifySettings(eval_samples=64))
    result = convert(model, tiny_dataset(), root / "run", settings)
    result.raise_for_problems()
    # Dynamic-range (weights-only) TFLite: int8 weights, float activations and I/O.
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    dynamic = root / "model_dynamic.tflite"
    dynamic.write_bytes(converter.convert())
    _CACHE.update({"dir": root / "run", "manifest": result.manifest, "dynamic": dynamic, "root": root})
    return _CACHE


def artifact_path(run: dict[str, Any], fmt: str) -> Path:
    """The file of format ``fmt`` (e.g. "tflite-int8") in a :func:`tiny_run`."""
    entry = next(a for a in run["manifest"]["artifacts"] if a["format"] == fmt)
    return run["dir"] / entry["file"]
