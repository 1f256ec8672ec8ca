"""edgeqd.quantization.rewrite: every rule keeps the function (within the stated tolerance) and makes TFMOT accept the model.

Each rule has a model that TFMOT's own ``quantize_model`` rejects or mishandles;
after the rewrite the float outputs match the original's and ``make_qat`` wraps it.
Batch-norm statistics are randomised so that a wrong fold would show.
"""

from __future__ import annotations

import re

import edgeqd  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np
import pytest

from edgeqd.errors import ModelError, QuantizationError
from edgeqd.quantization.rewrite import (REWRITE_RULES, REWRITE_TOLERANCE, check_equivalent, make_qat, prepare_qat,
                            rewrite_for_quantization)


def _randomise_batch_norms(model, seed=0):
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
    return _randomise_batch_norms(keras.Model(inputs, outputs, name="conv_relu_bn"))


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
    return _randomise_batch_norms(keras.Model(inputs, outputs, name="conv1d_net"))


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
    return _randomise_batch_norms(keras.Model(inputs, outputs, name="mini_xception"))


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
    return _randomise_batch_norms(keras.Model(inputs, outputs, name="separable_bn"))


# One model per registered rule; test_every_rule_has_a_case keeps this complete.
RULE_CASES = {
    "fused-activation": conv_relu_bn_model,
    "batchnorm-affine": conv_relu_bn_model,
    "conv1d": conv1d_model,
    "separable-conv2d": mini_xception_model,
}


def test_every_rule_has_a_case():
    assert set(RULE_CASES) == set(REWRITE_RULES)


def _samples(model, n=32, seed=0):
    return np.random.default_rng(seed).random((n, *model.input_shape[1:])).astype("float32")


@pytest.mark.parametrize("rule", sorted(RULE_CASES))
def test_rule_keeps_the_function_and_tfmot_accepts_it(rule):
    model = RULE_CASES[rule]()
    rewritten, applied = rewrite_for_quantization(model)
    assert rule in {r.rule for r in applied}
    x = _samples(model)
    # Equivalence within the stated tolerance (float32 summation order is all that may differ).
    diff = check_equivalent(model, rewritten, x)
    expected = np.asarray(model(x, training=False))
    assert diff <= REWRITE_TOLERANCE * (1 + np.abs(expected).max())
    qat_model, float_layers = make_qat(rewritten)
    assert float_layers == []
    assert qat_model.predict(x, verbose=0).shape == expected.shape


@pytest.mark.parametrize("build", [conv_relu_bn_model, conv1d_model, separable_bn_model])
def test_tfmot_alone_rejects_these_models(build):
    """The point of the rules: TFMOT's quantize_model fails on the originals."""
    import tensorflow_model_optimization as tfmot

    with pytest.raises(Exception):
        tfmot.quantization.keras.quantize_model(build())


def test_rules_chain_separable_with_fused_activation_before_batch_norm():
    model = separable_bn_model()
    prepared = prepare_qat(model, _samples(model))
    assert [r.rule for r in prepared.rewrites] == ["separable-conv2d", "batchnorm-affine"]
    assert prepared.float_layers == []
    assert prepared.max_abs_diff <= prepared.tolerance * (1 + 10)


def test_original_model_is_not_modified():
    model = conv_relu_bn_model()
    before = [w.copy() for w in model.get_weights()]
    names = [layer.name for layer in model.layers]
    prepare_qat(model, _samples(model))
    assert [layer.name for layer in model.layers] == names
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_unquantizable_layers_stay_float_and_are_listed():
    model = mini_xception_model(extra_float_layers=True)
    prepared = prepare_qat(model, _samples(model))
    # TFOpLambda names get a process-wide counter suffix (tf.math.multiply_1, …): match the prefix.
    assert [(re.sub(r"_\d+$", "", f.name) if f.kind == "TFOpLambda" else f.name, f.kind)
            for f in prepared.float_layers] \
        == [("layer_norm", "LayerNormalization"), ("tf.math.multiply", "TFOpLambda")]
    assert all(f.reason for f in prepared.float_layers)
    x = _samples(model)
    assert prepared.qat_model.predict(x, verbose=0).shape == (len(x), 10)
    section = prepared.to_dict()
    assert [f["kind"] for f in section["left_float"]] == ["LayerNormalization", "TFOpLambda"]


def test_strict_turns_left_float_into_an_error():
    model = mini_xception_model(extra_float_layers=True)
    with pytest.raises(QuantizationError, match=r"--strict: 2 layer\(s\) would stay float: layer_norm"):
        prepare_qat(model, _samples(model), strict=True)


def test_sequential_models_are_handled():
    import tf_keras as keras
    from tf_keras import layers

    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(4, 3, activation="relu"),
                              layers.BatchNormalization(), layers.Flatten(), layers.Dense(10)])
    prepared = prepare_qat(_randomise_batch_norms(model), _samples(model))
    assert {r.rule for r in prepared.rewrites} == {"fused-activation", "batchnorm-affine"}


def test_per_tensor_qat_has_one_scale_per_weight_tensor():
    model = conv_relu_bn_model()
    qat_model, _ = make_qat(rewrite_for_quantization(model)[0], per_channel=False)
    # TFMOT keeps per-channel ranges as vectors of length C; per-tensor as scalars.
    ranges = [w for w in qat_model.weights if "kernel_min" in w.name]
    assert ranges and all(w.shape.rank == 0 for w in ranges)


def test_model_without_trainable_weights_is_refused():
    model = conv_relu_bn_model()
    model.trainable = False
    with pytest.raises(ModelError, match="no trainable weights"):
        prepare_qat(model, _samples(model))


def test_subclassed_model_is_refused_with_a_typed_error():
    import tf_keras as keras

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 4), "float32"))
    with pytest.raises(QuantizationError, match="subclassed"):
        prepare_qat(net, np.zeros((2, 4), "float32"))


def test_a_wrong_rewrite_is_caught_by_the_equivalence_check():
    model = conv_relu_bn_model()
    rewritten, _ = rewrite_for_quantization(model)
    layer = rewritten.get_layer("bn")  # the folded affine map
    weights = layer.get_weights()
    layer.set_weights([weights[0] * 1.01, weights[1]])
    with pytest.raises(QuantizationError, match="a rewrite rule is wrong"):
        check_equivalent(model, rewritten, _samples(model))
