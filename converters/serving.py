"""Converting a SavedModel that has no Keras layers (Keras 3 ``model.export()``) from its serving signature.

Such a model reaches the converters as :attr:`ConversionContext.saved_model_dir`: TFLite reads
the folder as it is (:func:`edgeqd.converters.tflite` uses it in place of its own export), and the
float ONNX comes from tf2onnx's ``--saved-model`` front end, run as its command line in a child
process (:func:`onnx_from_saved_model`) — the documented entry point, and a crash there is a row.
Only post-training quantization applies: there are no layers to fine-tune.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edgeqd.errors import ConversionError

# tf2onnx imports TensorFlow and traces the graph: seconds for small models, minutes for big ones.
TF2ONNX_TIMEOUT_S = 900


def onnx_from_saved_model(saved_model_dir: str | Path, out_path: Path, opset: int,
                          signature: str = "serving_default") -> Path:
    """Convert a SavedModel's serving signature to a float ONNX model with ``python -m tf2onnx.convert``.

    Args:
        saved_model_dir: the SavedModel folder.
        out_path: the ``.onnx`` file to write.
        opset: the ONNX opset.
        signature: the signature to convert.

    Returns:
        ``out_path``.

    Raises:
        ConversionError: tf2onnx failed (its last error line is in the message) or timed out.
    """
    command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model_dir), "--signature_def",
               signature, "--opset", str(opset), "--output", str(out_path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TF2ONNX_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"tf2onnx --saved-model did not finish in {TF2ONNX_TIMEOUT_S} s") from None
    if done.returncode != 0 or not out_path.exists():
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line or "error" in line] or lines or ["no output"]
        raise ConversionError(f"tf2onnx --saved-model failed (exit {done.returncode}): {errors[-1][:400]}")
    return out_path
