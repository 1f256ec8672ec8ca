"""Verification: every artifact runs in its real runtime and is compared with the model the user brought.

An artifact's outputs on the held-out samples are compared with the reference
outputs (the original float Keras model's) and with the labels: accuracy, top-1
agreement, mean |Δ|. A float artifact that disagrees with the float model beyond
:data:`FLOAT_MIN_AGREEMENT` / :data:`FLOAT_MAX_RELATIVE_MEAN_ABS_DIFF` fails
(:func:`check_float_artifact`); an int8 artifact past :data:`WARN_DROP_PTS` or
:data:`WARN_MIN_AGREEMENT` gets a warning (:func:`int8_warnings`), and ``max_drop``
turns an accuracy loss into a problem (exit 4).

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

# A float artifact (float32, float16 weights) computes the float model's function: it fails
# verification when its top-1 class differs from the float model's on more than 1 % of the
# held-out samples (and on more than one sample: 1 of 20 is rounding at a tie), or when its
# outputs differ by more than 1 % of their size on average: mean |Δ| > 0.01 × (1 + mean |y|).
# float16 weights move outputs by ~0.05 % (relative); a wrong or broken model by its whole size.
FLOAT_MIN_AGREEMENT = 0.99
FLOAT_MAX_RELATIVE_MEAN_ABS_DIFF = 0.01
# An int8 artifact past either threshold gets a warning line (the run still succeeds; --max-drop
# makes a drop an error): more than 2 accuracy points lost against the float model, or top-1
# agreement with it below 95 %. PTQ of the models checked loses 0-2 points and agrees on 96-99 %.
WARN_DROP_PTS = 2.0
WARN_MIN_AGREEMENT = 0.95


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


def check_float_artifact(name: str, evaluation: Evaluation, reference: np.ndarray) -> None:
    """Raise :class:`ConversionError` when a float artifact disagrees with the float model beyond tolerance.

    See :data:`FLOAT_MIN_AGREEMENT` and :data:`FLOAT_MAX_RELATIVE_MEAN_ABS_DIFF`.

    Args:
        name: the artifact's file name.
        evaluation: its evaluation against the float model.
        reference: the float model's outputs on the same samples.

    >>> check_float_artifact("m.tflite", Evaluation(100, None, 0.8, 0.0), np.eye(100))
    Traceback (most recent call last):
    edgeqd.errors.ConversionError: m.tflite is a float artifact but agrees with the float model on only 80.00% of 100 samples (needs >= 99%): it does not compute what the model computes
    """
    disagreeing = round((1.0 - evaluation.agreement) * evaluation.samples)
    if evaluation.agreement < FLOAT_MIN_AGREEMENT and disagreeing > 1:
        raise ConversionError(f"{name} is a float artifact but agrees with the float model on only "
                              f"{100 * evaluation.agreement:.2f}% of {evaluation.samples} samples (needs >= "
                              f"{100 * FLOAT_MIN_AGREEMENT:.0f}%): it does not compute what the model computes")
    bound = FLOAT_MAX_RELATIVE_MEAN_ABS_DIFF * (1.0 + float(np.abs(reference).mean()))
    if not evaluation.mean_abs_diff <= bound:
        raise ConversionError(f"{name} is a float artifact but its outputs differ from the float model's by "
                              f"{evaluation.mean_abs_diff:.4g} on average (allowed {bound:.4g}): it does not "
                              "compute what the model computes")


def int8_warnings(rows: Sequence[ArtifactResult], reference_accuracy: Optional[float],
                  quantized: set[str]) -> list[str]:
    """One sentence per quantized artifact past :data:`WARN_DROP_PTS` or :data:`WARN_MIN_AGREEMENT`.

    Args:
        rows: the verified artifacts.
        reference_accuracy: the float model's accuracy (None without labels).
        quantized: names of the quantized formats.

    >>> row = ArtifactResult("tflite-int8", "m.tflite", "tflite", Status.OK,
    ...                      evaluation=Evaluation(500, 0.8, 0.9, 0.1), accuracy_drop_pts=3.0)
    >>> int8_warnings([row], 0.83, {"tflite-int8"})
    ['m.tflite: drop 3.00 pts > 2.0 and agreement with the float model 90.00% < 95% on 500 samples']
    """
    warnings = []
    for r in rows:
        if r.status != Status.OK or r.format not in quantized or r.evaluation is None:
            continue
        past = []
        if reference_accuracy is not None and r.accuracy_drop_pts is not None and r.accuracy_drop_pts > WARN_DROP_PTS:
            past.append(f"drop {r.accuracy_drop_pts:.2f} pts > {WARN_DROP_PTS}")
        if r.evaluation.agreement < WARN_MIN_AGREEMENT:
            past.append(f"agreement with the float model {100 * r.evaluation.agreement:.2f}% < "
                        f"{100 * WARN_MIN_AGREEMENT:.0f}%")
        if past:
            warnings.append(f"{r.file}: {' and '.join(past)} on {r.evaluation.samples} samples")
    return warnings


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
