"""Small tf_keras models that TFMOT's own ``quantize_model`` rejects or mishandles, one per rewrite rule.

Shared by the rewrite, prepare and QAT tests. Batch-norm statistics are randomised so
that a wrong fold would show.
"""

from __future__ import annotations

import edgeqd  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np


def randomise_batch_norms(model, seed=0):
    """Non-trivial γ, β, μ, σ² so that a wrong batch-norm fold changes the outputs."""
    from tf_keras import layers

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2.0, gamma.shape).astype("f4"),
                               rng.normal(0, 0.5, beta.shape).astype("f4"),
                               rng.normal(0, 0.5, mean.shape).astype("f4"),
                               rng.uniform(0.5, 2.0, variance.shape).astype("f4")])
    return model


def conv_relu_bn_model():
    """Conv2D(activation="relu") → BatchNormalization: TFMOT raises on the batch norm."""
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(1)
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(16, 3, activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(16, activation="relu")(x)
    x = layers.BatchNormalization()(x)  # rank-2 batch norm: folded through reshapes
    outputs = layers.Dense(10, name="logits")(x)
    return randomise_batch_norms(keras.Model(inputs, outputs, name="conv_relu_bn"))


def conv1d_model():
    """Conv1D (TFMOT has no Conv1D support), causal and strided, on 28 steps × 28 channels."""
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(2)
    inputs = keras.Input((28, 28), name="rows")
    x = layers.Conv1D(16, 3, padding="causal", dilation_rate=2, activation="relu")(inputs)
    x = layers.Conv1D(16, 3, strides=2, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling1D()(x)
    outputs = layers.Dense(10, name="logits")(x)
    return randomise_batch_norms(keras.Model(inputs, outputs, name="conv1d_net"))


def conv1d_shared_model():
    """A Conv1D beside a layer called twice: lifting the whole trunk is off, the per-layer conv1d rule applies."""
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(5)
    inputs = keras.Input((28, 28), name="rows")
    x = layers.Conv1D(8, 3, activation="relu", name="conv")(inputs)
    x = layers.GlobalAveragePooling1D()(x)
    shared = layers.Dense(8, activation="relu", name="shared")
    x = shared(shared(x))
    outputs = layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="conv1d_shared")


def conv1d_student_model():
    """edgeqd's own conv1d student family ([Conv1D → BN → ReLU → pool] × 3) on 128 steps × 3 channels."""
    import tf_keras as keras

    from edgeqd.distillation.students import build_student

    keras.utils.set_random_seed(6)
    return randomise_batch_norms(build_student("conv1d", (128, 3), 6, width=0.5))


def mini_xception_model(extra_float_layers=False):
    """Keras' Xception entry flow in miniature: SeparableConv2D blocks with residual Adds."""
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(3)
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    previous = x
    for size in (24, 32):
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = layers.Conv2D(size, 1, strides=2, padding="same")(previous)
        x = layers.add([x, residual])
        previous = x
    if extra_float_layers:
        x = layers.LayerNormalization(name="layer_norm")(x)  # not in TFMOT's registry
        x = x * 0.5  # a TFOpLambda: TFMOT's quantize_model builds a broken graph around it
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, name="logits")(x)
    return randomise_batch_norms(keras.Model(inputs, outputs, name="mini_xception"))


def separable_bn_model():
    """SeparableConv2D(activation="relu") → BatchNormalization: TFMOT raises; needs two rules together."""
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(4)
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same")(inputs)
    x = layers.SeparableConv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10)(x)
    return randomise_batch_norms(keras.Model(inputs, outputs, name="separable_bn"))


def samples(model, n=32, seed=0):
    """``n`` uniform random inputs in [0, 1) of ``model``'s input shape (fixed seed)."""
    return np.random.default_rng(seed).random((n, *model.input_shape[1:])).astype("float32")
