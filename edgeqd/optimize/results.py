"""What a study found: one row per trial, the Pareto front, the chosen candidate, what to relax.

The rows are read back from the study (every process stores its figures there), so the
front and the choice are the same whichever process writes them.

The choice: among trained candidates that meet every budget, the one with the smallest
accuracy drop; ties go to the smaller, then the faster artifact.

>>> rows = [{"number": 0, "status": "trained", "drop_pts": 0.5, "size_kb": 20.0, "latency_ms": None},
...         {"number": 1, "status": "trained", "drop_pts": 2.0, "size_kb": 9.0, "latency_ms": None}]
>>> mark(rows, {"size_kb": 16.0}, ("drop_pts", "size_kb"))["chosen"]
1
>>> [r["on_front"] for r in rows]
[True, True]
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

OPTIONS = {"drop_pts": "--max-drop", "size_kb": "--max-size-kb", "latency_ms": "--max-latency-ms"}
UNITS = {"drop_pts": "pts", "size_kb": "KB", "latency_ms": "ms"}
FIGURES = ("accuracy", "drop_pts", "size_bytes", "size_untrained_bytes", "size_kb", "latency_ms", "params", "quantization",
           "student_accuracy", "file", "trial_dir", "worker", "seconds", "reason", "duplicate_of")


def trial_rows(study) -> list[dict[str, Any]]:
    """One JSON-ready row per trial of the study, in trial order.

    Args:
        study: the Optuna study.
    """
    from edgeqd.optimize.space import from_params

    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        status = attrs.get("status") or trial.state.name.lower()
        if trial.state.name == "FAIL" and status not in ("failed",):
            status = "failed"  # interrupted, or its worker died (heartbeat)
        candidate = from_params(trial.params).to_dict() if "family" in trial.params and \
            "precision" in trial.params and "recipe" in trial.params else None
        row = {"number": trial.number, "state": trial.state.name.lower(), "status": status, "candidate": candidate}
        row.update({k: attrs.get(k) for k in FIGURES})
        if trial.state.name == "FAIL" and not row["reason"]:
            row["reason"] = "interrupted, or its worker stopped (no figures recorded)"
        rows.append(row)
    return rows


def violations(row: dict, budgets: dict) -> dict[str, float]:
    """How far each known figure of ``row`` is over its budget (only those over).

    Args:
        row: a trial row.
        budgets: ``{"size_kb": 16.0, …}``.
    """
    return {name: round(row[name] - limit, 4) for name, limit in budgets.items()
            if row.get(name) is not None and row[name] > limit}


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def mark(rows: list[dict], budgets: dict, objectives: Sequence[str]) -> dict[str, Any]:
    """Mark each row ``feasible`` and ``on_front``; return the chosen trial number (or None) and the front.

    Args:
        rows: trial rows (changed in place).
        budgets: the budgets that are set.
        objectives: the objective names minimised.
    """
    trained = [r for r in rows if r["status"] == "trained"]
    for row in rows:
        row["violations"] = violations(row, budgets)
        row["feasible"] = None if row["status"] != "trained" else not row["violations"]
        row["on_front"] = False
    points = {r["number"]: [r[name] for name in objectives] for r in trained}
    for row in trained:
        row["on_front"] = not any(_dominates(other, points[row["number"]])
                                  for number, other in points.items() if number != row["number"])
    feasible = [r for r in trained if r["feasible"]]
    chosen = min(feasible, key=lambda r: tuple(r[name] for name in objectives)) if feasible else None
    return {"chosen": chosen["number"] if chosen else None,
            "front": [r["number"] for r in trained if r["on_front"]]}


def _excess(row: dict, budgets: dict) -> float:
    """Summed relative excess over the budgets (0 = meets them all)."""
    return sum(over / max(budgets[name], 1.0 if name == "drop_pts" else 1e-9)
               for name, over in row["violations"].items())


def closest(rows: list[dict], budgets: dict, count: int = 3) -> list[dict]:
    """The candidates nearest to meeting the budgets: trained ones first, then those pruned on measured figures.

    Args:
        rows: marked trial rows.
        budgets: the budgets that are set.
        count: how many.
    """
    scored = [r for r in rows if r["status"] in ("trained", "pruned") and r.get("size_kb") is not None]
    return sorted(scored, key=lambda r: (r["status"] != "trained", _excess(r, budgets)))[:count]


def _fmt(name: str, value: float) -> str:
    # Sizes to 1/100 KB: at one decimal a candidate 40 bytes over 32 KB read "32.0 KB > 32.0 KB".
    return f"{value:.3g} {UNITS[name]}" if name != "size_kb" else f"{value:.2f} KB"


def relax_advice(rows: list[dict], budgets: dict) -> list[str]:
    """Per budget, the value that alone would admit a trained candidate; else what the closest one needs.

    Args:
        rows: marked trial rows.
        budgets: the budgets that are set.
    """
    trained = [r for r in rows if r["status"] == "trained"]
    advice = []
    for name in budgets:
        admitted = [r for r in trained if set(r["violations"]) <= {name} and r.get(name) is not None]
        if admitted:
            best = min(admitted, key=lambda r: r[name])
            advice.append(f"{OPTIONS[name]} {best[name]:.4g} would admit trial {best['number']} "
                          f"({best['candidate']['label']})")
    if not advice and trained:
        best = min(trained, key=lambda r: _excess(r, budgets))
        needs = " and ".join(f"{OPTIONS[n]} {best[n]:.4g}" for n in best["violations"])
        advice.append(f"the closest trained candidate, trial {best['number']}, needs {needs}")
    if not trained:
        advice.append("no candidate survived to training: relax " +
                      " or ".join(OPTIONS[n] for n in budgets if n != "drop_pts") +
                      " or widen the space (--widths, --depths, --family)")
    return advice


def describe(row: dict, budgets: dict) -> str:
    """One line on a candidate: its label, figures, and what it is over.

    Args:
        row: a marked trial row.
        budgets: the budgets that are set.
    """
    label = row["candidate"]["label"] if row.get("candidate") else "?"
    figures = [_fmt(n, row[n]) for n in ("drop_pts", "size_kb", "latency_ms") if row.get(n) is not None]
    over = [f"{_fmt(n, row[n])} > {_fmt(n, budgets[n])}" for n in row["violations"]]
    state = row["status"] + (f": {row['reason']}" if row["status"] == "pruned" and row.get("reason") else "")
    return (f"trial {row['number']} ({label}; {state}): {', '.join(figures)}"
            + (f" — over: {', '.join(over)}" if over else ""))


def no_candidate_message(rows: list[dict], budgets: dict) -> str:
    """The exit-4 message: no candidate meets the budget, the closest ones, and what to relax.

    Args:
        rows: marked trial rows.
        budgets: the budgets that are set.
    """
    near = "; ".join(describe(r, budgets) for r in closest(rows, budgets)) or "none measured"
    return (f"no candidate meets the budget ({', '.join(f'{OPTIONS[n]} {v:g}' for n, v in budgets.items())}) "
            f"after {len(rows)} trials; closest: {near}. To relax: {'; '.join(relax_advice(rows, budgets))}")


def chosen_row(rows: list[dict], number: Optional[int]) -> Optional[dict]:
    """The row of trial ``number``.

    Args:
        rows: trial rows.
        number: a trial number, or None.
    """
    return next((r for r in rows if r["number"] == number), None)
