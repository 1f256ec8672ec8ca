"""A small trained model whose weights dominate its size, for the below-8-bit tests."""

from __future__ import annotations

from pathlib import Path


def weighty_model(fashion, samples: int = 2000):
    """Conv(8) → depthwise → pool → Dense(64) → Dense(10): 74 k weights, 99.8 % of them in the Dense.

    Trained one epoch on ``samples`` Fashion-MNIST images (fixed seed), so its logits are
    separated enough for agreement figures to mean something.

    Args:
        fashion: the Fashion-MNIST Dataset fixture.
        samples: training images.
    """
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = layers.DepthwiseConv2D(3, activation="relu", name="dw")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu", name="fc")(x)
    outputs = layers.Dense(10, name="logits")(x)
    model = keras.Model(inputs, outputs, name="weighty")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(fashion.x_train[:samples], fashion.y_train[:samples], epochs=1, batch_size=64, verbose=0)
    return model


def float_tflite(model, workdir: Path) -> bytes:
    """The float ``.tflite`` edgeqd's ``tflite-fp32`` converter writes for ``model``.

    Args:
        model: a tf_keras model.
        workdir: a scratch folder.
    """
    import numpy as np

    from edgeqd.converters import ConversionContext
    from edgeqd.converters.tflite import tflite_bytes

    context = ConversionContext(model=model, calibration=np.zeros((1,) + tuple(model.input_shape[1:]), np.float32),
                                workdir=workdir)
    return tflite_bytes(context, "float", "float32")
