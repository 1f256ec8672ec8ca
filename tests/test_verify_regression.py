"""Verification of regression heads and single-output models: MAE/RMSE/max |error|, max/mean |Δ|, --max-drop."""

from __future__ import annotations

import numpy as np
import pytest

from edgeqd.types import ArtifactResult, Evaluation, Status
from edgeqd.verify import (check_float_artifact, drop_problems, evaluate_outputs, int8_warnings, mae_increase_pct,
                           regression_errors, regression_parity)


def test_regression_figures_against_the_targets_and_the_float_model():
    reference = np.array([[1.0], [2.0], [3.0], [4.0]])
    outputs = reference + np.array([[0.5], [-0.5], [0.0], [1.0]])
    targets = np.array([1.0, 2.0, 2.0, 4.0])
    ev = evaluate_outputs(outputs, reference, targets, regression=True)
    # errors vs targets: 0.5, -0.5, 1.0, 1.0 → MAE 0.75, RMSE sqrt(2.5/4), max 1.0
    assert ev.mae == pytest.approx(0.75) and ev.rmse == pytest.approx(np.sqrt(0.625)) and ev.max_abs_error == 1.0
    assert ev.max_abs_diff == 1.0 and ev.mean_abs_diff == pytest.approx(0.5)
    assert ev.accuracy is None and ev.agreement is None  # no classes
    assert regression_errors(outputs, None) == {"mae": None, "rmse": None, "max_abs_error": None}


def test_a_single_output_has_no_top1_agreement():
    # argmax of one output is always 0: "agreement 100 %" would say nothing. max/mean |Δ| say it.
    ev = evaluate_outputs(np.array([[0.1], [5.0]]), np.array([[0.0], [0.0]]), None)
    assert ev.agreement is None and ev.max_abs_diff == 5.0 and ev.mean_abs_diff == pytest.approx(2.55)
    # A float artifact is then judged on its outputs alone.
    check_float_artifact("fp32.tflite", Evaluation(100, None, None, 1e-7), np.zeros((100, 1)))


def _row(name, mae, increase):
    return ArtifactResult(name, f"{name}.bin", "tflite", Status.OK, evaluation=Evaluation(
        200, None, None, 0.01, 0.1, mae, mae, mae), mae_increase_pct=increase)


def test_max_drop_for_regression_is_the_relative_increase_of_mae_in_percent():
    assert mae_increase_pct(0.125, 0.1) == 25.0 and mae_increase_pct(None, 0.1) is None
    rows = [_row("fine", 0.102, 2.0), _row("worse", 0.125, 25.0)]
    problems = drop_problems(rows, None, 10.0, {"fine", "worse"}, reference_mae=0.1)
    assert problems == ["worse.bin MAE 0.125 vs float 0.1: +25.00 % > --max-drop 10.0 (regression: the relative "
                        "increase of MAE, in percent)"]
    assert drop_problems(rows, None, 10.0, {"fine", "worse"}) == []  # no targets: nothing to compare
    assert int8_warnings(rows, None, {"fine", "worse"}) == ["worse.bin: MAE +25.0 % > 10 % on 200 samples"]


def test_regression_parity_gives_mae_and_differences_per_model():
    outputs = {"keras": np.array([[1.0], [2.0]]), "tflite-int8": np.array([[1.5], [2.0]])}
    section = regression_parity(outputs, np.array([1.0, 3.0]))
    assert section["task"] == "regression" and section["mae"] == {"keras": 0.5, "tflite-int8": 0.75}
    assert section["max_abs_diff"] == {"keras vs tflite-int8": 0.5}
    assert section["mean_abs_diff"] == {"keras vs tflite-int8": 0.25}
