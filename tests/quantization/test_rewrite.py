"""edgeqd.quantization.rewrite: every rule keeps the function (within the stated tolerance) and makes TFMOT accept the model.

Each rule has a model that TFMOT's own ``quantize_model`` rejects or mishandles;
after the rewrite the float outputs match the original's and ``make_qat`` wraps it.
Batch-norm statistics are randomised so that a wrong fold would show.
"""

from __future__ import annotations

import edgeqd  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np
import pytest

from edgeqd.errors import QuantizationError
from edgeqd.quantization.prepare import make_qat
from edgeqd.quantization.lift import LIFT_RULE
from edgeqd.quantization.rewrite import REWRITE_RULES, REWRITE_TOLERANCE, check_equivalent, rewrite_for_quantization
from qat_models import (conv1d_model, conv1d_shared_model, conv1d_student_model, conv_relu_bn_model,
                        mini_xception_model, samples, separable_bn_model)

# One model per registered rule (and the lift-1d pass); test_every_rule_has_a_case keeps this complete.
RULE_CASES = {
    "fused-activation": conv_relu_bn_model,
    "batchnorm-affine": conv_relu_bn_model,
    "conv1d": conv1d_shared_model,
    LIFT_RULE: conv1d_model,
    "separable-conv2d": mini_xception_model,
}


def test_every_rule_has_a_case():
    assert set(RULE_CASES) == {*REWRITE_RULES, LIFT_RULE}


def test_lift_keeps_the_whole_1d_trunk_2d_so_tfmot_folds_every_batch_norm():
    """Conv1D → BN → ReLU → pool × 3 becomes Conv2D → BN → ReLU → pool × 3 with one Reshape, at the input."""
    model = conv1d_student_model()
    rewritten, applied = rewrite_for_quantization(model)
    assert [r.rule for r in applied] == [LIFT_RULE] * 3  # no batchnorm-affine: each BN follows its conv
    kinds = [type(layer).__name__ for layer in rewritten.layers]
    assert kinds.count("Reshape") == 1 and "Conv1D" not in kinds and "DepthwiseConv2D" not in kinds
    assert check_equivalent(model, rewritten, samples(model)) <= REWRITE_TOLERANCE


@pytest.mark.parametrize("rule", sorted(RULE_CASES))
def test_rule_keeps_the_function_and_tfmot_accepts_it(rule):
    model = RULE_CASES[rule]()
    rewritten, applied = rewrite_for_quantization(model)
    assert rule in {r.rule for r in applied}
    x = samples(model)
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


def test_a_wrong_rewrite_is_caught_by_the_equivalence_check():
    model = conv_relu_bn_model()
    rewritten, _ = rewrite_for_quantization(model)
    layer = rewritten.get_layer("bn")  # the folded affine map
    weights = layer.get_weights()
    layer.set_weights([weights[0] * 1.01, weights[1]])
    with pytest.raises(QuantizationError, match="a rewrite rule is wrong"):
        check_equivalent(model, rewritten, samples(model))
