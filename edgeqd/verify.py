"""Verification: every artifact runs in its real runtime and is compared with the model the user brought.

An artifact's outputs on the held-out samples are compared with the reference
outputs (the original float Keras model's) and with the labels: accuracy, top-1
agreement, mean |Δ|. ``max_drop`` turns an accuracy loss into a problem (exit 4).

Artifacts run through the device runner's own adapter (:mod:`edgeqd.devices.runner`:
LiteRT for ``.tflite``, ONNX Runtime for ``.onnx``), batched here; integer inputs and
outputs are quantized and dequantized with the artifact's own scale and zero point, so
every artifact is compared in the float units of the Keras model.

>>> ev = evaluate_outputs(np.eye(2), np.eye(2), np.array([0, 0]))
>>> ev.accuracy, ev.agreement
(0.5, 1.0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgeqd.errors import ConversionError
from edgeqd.types import ArtifactResult, Evaluation, Status, TensorInfo

# Samples per inference where the artifact's batch dimension is dynamic: verification runs
# up to 10,000 samples per artifact (batch 1 was 3x slower for an int8 .tflite).
BATCH = 256


def _open(path: str | Path):
    """The runner's model wrapper for ``path``, at the runtime's default thread count."""
    from edgeqd.devices import runner

    try:
        return runner.open_model(str(path), threads=None)
    except runner.RunnerError as exc:
        raise ConversionError(f"{path}: {exc}") from None


def _io(model) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    return tuple(tuple(TensorInfo(t["name"], tuple(t["shape"]), t["dtype"], tuple(t["scale"]),
                                  tuple(t["zero_point"])) for t in side) for side in model.tensors())


def _predict(model, path: str | Path, x: np.ndarray) -> np.ndarray:
    from edgeqd.devices import runner

    try:
        return runner.predict(model, x, batch=BATCH)
    except runner.RunnerError as exc:
        raise ConversionError(f"{path}: {exc}") from None


def predict(path: str | Path, x: np.ndarray) -> np.ndarray:
    """Float outputs of a single-input artifact for float inputs ``x``, in its real runtime.

    Args:
        path: the ``.tflite`` or ``.onnx`` file.
        x: float inputs (N, ...).

    Raises:
        ConversionError: the runtime cannot load or run the artifact, or ``x`` does not fit it.

    >>> predict("model_int8.tflite", x_eval).shape  # doctest: +SKIP
    (10000, 10)
    """
    return _predict(_open(path), path, x)


def artifact_io(path: str | Path) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """Inputs and outputs of an artifact; integer ones carry their scale(s) and zero point(s).

    Args:
        path: the ``.tflite`` or ``.onnx`` file.

    >>> artifact_io("model_int8.tflite")[0][0].dtype  # doctest: +SKIP
    'int8'
    """
    return _io(_open(path))


def evaluate_outputs(outputs: np.ndarray, reference: np.ndarray, labels: Optional[np.ndarray]) -> Evaluation:
    """Compare an artifact's outputs with the reference model's outputs and the labels.

    Args:
        outputs: the artifact's float outputs (N, classes).
        reference: the reference model's outputs on the same inputs.
        labels: integer labels, or None for unlabelled data.
    """
    top1 = outputs.argmax(axis=1)
    accuracy = None if labels is None else float((top1 == labels).mean())
    return Evaluation(samples=int(len(outputs)), accuracy=accuracy,
                      agreement=float((top1 == reference.argmax(axis=1)).mean()),
                      mean_abs_diff=float(np.abs(outputs - reference).mean()))


def verify_artifact(path: Path, x_eval: np.ndarray, reference: np.ndarray, labels: Optional[np.ndarray]
                    ) -> tuple[Evaluation, tuple[TensorInfo, ...], tuple[TensorInfo, ...], np.ndarray]:
    """Load an artifact in its runtime, describe its I/O and evaluate it.

    Args:
        path: the artifact (``.tflite`` or ``.onnx``).
        x_eval: held-out inputs.
        reference: the reference model's outputs on ``x_eval``.
        labels: held-out labels or None.

    Returns:
        The evaluation, the input and output tensors, and the artifact's outputs.
    """
    model = _open(path)
    inputs, outputs = _io(model)
    predictions = _predict(model, path, x_eval)
    if predictions.shape != reference.shape:
        raise ConversionError(f"{Path(path).name} outputs shape {predictions.shape[1:]} but the Keras model "
                              f"{reference.shape[1:]}")
    return evaluate_outputs(predictions, reference, labels), inputs, outputs, predictions


def drop_problems(rows: Sequence[ArtifactResult], reference_accuracy: Optional[float],
                  max_drop: Optional[float], quantized: set[str]) -> list[str]:
    """``--max-drop``: one sentence per quantized artifact that lost more than ``max_drop`` points.

    Args:
        rows: the verified artifacts.
        reference_accuracy: the reference model's accuracy (None without labels: nothing to check).
        max_drop: the budget in points, or None.
        quantized: names of the quantized formats (the budget applies to them only).

    >>> row = ArtifactResult("tflite-int8", "m.tflite", "tflite", Status.OK,
    ...                      evaluation=Evaluation(10, 0.8, 0.9, 0.1), accuracy_drop_pts=10.0)
    >>> drop_problems([row], 0.9, 1.0, {"tflite-int8"})
    ['m.tflite top-1 0.8000 vs float 0.9000: drop 10.00 pts > --max-drop 1.0']
    """
    if max_drop is None or reference_accuracy is None:
        return []
    return [f"{r.file} top-1 {r.evaluation.accuracy:.4f} vs float {reference_accuracy:.4f}: "
            f"drop {r.accuracy_drop_pts:.2f} pts > --max-drop {max_drop}"
            for r in rows if r.status == Status.OK and r.format in quantized
            and r.accuracy_drop_pts is not None and r.accuracy_drop_pts > max_drop]


def parity(top1: dict[str, np.ndarray], labels: Optional[np.ndarray]) -> dict:
    """Accuracies and pairwise top-1 agreement of the reference and the artifacts on the same samples.

    Args:
        top1: top-1 classes per model name (the reference first).
        labels: the labels, or None.

    >>> parity({"keras": np.array([0, 1]), "tflite-int8": np.array([0, 0])}, np.array([0, 1]))["agreement"]
    {'keras vs tflite-int8': 0.5}
    """
    names = list(top1)
    samples = len(next(iter(top1.values()))) if top1 else 0
    return {"samples": int(samples),
            "accuracy": {n: (None if labels is None else float((top1[n] == labels).mean())) for n in names},
            "agreement": {f"{a} vs {b}": float((top1[a] == top1[b]).mean())
                          for i, a in enumerate(names) for b in names[i + 1:]}}
