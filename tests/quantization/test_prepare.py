"""edgeqd.quantization.prepare: rewrite, check and wrap real models; what TFMOT cannot take stays float, listed.

The models come from :mod:`qat_models` (TFMOT alone rejects them); batch-norm statistics
are randomised so that a wrong fold would show.
"""

from __future__ import annotations

import re

import edgeqd  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np
import pytest

from edgeqd.errors import ModelError, QuantizationError
from edgeqd.quantization.prepare import make_qat, prepare_qat
from edgeqd.quantization.rewrite import rewrite_for_quantization
from qat_models import conv_relu_bn_model, mini_xception_model, randomise_batch_norms, samples, separable_bn_model

def test_rules_chain_separable_with_fused_activation_before_batch_norm():
    model = separable_bn_model()
    prepared = prepare_qat(model, samples(model))
    assert [r.rule for r in prepared.rewrites] == ["separable-conv2d", "batchnorm-affine"]
    assert prepared.float_layers == []
    assert prepared.max_abs_diff <= prepared.tolerance * (1 + 10)


def test_original_model_is_not_modified():
    model = conv_relu_bn_model()
    before = [w.copy() for w in model.get_weights()]
    names = [layer.name for layer in model.layers]
    prepare_qat(model, samples(model))
    assert [layer.name for layer in model.layers] == names
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_unquantizable_layers_stay_float_and_are_listed():
    model = mini_xception_model(extra_float_layers=True)
    prepared = prepare_qat(model, samples(model))
    # TFOpLambda names get a process-wide counter suffix (tf.math.multiply_1, …): match the prefix.
    assert [(re.sub(r"_\d+$", "", f.name) if f.kind == "TFOpLambda" else f.name, f.kind)
            for f in prepared.float_layers] \
        == [("layer_norm", "LayerNormalization"), ("tf.math.multiply", "TFOpLambda")]
    assert all(f.reason for f in prepared.float_layers)
    x = samples(model)
    assert prepared.qat_model.predict(x, verbose=0).shape == (len(x), 10)
    section = prepared.to_dict()
    assert [f["kind"] for f in section["left_float"]] == ["LayerNormalization", "TFOpLambda"]


def test_strict_turns_left_float_into_an_error():
    model = mini_xception_model(extra_float_layers=True)
    with pytest.raises(QuantizationError, match=r"--strict: 2 layer\(s\) would stay float: layer_norm"):
        prepare_qat(model, samples(model), strict=True)


def test_sequential_models_are_handled():
    import tf_keras as keras
    from tf_keras import layers

    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(4, 3, activation="relu"),
                              layers.BatchNormalization(), layers.Flatten(), layers.Dense(10)])
    prepared = prepare_qat(randomise_batch_norms(model), samples(model))
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
        prepare_qat(model, samples(model))


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


def test_activation_tfmot_does_not_know_is_quantized_at_its_output():
    # A Keras 3 MobileNetV3Small translates its hard-swish to Activation(hard_silu); TFMOT's
    # activation config raised on it without naming the layer, failing the whole QAT run.
    import tf_keras as keras

    from edgeqd.models.keras3.activations import tf_keras_activation

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.Activation(tf_keras_activation("hard_silu"), name="hswish")(x)
    x = keras.layers.Activation("relu", name="known")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    qat_model, float_layers = make_qat(model)
    assert float_layers == []
    wrapped = qat_model.get_layer("quant_hswish")
    assert type(wrapped.quantize_config).__name__ == "Default8BitOutputQuantizeConfig"
    assert type(qat_model.get_layer("quant_known").quantize_config).__name__ == "Default8BitActivationQuantizeConfig"
    assert qat_model.predict(np.zeros((1, 8, 8, 3), np.float32), verbose=0).shape == (1, 2)
