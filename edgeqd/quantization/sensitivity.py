"""Per-layer sensitivity: quantize one weighted layer at a time and measure how far the outputs move.

Each convolution / fully connected op of a float ``.tflite`` is quantized **alone** (every
other op stays float) with ai-edge-quantizer, at each precision it may take in LiteRT 2.3:

* ``w8a8`` — int8 weights and activations (the reference a lower precision is compared with);
* ``w4a8`` — int4 weights, int8 activations (CONV_2D and FULLY_CONNECTED only: depthwise
  convolutions have no int4 kernel);
* ``w8a16`` — int8 weights, int16 activations;
* ``w2`` — int2 weights (OCTAV), float activations (FULLY_CONNECTED only: LiteRT 2.3's int2
  convolution outputs garbage).

Each variant runs in LiteRT on held-out samples; its **agreement** (same top-1 class as the
float model), **SQNR** of its outputs against the float model's, and accuracy drop (with
labels) go in the table. Activation ranges are calibrated once, in one step over all
calibration samples (:func:`edgeqd.quantization.aeq.calibrate`), and reused by every variant.
The layer that moves the outputs most for the bytes it saves is the one mixed precision
keeps higher (:mod:`edgeqd.quantization.mixed`).

>>> compare(np.eye(3), np.eye(3), np.array([0, 1, 2]))["agreement"]
1.0
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgeqd.errors import UsageError

__all__ = ["MODES", "compare", "run_tflite", "weighted_layers", "single_layer_recipe", "sensitivity_table"]

# Precision variants, in the table's column order.
MODES = ("w8a8", "w4a8", "w8a16", "w2")
# (weight bits, activation bits) of the static variants.
_STATIC = {"w8a8": (8, 8), "w4a8": (4, 8), "w8a16": (8, 16)}


def run_tflite(model: bytes, x: np.ndarray, workdir: Optional[Path] = None) -> np.ndarray:
    """Outputs (dequantized float32) of a ``.tflite`` given as bytes, on LiteRT's default kernels.

    Args:
        model: the file's bytes.
        x: float inputs (N, ...).
        workdir: where to write the file for the runner (a temporary folder when None).
    """
    from edgeqd.devices import runner

    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        path = Path(folder) / "variant.tflite"
        path.write_bytes(model)
        return runner.predict(runner.open_model(str(path), threads=None), x, batch=256)


def compare(reference: np.ndarray, outputs: np.ndarray, labels: Optional[np.ndarray]) -> dict[str, Any]:
    """Agreement, SQNR (dB) and accuracy drop (points, None without labels) of ``outputs`` vs the float ``reference``.

    Args:
        reference: the float model's outputs (N, classes).
        outputs: the variant's outputs on the same inputs.
        labels: integer labels (N,), or None.
    """
    from edgeqd.converters.kernels import agreement, sqnr_db

    result = {"agreement": round(agreement(reference, outputs), 4), "sqnr_db": sqnr_db(reference, outputs),
              "accuracy": None, "drop_pts": None}
    if labels is not None and reference.shape[-1] > 1:
        float_accuracy = float((reference.argmax(-1) == labels).mean())
        accuracy = float((outputs.argmax(-1) == labels).mean())
        result.update(accuracy=round(accuracy, 4), drop_pts=round(100.0 * (float_accuracy - accuracy), 3))
    return result


def weighted_layers(model: bytes) -> list:
    """The float model's convolution / fully connected ops (:class:`~edgeqd.artifact_info.weights.StoredWeight`).

    Args:
        model: a float ``.tflite``'s bytes.

    Raises:
        UsageError: the file is already quantized (sensitivity starts from the float model).
    """
    from edgeqd.artifact_info.weights import weighted_ops

    layers = weighted_ops(model)
    quantized = [w for w in layers if w.dtype != "float32"]
    if quantized:
        raise UsageError(f"sensitivity needs the float .tflite (model_fp32.tflite): {len(quantized)} of "
                         f"{len(layers)} weighted ops here already store {quantized[0].dtype} weights")
    return layers


def single_layer_recipe(op: str, output: str, mode: str) -> list[dict]:
    """An ai-edge-quantizer recipe quantizing only the op whose first output is ``output``.

    Args:
        op: the TFLite builtin name.
        output: the op's output tensor name(s) (its scope).
        mode: one of :data:`MODES`.
    """
    from edgeqd.quantization.lowbit import _manager, _op, _plain, dynamic_recipe, scope_of

    if mode == "w2":
        return dynamic_recipe({f"{op}|{scope_of(output)}": 2})
    weight_bits, activation_bits = _STATIC[mode]
    manager = _manager()
    manager.add_static_config(scope_of(output), _op(op), activation_num_bits=activation_bits,
                              weight_num_bits=weight_bits)
    return _plain(manager.get_quantization_recipe())


def _allowed(op: str, mode: str) -> bool:
    from edgeqd.quantization.lowbit import allowed_bits

    if mode == "w4a8":
        return 4 in allowed_bits(op, "static")
    if mode == "w2":
        return 2 in allowed_bits(op, "dynamic")
    return True


def sensitivity_table(model: bytes, calibration: np.ndarray, x: np.ndarray, labels: Optional[np.ndarray],
                      modes: tuple = MODES, workdir: Optional[Path] = None) -> dict[str, Any]:
    """Quantize each weighted layer alone at each precision; agreement, SQNR and drop against float.

    A module-level function of plain data (the pipeline may run it in its child process).

    Args:
        model: the float ``.tflite``'s bytes.
        calibration: representative inputs for the activation ranges.
        x: held-out inputs the variants are compared on.
        labels: their integer labels, or None (agreement and SQNR only).
        modes: which of :data:`MODES` to measure.
        workdir: a scratch folder.

    Returns:
        {"samples", "modes", "layers": [{"layer", "op", "elements", "float_bytes", mode: {agreement,
        sqnr_db, accuracy, drop_pts, bytes} or None where the op has no kernel at that precision}]}.
    """
    from edgeqd.quantization.aeq import calibrate, quantize_with
    from edgeqd.quantization.lowbit import static_recipe

    layers = weighted_layers(model)
    reference = run_tflite(model, x, workdir)
    # One calibration (min/max of every tensor) serves every static variant, int16 activations included.
    ranges = calibrate(model, static_recipe(), calibration) if any(m in _STATIC for m in modes) else None
    rows = []
    for layer in layers:
        row: dict[str, Any] = {"layer": layer.layer.split("/", 1)[-1], "op": layer.op, "elements": layer.elements,
                               "output": layer.output}
        for mode in modes:
            if not _allowed(layer.op, mode):
                row[mode] = None
                continue
            quantized = quantize_with(model, single_layer_recipe(layer.op, layer.output, mode),
                                      ranges if mode in _STATIC else None)
            row[mode] = {**compare(reference, run_tflite(quantized, x, workdir), labels),
                         "bytes_saved": len(model) - len(quantized)}
        rows.append(row)
    return {"samples": int(len(x)), "modes": list(modes), "layers": rows,
            "method": "each weighted layer quantized alone (every other op float), ai-edge-quantizer; run in "
                      "LiteRT; agreement = same top-1 class as the float model; SQNR of the outputs vs float"}

