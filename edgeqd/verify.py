"""Verification: every artifact runs in its real runtime and is compared with the model the user brought.

An artifact's outputs on the held-out samples are compared with the reference
outputs (the original float Keras model's) and with the labels: accuracy, top-1
agreement, mean and max |Δ| — for regression targets MAE, RMSE and max |error| instead
of accuracy, and no top-1 agreement (nor for a single output). A float artifact that
disagrees with the float model beyond :data:`FLOAT_MIN_AGREEMENT` /
:data:`FLOAT_MAX_RELATIVE_MEAN_ABS_DIFF` fails (:func:`check_float_artifact`); an int8
artifact past :data:`WARN_DROP_PTS`, :data:`WARN_MIN_AGREEMENT` or
:data:`WARN_MAE_INCREASE_PCT` gets a warning (:func:`int8_warnings`), and ``max_drop``
turns an accuracy loss (a relative MAE increase for regression) into a problem (exit 4).

Artifacts run through the device runner's own adapter (:mod:`edgeqd.devices.runner`:
LiteRT for ``.tflite``, ONNX Runtime for ``.onnx``), batched here; quantized inputs and
outputs are quantized and dequantized with the artifact's own scale and zero point, so
every artifact is compared in the float units of the Keras model. Integer inputs that
are not quantized (token ids) are passed as they are.

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
# Regression: an int8 artifact whose MAE against the targets is more than 10 % above the float
# model's gets a warning; --max-drop P makes an increase above P % an error (exit 4). The zoo's
# regression heads lose 0-3 % in int8 (benchmarks/RESULTS.md).
WARN_MAE_INCREASE_PCT = 10.0


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


def regression_errors(outputs: np.ndarray, targets: Optional[np.ndarray]) -> dict[str, Optional[float]]:
    """MAE, RMSE and max |error| of ``outputs`` against regression ``targets`` (all None without targets).

    Args:
        outputs: predictions (N, k).
        targets: targets (N,) or (N, k), or None.

    >>> regression_errors(np.array([[1.0], [3.0]]), np.array([2.0, 3.0]))
    {'mae': 0.5, 'rmse': 0.7071067811865476, 'max_abs_error': 1.0}
    """
    if targets is None:
        return {"mae": None, "rmse": None, "max_abs_error": None}
    error = np.asarray(outputs, np.float64).reshape(len(outputs), -1) - \
        np.asarray(targets, np.float64).reshape(len(targets), -1)
    return {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error ** 2).mean())),
            "max_abs_error": float(np.abs(error).max())}


def evaluate_outputs(outputs: np.ndarray, reference: np.ndarray, labels: Optional[np.ndarray],
                     regression: bool = False) -> Evaluation:
    """Compare an artifact's outputs with the reference model's outputs and the labels (or targets).

    Top-1 agreement needs classes: for regression, and for a model with a single output (whose
    argmax is always 0), it is None and max |Δ| / mean |Δ| tell how close the outputs are.

    Args:
        outputs: the artifact's float outputs (N, classes).
        reference: the reference model's outputs on the same inputs.
        labels: integer labels, regression targets, or None for unlabelled data.
        regression: ``labels`` are regression targets: MAE, RMSE and max |error| replace accuracy.
    """
    diff = np.abs(outputs - reference)
    common = {"samples": int(len(outputs)), "mean_abs_diff": float(diff.mean()),
              "max_abs_diff": float(diff.max()) if diff.size else 0.0}
    if regression:
        return Evaluation(accuracy=None, agreement=None, **common, **regression_errors(outputs, labels))
    top1 = outputs.argmax(axis=1)
    accuracy = None if labels is None else float((top1 == labels).mean())
    agreement = None if outputs.shape[1] == 1 else float((top1 == reference.argmax(axis=1)).mean())
    return Evaluation(accuracy=accuracy, agreement=agreement, **common)


def verify_artifact(path: Path, x_eval: np.ndarray, reference: np.ndarray, labels: Optional[np.ndarray],
                    regression: bool = False
                    ) -> tuple[Evaluation, tuple[TensorInfo, ...], tuple[TensorInfo, ...], np.ndarray]:
    """Load an artifact in its runtime, describe its I/O and evaluate it.

    Args:
        path: the artifact (``.tflite`` or ``.onnx``).
        x_eval: held-out inputs (float, or integer for an integer input: passed as they are).
        reference: the reference model's outputs on ``x_eval``.
        labels: held-out labels (regression targets with ``regression``) or None.
        regression: evaluate as regression (:func:`evaluate_outputs`).

    Returns:
        The evaluation, the input and output tensors, and the artifact's outputs.
    """
    model = _open(path)
    inputs, outputs = _io(model)
    predictions = _predict(model, path, x_eval)
    if predictions.shape != reference.shape:
        raise ConversionError(f"{Path(path).name} outputs shape {predictions.shape[1:]} but the Keras model "
                              f"{reference.shape[1:]}")
    return evaluate_outputs(predictions, reference, labels, regression), inputs, outputs, predictions


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
    agreement = 1.0 if evaluation.agreement is None else evaluation.agreement  # None: no classes to agree on
    disagreeing = round((1.0 - agreement) * evaluation.samples)
    if agreement < FLOAT_MIN_AGREEMENT and disagreeing > 1:
        raise ConversionError(f"{name} is a float artifact but agrees with the float model on only "
                              f"{100 * agreement:.2f}% of {evaluation.samples} samples (needs >= "
                              f"{100 * FLOAT_MIN_AGREEMENT:.0f}%): it does not compute what the model computes")
    bound = FLOAT_MAX_RELATIVE_MEAN_ABS_DIFF * (1.0 + float(np.abs(reference).mean()))
    if not evaluation.mean_abs_diff <= bound:
        raise ConversionError(f"{name} is a float artifact but its outputs differ from the float model's by "
                              f"{evaluation.mean_abs_diff:.4g} on average (allowed {bound:.4g}): it does not "
                              "compute what the model computes")


def int8_warnings(rows: Sequence[ArtifactResult], reference_accuracy: Optional[float],
                  quantized: set[str]) -> list[str]:
    """One sentence per quantized artifact past :data:`WARN_DROP_PTS`, :data:`WARN_MIN_AGREEMENT` or
    (regression) :data:`WARN_MAE_INCREASE_PCT`.

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
        if r.mae_increase_pct is not None and r.mae_increase_pct > WARN_MAE_INCREASE_PCT:
            past.append(f"MAE +{r.mae_increase_pct:.1f} % > {WARN_MAE_INCREASE_PCT:.0f} %")
        if r.evaluation.agreement is not None and r.evaluation.agreement < WARN_MIN_AGREEMENT:
            past.append(f"agreement with the float model {100 * r.evaluation.agreement:.2f}% < "
                        f"{100 * WARN_MIN_AGREEMENT:.0f}%")
        if past:
            warnings.append(f"{r.file}: {' and '.join(past)} on {r.evaluation.samples} samples")
    return warnings


