"""A small Keras 3 model zoo for the bridge tests: every layer family the translators handle, tiny inputs,
random weights with fixed seeds (``weights=None`` for the applications).

Each builder returns an unsaved Keras 3 model; :data:`ZOO` gives them with every variable randomised
(:func:`randomize`), so that a weight copied into the wrong slot changes the outputs.
"""

from __future__ import annotations

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import numpy as np


def _keras():
    """Keras 3 (``import keras``), seeded."""
    import keras

    keras.utils.set_random_seed(0)
    return keras


def randomize(model, seed: int = 0):
    """Give every variable random values so that a weight copied into the wrong slot changes the
    outputs: ``weights=None`` leaves BatchNormalization at gamma=1, beta=0, mean=0, var=1 and biases
    at 0, where a swap would go unnoticed. Kernels are He-scaled so deep nets keep their signal."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False):
        cls = layer.__class__.__name__
        for var in layer._trainable_variables + layer._non_trainable_variables:
            name, shape = var.path.split("/")[-1], tuple(var.shape)
            if name == "count":
                continue
            if cls == "BatchNormalization":
                value = {"gamma": rng.uniform(0.8, 1.2, shape), "beta": rng.normal(0, 0.1, shape),
                         "moving_mean": rng.normal(0, 0.1, shape),
                         "moving_variance": rng.uniform(0.8, 1.2, shape)}[name]
            elif "variance" in name:
                value = rng.uniform(0.5, 2.0, shape)
            elif name == "mean":
                value = rng.normal(0, 0.5, shape)
            elif "bias" in name or len(shape) == 1:
                value = rng.normal(0, 0.1, shape)
            elif cls == "DepthwiseConv2D" or name == "depthwise_kernel":
                value = rng.normal(0, 1, shape) * np.sqrt(2.0 / np.prod(shape[:2]))
            elif cls == "Embedding":
                value = rng.normal(0, 1, shape)
            else:
                value = rng.normal(0, 1, shape) * np.sqrt(2.0 / np.prod(shape[:-1]))
            var.assign(value.astype(var.dtype))
        if cls == "Normalization":
            layer.finalize_state()  # its mean/variance tensors derive from the variables
    return model


def seq_cnn():
    """Rescaling, Conv, BatchNormalization, Dropout and a softmax head."""
    keras = _keras()
    return keras.Sequential([
        keras.Input((16, 16, 1)), keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.BatchNormalization(),
        keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dropout(0.1),
        keras.layers.Dense(5, activation="softmax")], name="seq_cnn")


def residual_norm():
    """An adapted Normalization, a residual Add around a DepthwiseConv2D, logits."""
    keras = _keras()
    inp = keras.Input((12, 12, 3))
    norm = keras.layers.Normalization()
    norm.adapt(np.random.default_rng(0).normal(3.0, 2.0, (32, 12, 12, 3)).astype("float32"))
    x = norm(inp)
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    y = keras.layers.BatchNormalization()(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4)(x)
    return keras.Model(inp, out, name="residual_norm")


def mobilenet_v2(classes: int = 5):
    keras = _keras()
    return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=classes)


def mobilenet_v3(preprocessing: bool = True):
    keras = _keras()
    return keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), alpha=0.75, weights=None, classes=5,
                                               include_preprocessing=preprocessing)


def conv1d():
    keras = _keras()
    return keras.Sequential([
        keras.Input((32, 2)), keras.layers.Conv1D(8, 5, activation="relu"), keras.layers.MaxPooling1D(),
        keras.layers.Conv1D(8, 3, padding="same"), keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(3, activation="softmax")], name="conv1d")


def lstm():
    keras = _keras()
    return keras.Sequential([keras.Input((10, 3)), keras.layers.LSTM(8, return_sequences=True),
                             keras.layers.LSTM(6), keras.layers.Dense(3, activation="softmax")], name="lstm")


def gru():
    keras = _keras()
    inp = keras.Input((10, 3))
    x = keras.layers.GRU(8, return_sequences=True)(inp)
    x = keras.layers.GRU(6, reset_after=False)(x)
    return keras.Model(inp, keras.layers.Dense(3)(x), name="gru")


def transformer(vocab: int = 50, length: int = 12, dim: int = 16):
    keras = _keras()
    inp = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(vocab, dim)(inp)
    att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(x, x)
    x = keras.layers.LayerNormalization()(keras.layers.Add()([x, att]))
    ff = keras.layers.Dense(dim, activation="gelu")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(keras.layers.Add()([x, ff]))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x), name="transformer")


def regression():
    keras = _keras()
    inp = keras.Input((6,))
    x = keras.layers.Dense(16, activation="swish")(inp)
    x = keras.layers.Dense(8, activation="hard_sigmoid", name="hard_sig")(x)
    x = keras.layers.Activation("hard_silu")(x)
    x = x * 2.0 + 1.0  # Keras 3 ops on KerasTensors
    return keras.Model(inp, keras.layers.Dense(1)(x), name="regression")


def nested():
    keras = _keras()
    inp = keras.Input((8,))
    block = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(8)], name="block")
    inner_in = keras.Input((8,))
    inner = keras.Model(inner_in, keras.layers.Dense(4)(inner_in), name="inner")
    x = block(inp)
    x = block(x)  # shared, called twice
    return keras.Model(inp, inner(x), name="nested")


def bidirectional():
    keras = _keras()
    return keras.Sequential([keras.Input((6, 3)), keras.layers.Bidirectional(keras.layers.LSTM(4)),
                             keras.layers.Dense(2)], name="bidirectional")


def misc_image():
    """Layers the applications do not use (LeakyReLU's renamed argument, transposed and separable
    convolutions, PReLU, GroupNormalization, ...)."""
    keras = _keras()
    layers = keras.layers
    inp = keras.Input((16, 16, 3))
    x = layers.SeparableConv2D(8, 3, padding="same")(inp)
    x = layers.LeakyReLU(negative_slope=0.2)(x)
    x = layers.Conv2DTranspose(6, 3, strides=2, padding="same")(x)
    x = layers.PReLU()(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.UpSampling2D()(x)
    x = layers.ELU()(x)
    x = layers.Cropping2D(2)(x)
    x = layers.Concatenate()([x, layers.Conv2D(6, 1, activation="gelu")(x)])
    x = layers.SpatialDropout2D(0.1)(x)
    x = layers.GroupNormalization(groups=3)(x)
    x = layers.Permute((2, 1))(layers.Reshape((-1, 12))(x))
    x = layers.UnitNormalization()(layers.Flatten()(x))
    x = layers.Dense(4)(layers.GaussianNoise(0.1)(x))
    return keras.Model(inp, layers.Softmax()(x), name="misc_image")


def misc_seq():
    """Two inputs (token ids and a float memory), two outputs, a padding mask from
    Embedding(mask_zero=True) through LSTM/Attention/TimeDistributed/SimpleRNN, keyword-called MHA."""
    keras = _keras()
    layers = keras.layers
    tokens = keras.Input((10,), dtype="int32", name="tokens")
    memory = keras.Input((5, 8), name="memory")
    x = layers.Embedding(30, 8, mask_zero=True)(tokens)
    x = layers.LSTM(8, return_sequences=True)(x)
    att = layers.MultiHeadAttention(num_heads=2, key_dim=4)(query=x, value=memory)
    x = layers.Attention()([x, att])
    x = layers.TimeDistributed(layers.Dense(6))(x)
    x = layers.SimpleRNN(5)(x)
    x = layers.Conv1DTranspose(4, 2)(layers.RepeatVector(3)(x))
    x = layers.GlobalMaxPooling1D()(x)
    return keras.Model([tokens, memory], [layers.Dense(2, activation="sigmoid", name="p")(x),
                                          layers.Dense(1, name="r")(x)], name="misc_seq")


def augmented():
    """The Keras tutorial pattern: a nested augmentation Sequential (built without an Input) and
    image preprocessing layers inside the model."""
    keras = _keras()
    layers = keras.layers
    augment = keras.Sequential([layers.RandomFlip("horizontal"), layers.RandomRotation(0.1),
                                layers.RandomZoom(0.1), layers.RandomContrast(0.2),
                                layers.RandomTranslation(0.1, 0.1), layers.RandomBrightness(0.2)], name="augment")
    inp = keras.Input((16, 16, 3))
    x = layers.Rescaling(1 / 255.0)(augment(inp))
    x = layers.CenterCrop(10, 10)(layers.Resizing(12, 12)(x))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, activation="relu")(x))
    return keras.Model(inp, layers.Dense(3, activation="softmax")(x), name="augmented")


RAW = {
    "seq_cnn": seq_cnn, "residual_norm": residual_norm, "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_pre": lambda: mobilenet_v3(True), "mobilenet_v3_nopre": lambda: mobilenet_v3(False),
    "conv1d": conv1d, "lstm": lstm, "gru": gru,
    "transformer": transformer, "regression": regression, "nested": nested, "bidirectional": bidirectional,
    "misc_image": misc_image, "misc_seq": misc_seq, "augmented": augmented,
}


ZOO = {name: (lambda build=build: randomize(build())) for name, build in RAW.items()}
