"""An exact GELU (Keras' ``activation="gelu"``) converts to ONNX: TensorFlow's ``Erfc`` becomes ``1 − Erf``.

``tf.nn.gelu(approximate=False)`` computes ``0.5·x·erfc(−x/√2)``; tf2onnx copies ``Erfc`` as it is
and ONNX has no such operator, so before the rewrite ONNX Runtime refused the float model and the
int8 calibration (found by the model zoo's Keras 3 Transformer, issue 12).
"""

from __future__ import annotations

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import numpy as np


def test_exact_gelu_converts_to_onnx_float_and_int8(tmp_path):
    import onnx
    import tf_keras as keras

    from edgeqd.pipeline import convert
    from edgeqd.settings import CalibrationSettings, ConvertSettings

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="gelu"),
                              keras.layers.Dense(3)], name="gelu_mlp")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    result = convert(model, tmp_path / "data.npz", tmp_path / "out", ConvertSettings(
        formats=("onnx-fp32", "onnx-int8"), calibration=CalibrationSettings(samples=100)))
    rows = {row.format: row for row in result.artifacts}
    assert rows["onnx-fp32"].status.value == "ok", rows["onnx-fp32"].reason
    assert rows["onnx-int8"].status.value == "ok", rows["onnx-int8"].reason
    ops = {node.op_type for node in onnx.load(str(tmp_path / "out" / "model_fp32.onnx")).graph.node}
    assert "Erfc" not in ops and "Erf" in ops
    # float32 Erf vs TensorFlow's Erfc: the same function to rounding (outputs are O(1)).
    assert rows["onnx-fp32"].evaluation.max_abs_diff < 1e-5
