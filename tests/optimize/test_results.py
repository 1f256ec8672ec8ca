"""The choice, the front and the exit-4 advice; settings, space and storage helpers (no training)."""

from __future__ import annotations

import pytest

import edgeqd  # noqa: F401
from edgeqd.errors import UsageError
from edgeqd.optimize.results import mark, no_candidate_message, relax_advice
from edgeqd.optimize.settings import OptimizeSettings
from edgeqd.optimize.space import Candidate, available_precisions, build_space
from edgeqd.optimize.study import constraint_values, redact

OBJ = ("drop_pts", "size_kb", "latency_ms")


def _row(number, status="trained", drop=1.0, size=10.0, latency=1.0, label="mlp w0.5 d1 int8 classic"):
    return {"number": number, "status": status, "drop_pts": drop, "size_kb": size, "latency_ms": latency,
            "candidate": {"label": label}, "reason": None}


def test_the_choice_is_the_smallest_drop_within_every_budget_and_the_front_spans_all_objectives():
    rows = [_row(0, drop=0.2, size=30), _row(1, drop=1.5, size=12), _row(2, drop=0.9, size=14, latency=3.0),
            _row(3, drop=2.0, size=13, latency=2.0), _row(4, status="pruned", drop=None, size=40, latency=None)]
    marked = mark(rows, {"size_kb": 16.0, "drop_pts": 2.0}, OBJ)
    assert marked["chosen"] == 2  # 0 is over the size budget; 2 beats 1 and 3 on drop
    assert [r["feasible"] for r in rows] == [False, True, True, True, None]
    assert marked["front"] == [0, 1, 2]  # 3 is dominated by 1 (worse on all three)
    assert rows[0]["violations"] == {"size_kb": 14.0}


def test_ties_on_drop_go_to_the_smaller_then_the_faster_artifact():
    rows = [_row(0, drop=1.0, size=12, latency=2.0), _row(1, drop=1.0, size=10, latency=5.0),
            _row(2, drop=1.0, size=10, latency=4.0)]
    assert mark(rows, {}, OBJ)["chosen"] == 2


def test_nothing_within_budget_names_the_closest_and_the_value_that_would_admit_it():
    rows = [_row(0, drop=3.0, size=20.0), _row(1, drop=0.5, size=18.0), _row(2, status="pruned", size=50.0,
                                                                             drop=None, latency=None)]
    budgets = {"size_kb": 16.0, "drop_pts": 1.0}
    assert mark(rows, budgets, OBJ)["chosen"] is None
    advice = relax_advice(rows, budgets)
    assert advice == ["--max-size-kb 18 would admit trial 1 (mlp w0.5 d1 int8 classic)"]
    message = no_candidate_message(rows, budgets)
    assert message.startswith("no candidate meets the budget (--max-size-kb 16, --max-drop 1) after 3 trials")
    assert "trial 1" in message.split("closest:")[1].split(";")[0]  # the nearest one comes first


def test_when_no_single_budget_suffices_the_advice_says_what_the_closest_needs():
    rows = [_row(0, drop=3.0, size=20.0)]
    mark(rows, {"size_kb": 16.0, "drop_pts": 1.0}, OBJ)
    assert relax_advice(rows, {"size_kb": 16.0, "drop_pts": 1.0}) == [
        "the closest trained candidate, trial 0, needs --max-size-kb 20 and --max-drop 3"]


def test_constraints_are_zero_or_less_when_feasible_and_unknown_figures_do_not_count():
    assert constraint_values({"size_kb": 10.0}, {"size_kb": 16.0, "latency_ms": 5.0}) == \
        {"latency_ms": 0.0, "size_kb": -6.0}


def test_settings_refuse_bad_lists_and_unknown_names():
    with pytest.raises(UsageError, match="--depths"):
        OptimizeSettings(depths=())
    with pytest.raises(UsageError, match="--precisions int3"):
        OptimizeSettings(precisions=("int3",))
    with pytest.raises(UsageError, match="--recipes fancy"):
        OptimizeSettings(recipes=("fancy",))
    with pytest.raises(UsageError, match="--max-size-kb must be a finite number > 0"):
        OptimizeSettings(max_size_kb=0.0)
    assert OptimizeSettings(max_drop=1, max_size_kb=16).budgets() == {"drop_pts": 1.0, "size_kb": 16.0}


def test_the_space_holds_the_families_that_fit_and_the_registered_precisions():
    from edgeqd.converters import CONVERTERS

    space = build_space(OptimizeSettings(widths=(0.5, 1), depths=(1,)), (64, 2), student_file="mine.keras")
    assert space.families == ("conv1d", "mlp", "file")
    assert space.precisions == available_precisions(())
    assert ("w4a8" in space.precisions) == ("tflite-w4a8" in CONVERTERS)  # looked up, never assumed
    assert space.size() == (2 * 2 * 1 + 1) * len(space.precisions) * 2
    with pytest.raises(UsageError, match="families that fit: conv1d, mlp"):
        build_space(OptimizeSettings(families=("cnn",)), (64, 2), None)
    assert Candidate("file", None, None, "int8", "dkd").label == "file int8 dkd"


def test_storage_urls_are_shown_without_their_password():
    assert redact("postgresql://ann:pw@db/x") == "postgresql://ann:***@db/x"
    assert redact("sqlite:////tmp/a/study.db") == "sqlite:////tmp/a/study.db"
