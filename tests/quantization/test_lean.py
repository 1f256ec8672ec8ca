"""QAT int8 artifacts are as lean as PTQ's of the same model, and carry the user's names (issue 13).

Before: edgeqd's Conv1D student had 68 ops after QAT (12 SHAPE, 12 STRIDED_SLICE, 12 PACK,
15 RESHAPE of dynamic-shape plumbing, unfused RELUs) where PTQ had 20, and the QAT model's
input tensor was called ``…/quantize_layer/AllValuesQuantize/FakeQuantWithMinMaxVars;…``.
For each rewrite pattern the QAT artifact must be within 10 % of PTQ's in op count and bytes.
"""

from __future__ import annotations

import edgeqd  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

from collections import Counter

import numpy as np
import pytest

from qat_models import conv1d_student_model, randomise_batch_norms

# The acceptance margin: ops and bytes within 10 % of the PTQ artifact's.
MARGIN = 1.10


def separable_model():
    """SeparableConv2D with and without a fused activation, then BN → ReLU (the separable-conv2d rule)."""
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(7)
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(8, 3, activation="relu")(inputs)
    x = layers.SeparableConv2D(16, 3, activation="relu")(x)
    x = layers.SeparableConv2D(16, 3, use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    outputs = layers.Dense(10, name="logits")(layers.GlobalAveragePooling2D()(x))
    return randomise_batch_norms(keras.Model(inputs, outputs, name="separable"))


def conv_activation_bn_model():
    """Conv2D(activation="relu") → BatchNormalization twice (the fused-activation and batchnorm-affine rules)."""
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(8)
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.BatchNormalization()(layers.Conv2D(16, 3, activation="relu")(inputs))
    x = layers.BatchNormalization()(layers.Conv2D(16, 3, activation="relu")(x))
    outputs = layers.Dense(10, name="logits")(layers.GlobalAveragePooling2D()(x))
    return randomise_batch_norms(keras.Model(inputs, outputs, name="conv_bn_fused"))


PATTERNS = {"conv1d": conv1d_student_model, "separable-conv2d": separable_model,
            "fused-activation-bn": conv_activation_bn_model}


def _samples(model, n=128):
    rng = np.random.default_rng(0)
    if len(model.input_shape) == 3:  # smooth "sensor" sequences
        steps = model.input_shape[1]
        t = np.linspace(0, 4 * np.pi, steps)[None, :, None]
        x = np.sin(t * rng.uniform(0.5, 3, (n, 1, 3)) + rng.uniform(0, 6, (n, 1, 3)))
        return (x + 0.1 * rng.standard_normal(x.shape)).astype("float32")
    return np.abs(rng.standard_normal((n, *model.input_shape[1:]))).astype("float32") * 0.3


def _describe(data: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    ops = Counter(op["op_name"] for op in interpreter._get_ops_details())
    return {"ops": sum(ops.values()), "histogram": dict(ops), "bytes": len(data),
            "inputs": [d["name"] for d in interpreter.get_input_details()],
            "outputs": [d["name"] for d in interpreter.get_output_details()],
            "signature": interpreter.get_signature_list()}


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_qat_artifact_is_as_lean_as_ptq_and_keeps_the_users_names(pattern, tmp_path):
    from edgeqd.converters import ConversionContext
    from edgeqd.converters.tflite import tflite_bytes
    from edgeqd.quantization.calibrate import calibrate_ranges
    from edgeqd.quantization.prepare import prepare_qat

    model = PATTERNS[pattern]()
    x = _samples(model)
    prepared = prepare_qat(model, x)
    calibrate_ranges(prepared.qat_model, prepared.float_model, x)
    context = ConversionContext(model=model, calibration=x, workdir=tmp_path, qat_model=prepared.qat_model)
    ptq, qat = _describe(tflite_bytes(context, "float", "int8")), _describe(tflite_bytes(context, "qat", "int8"))
    assert qat["ops"] <= MARGIN * ptq["ops"], (ptq["histogram"], qat["histogram"])
    assert qat["bytes"] <= MARGIN * ptq["bytes"], (ptq["bytes"], qat["bytes"])
    # No dynamic-shape plumbing, and every activation fused into its conv.
    assert not {"SHAPE", "STRIDED_SLICE", "PACK", "RELU"} & set(qat["histogram"]), qat["histogram"]
    # The user's names, exactly as PTQ gives them: the signature's keys and the tensors' names.
    assert qat["signature"] == ptq["signature"] == {"serving_default": {
        "inputs": [model.inputs[0].name.split(":")[0]], "outputs": ["logits"]}}
    assert qat["inputs"] == ptq["inputs"] and qat["outputs"] == ptq["outputs"]