def mae_increase_pct(mae: Optional[float], reference_mae: Optional[float]) -> Optional[float]:
    """How much larger ``mae`` is than the float model's ``reference_mae``, in percent of it (regression).

    Args:
        mae: an artifact's MAE against the targets.
        reference_mae: the float model's.

    >>> mae_increase_pct(0.11, 0.10)
    10.0
    """
    if mae is None or reference_mae is None:
        return None
    return round(100.0 * (mae - reference_mae) / max(reference_mae, 1e-12), 3)


def drop_problems(rows: Sequence[ArtifactResult], reference_accuracy: Optional[float],
                  max_drop: Optional[float], quantized: set[str], reference_mae: Optional[float] = None) -> list[str]:
    """``--max-drop``: one sentence per quantized artifact that lost more than ``max_drop``.

    For a classifier ``max_drop`` is in accuracy points; for regression it is the relative
    increase of the MAE against the targets, in percent of the float model's MAE
    (``--max-drop 5``: the int8 MAE may be at most 5 % above the float model's).

    Args:
        rows: the verified artifacts.
        reference_accuracy: the reference model's accuracy (None without labels: nothing to check).
        max_drop: the budget in points (percent of MAE for regression), or None.
        quantized: names of the quantized formats (the budget applies to them only).
        reference_mae: regression: the float model's MAE (None without targets).

    >>> row = ArtifactResult("tflite-int8", "m.tflite", "tflite", Status.OK,
    ...                      evaluation=Evaluation(10, 0.8, 0.9, 0.1), accuracy_drop_pts=10.0)
    >>> drop_problems([row], 0.9, 1.0, {"tflite-int8"})
    ['m.tflite top-1 0.8000 vs float 0.9000: drop 10.00 pts > --max-drop 1.0']
    """
    if max_drop is None:
        return []
    checked = [r for r in rows if r.status == Status.OK and r.format in quantized]
    problems = [f"{r.file} MAE {r.evaluation.mae:.6g} vs float {reference_mae:.6g}: +{r.mae_increase_pct:.2f} % "
                f"> --max-drop {max_drop} (regression: the relative increase of MAE, in percent)"
                for r in checked if reference_mae is not None and r.mae_increase_pct is not None
                and r.mae_increase_pct > max_drop]
    if reference_accuracy is None:
        return problems
    return problems + [f"{r.file} top-1 {r.evaluation.accuracy:.4f} vs float {reference_accuracy:.4f}: "
                       f"drop {r.accuracy_drop_pts:.2f} pts > --max-drop {max_drop}"
                       for r in checked if r.accuracy_drop_pts is not None and r.accuracy_drop_pts > max_drop]


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


def regression_parity(outputs: dict[str, np.ndarray], targets: Optional[np.ndarray]) -> dict:
    """The parity section for regression (and single-output) models: MAE per model and |Δ| to the reference.

    Args:
        outputs: outputs per model name (the reference first).
        targets: regression targets, or None.

    >>> regression_parity({"keras": np.array([[1.0]]), "tflite-int8": np.array([[1.5]])}, None)["max_abs_diff"]
    {'keras vs tflite-int8': 0.5}
    """
    names = list(outputs)
    reference = outputs[names[0]] if names else np.zeros((0, 1))
    return {"samples": int(len(reference)), "task": "regression",
            "mae": {n: regression_errors(o, targets)["mae"] for n, o in outputs.items()},
            "max_abs_diff": {f"{names[0]} vs {n}": float(np.abs(outputs[n] - reference).max()) if len(reference)
                             else 0.0 for n in names[1:]},
            "mean_abs_diff": {f"{names[0]} vs {n}": float(np.abs(outputs[n] - reference).mean()) if len(reference)
                              else 0.0 for n in names[1:]}}
