"""``DIR/report.html``: the Pareto front of a search, drawn the way :mod:`edgeqd.reporting` draws.

Two plots — accuracy vs size and accuracy vs latency (when a real device measured it) —
with every trained candidate, the front joined by a line, the budgets drawn as dashed
lines, the chosen candidate marked with a star and the teacher for scale; then a table of
every trial (pruned and failed ones with their reasons). PNGs from matplotlib's Agg
backend without pyplot, embedded as data URIs: one self-contained file.
"""

from __future__ import annotations

import base64
import html
from typing import Any, Optional

from edgeqd.reporting.plots import _figure, _png, pareto_front

_STATUS_COLORS = {True: "#2ca02c", False: "#d62728"}


def _plot(rows: list[dict], axis: str, label: str, document: dict) -> Optional[bytes]:
    """Accuracy (%) against ``axis`` (``size_kb`` or ``latency_ms``) for the trained candidates."""
    teacher = document["teacher"]
    budgets = document["budgets"]
    points = [r for r in rows if r["status"] == "trained" and r.get(axis) is not None]
    if not points:
        return None
    fig, ax = _figure()
    for row in points:
        ax.scatter(row[axis], 100 * row["accuracy"], s=40, color=_STATUS_COLORS[bool(row["feasible"])],
                   edgecolor="black", linewidth=0.5, zorder=3)
        ax.annotate(str(row["number"]), (row[axis], 100 * row["accuracy"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=7)
    # The front of this plot's two figures (the three-objective front is the on_front column below).
    front = [points[i] for i in pareto_front([(r[axis], r["accuracy"]) for r in points])]
    if len(front) > 1:
        ax.plot([r[axis] for r in front], [100 * r["accuracy"] for r in front], color="#555555", linewidth=1,
                linestyle="-", zorder=2, drawstyle="steps-post", label="Pareto front (these two figures)")
    chosen = next((r for r in points if r["number"] == document["chosen"]), None)
    if chosen is not None:
        ax.scatter(chosen[axis], 100 * chosen["accuracy"], s=260, marker="*", color="#ffbf00", edgecolor="black",
                   zorder=4, label=f"chosen: trial {chosen['number']}")
    teacher_x = teacher["size_bytes"] / 1024 if axis == "size_kb" else teacher.get("latency_ms")
    if teacher_x is not None:
        ax.scatter(teacher_x, 100 * teacher["accuracy_selection"], s=70, marker="D", color="#1f77b4",
                   edgecolor="black", zorder=3, label="teacher (float)")
    if axis in budgets:
        ax.axvline(budgets[axis], color="#d62728", linestyle="--", linewidth=1, label=f"budget {budgets[axis]:g}")
    if "drop_pts" in budgets:
        ax.axhline(100 * teacher["accuracy_selection"] - budgets["drop_pts"], color="#9467bd", linestyle="--",
                   linewidth=1, label=f"teacher − {budgets['drop_pts']:g} pts")
    if teacher_x is not None and max(r[axis] for r in points) > 0 and teacher_x / min(r[axis] for r in points) > 30:
        ax.set_xscale("log")  # a teacher 30× bigger would squash the candidates into one corner
    ax.set_xlabel(label)
    ax.set_ylabel("accuracy on the selection split (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def render(document: dict) -> str:
    """The report as one HTML page.

    Args:
        document: the content of ``candidates.json``.
    """
    rows = document["candidates"]
    parts = [f"<h1>edgeqd optimize — study {html.escape(document['study'])}</h1>",
             f"<p>{html.escape(document['summary'])}</p>",
             "<p>Green: within every budget; red: over one. Figures on the selection split; the chosen "
             "candidate's held-out figure is in the summary.</p>"]
    for axis, label in (("size_kb", "artifact size (KB)"), ("latency_ms", "median latency, 1 thread (ms)")):
        png = _plot(rows, axis, label, document)
        if png is not None:
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<h2>accuracy vs {label}</h2><img alt="accuracy vs {label}" '
                         f'src="data:image/png;base64,{data}">')
        elif axis == "latency_ms":
            parts.append(f"<p>No latency plot: {html.escape(document['latency_note'])}</p>")
    columns = ("number", "status", "label", "accuracy", "drop_pts", "size_kb", "latency_ms", "quantization",
               "feasible", "on_front", "reason")
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = []
    for row in rows:
        values = {**row, "label": (row.get("candidate") or {}).get("label")}
        body.append("<tr>" + "".join(f"<td>{_cell(values.get(c))}</td>" for c in columns) + "</tr>")
    parts.append(f"<h2>Every trial</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}th{background:#f3f3f3}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>edgeqd optimize</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
