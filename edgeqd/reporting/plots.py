"""The report's plots: PNGs drawn with matplotlib's Agg backend, never pyplot.

Accuracy vs size and accuracy vs latency with the Pareto front, p50/p90 latency and peak
memory per device and thread count, and the per-op profile. A plot with nothing to draw
is None, and its :class:`Plot` carries the sentence shown instead. Emulated bench rows
never enter a latency comparison.

>>> pareto_front([(1, 0.9), (2, 0.8)])
[0]
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgeqd.reporting.load import ReportData, Run
from edgeqd.reporting.tables import EMULATED_MARK, EMULATED_NOTE


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower x (cost) and higher y (accuracy).

    Args:
        points: (cost, accuracy) pairs.

    >>> pareto_front([(1, 0.9), (2, 0.95), (3, 0.94), (1, 0.8)])
    [0, 1]
    """
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((ox <= x and oy >= y) and (ox < x or oy > y) for j, (ox, oy) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _figure(width: float = 7.0, height: float = 4.2):
    from matplotlib.figure import Figure

    # A Figure without pyplot: no global state, no GUI backend, Agg canvas.
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.add_subplot(1, 1, 1)


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


_COLORS = {"tflite": "#1f77b4", "onnx": "#ff7f0e", "keras": "#2ca02c"}


def _scatter(points: list[dict], xlabel: str, title: str, log_x: bool = False, numbered: bool = False) -> bytes:
    from matplotlib.ticker import FormatStrFormatter

    fig, ax = _figure()
    xy = [(p["x"], p["y"]) for p in points]
    front = pareto_front(xy)
    stacked: dict[tuple, int] = {}
    for p in points:
        ax.scatter(p["x"], 100 * p["y"], s=60, color=_COLORS.get(p["runtime"], "#7f7f7f"),
                   marker="s" if p.get("dtype") == "int8" else "o", zorder=3, edgecolor="black", linewidth=0.5)
        # Points that coincide (fp32 TFLite and ONNX often do) get their labels stacked, not overprinted.
        key = (round(math.log10(max(p["x"], 1e-9)), 2), round(p["y"], 3))
        slot = stacked.get(key, 0)
        stacked[key] = slot + 1
        # Many close points (one per device and thread count): numbers here, the key in the caption.
        text = str(points.index(p) + 1) if numbered else p["label"]
        ax.annotate(text, (p["x"], 100 * p["y"]), textcoords="offset points",
                    xytext=(7 + (9 * slot if numbered else 0), 4 - (0 if numbered else 10 * slot)), fontsize=7)
    if front:
        fx = [xy[i][0] for i in front]
        fy = [100 * xy[i][1] for i in front]
        ax.step(fx, fy, where="post", color="crimson", linewidth=1.5, zorder=2, label="Pareto front")
        ax.scatter(fx, fy, s=170, facecolors="none", edgecolors="crimson", linewidth=1.5, zorder=4)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.1f"))
    low, high = min(100 * p["y"] for p in points), max(100 * p["y"] for p in points)
    ax.set_ylim(low - max(0.5, 0.15 * (high - low)), high + max(0.5, 0.15 * (high - low)))
    ax.margins(x=0.25)
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="crimson", label="Pareto front"),
               Line2D([], [], marker="o", linestyle="", color=_COLORS["tflite"], label="TFLite"),
               Line2D([], [], marker="o", linestyle="", color=_COLORS["onnx"], label="ONNX"),
               Line2D([], [], marker="s", linestyle="", color="#7f7f7f", label="int8 (square)")]
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    return _png(fig)


def size_points(runs: list[Run]) -> list[dict]:
    """(size, accuracy) points of every verified artifact with an accuracy.

    Args:
        runs: convert runs.

    >>> size_points([])
    []
    """
    points = []
    for run in runs:
        for a in run.manifest.get("artifacts") or []:
            accuracy = (a.get("evaluation") or {}).get("accuracy")
            if a.get("status") == "ok" and accuracy is not None and a.get("bytes"):
                points.append({"x": a["bytes"] / 1024, "y": accuracy, "runtime": a.get("runtime", ""),
                               "dtype": a.get("dtype", ""),
                               "label": f"{run.name}/{a['file']}" if len(runs) > 1 else a["file"]})
    return points


def latency_points(data: ReportData) -> list[dict]:
    """(p50 latency, accuracy) points of real-device bench rows; emulated rows are left out.

    Args:
        data: the report's inputs.

    >>> latency_points(ReportData("t"))
    []
    """
    accuracy_of = {}
    for run in data.runs:
        for a in run.manifest.get("artifacts") or []:
            accuracy_of[(run.name, a.get("file"))] = (a.get("evaluation") or {}).get("accuracy")
    points = []
    for r in data.bench_rows:
        if r.get("status") != "ok" or r.get("emulated") or r.get("p50_ms") is None:
            continue
        accuracy = r.get("accuracy")
        if accuracy is None:
            accuracy = accuracy_of.get((r.get("run"), Path(str(r.get("artifact"))).name))
        if accuracy is None:
            continue
        name = str(r.get("artifact", ""))
        points.append({"x": r["p50_ms"], "y": accuracy, "runtime": "onnx" if name.endswith(".onnx") else "tflite",
                       "dtype": "int8" if "int8" in name else "", "label": f"{r['label']} · {r['device']} ×{r['threads']}"})
    return points


def latency_bars(rows: list[dict], metric: str = "latency") -> Optional[bytes]:
    """Grouped bars per (device, threads): p50 solid with p90 behind it, or peak memory.

    Args:
        rows: ok bench rows.
        metric: "latency" (p50/p90 ms) or "memory" (peak RSS MB).

    >>> latency_bars([]) is None
    True
    """
    rows = [r for r in rows if r.get("status") == "ok" and
            (r.get("p50_ms") if metric == "latency" else r.get("peak_rss_mb")) is not None]
    if not rows:
        return None
    groups = list(dict.fromkeys((r["device"], r["threads"], r["emulated"]) for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    width = 0.8 / max(len(labels), 1)
    fig, ax = _figure(max(7.0, 1.2 * len(groups) * max(1, len(labels)) / 2), 4.2)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for k, label in enumerate(labels):
        for g, (device, threads, emulated) in enumerate(groups):
            row = next((r for r in rows if r["label"] == label and r["device"] == device and r["threads"] == threads), None)
            if row is None:
                continue
            x = g - 0.4 + width * (k + 0.5)
            style = {"color": colors[k % len(colors)], "hatch": "//" if emulated else None,
                     "edgecolor": "black", "linewidth": 0.4}
            if metric == "latency":
                if row.get("p90_ms") is not None:
                    ax.bar(x, row["p90_ms"], width * 0.9, alpha=0.35, **style)
                ax.bar(x, row["p50_ms"], width * 0.9, label=label if g == 0 or k >= 0 else None, **style)
            else:
                ax.bar(x, row["peak_rss_mb"], width * 0.9, **style)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{d}{' ' + EMULATED_MARK if e else ''}\n{t} thread{'s' if t != 1 else ''}"
                        for d, t, e in groups], fontsize=8)
    ax.set_ylabel("ms (solid p50, light p90)" if metric == "latency" else "peak RSS (MB)")
    ax.set_title("latency per device and thread count" if metric == "latency" else "peak memory of the runner",
                 fontsize=11)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=colors[k % len(colors)], label=label) for k, label in enumerate(labels)],
              fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(True, axis="y", alpha=0.3)
    return _png(fig)


def sensitivity_bars(table: dict) -> Optional[bytes]:
    """Per-layer sensitivity: output SQNR (dB) of each layer quantized alone, one bar per precision.

    Lower bars are the sensitive layers (the ones ``--precision auto`` keeps at higher precision);
    a variant without a kernel is left out, an identical output is drawn at the top of the axis.

    Args:
        table: the answer of :func:`edgeqd.quantization.sensitivity.sensitivity_table`.

    >>> sensitivity_bars({"modes": ["w4a8"], "layers": []}) is None
    True
    """
    layers, modes = table["layers"], table["modes"]
    finite = [row[m]["sqnr_db"] for row in layers for m in modes if row.get(m) and row[m]["sqnr_db"] is not None]
    if not layers or not any(row.get(m) for row in layers for m in modes):
        return None
    top = (max(finite) if finite else 60.0) + 5
    width = 0.8 / len(modes)
    fig, ax = _figure(max(7.0, 0.45 * len(layers) * len(modes)), 4.2)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    for k, mode in enumerate(modes):
        xs, heights = [], []
        for i, row in enumerate(layers):
            if row.get(mode):
                xs.append(i - 0.4 + width * (k + 0.5))
                heights.append(top if row[mode]["sqnr_db"] is None else row[mode]["sqnr_db"])
        ax.bar(xs, heights, width * 0.9, color=colors[k % len(colors)], label=mode)
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([row["layer"][-24:] for row in layers], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("output SQNR vs float (dB; higher = less sensitive)")
    ax.set_title(f"per-layer sensitivity: one layer quantized at a time ({table['samples']} samples)", fontsize=11)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(True, axis="y", alpha=0.3)
    return _png(fig)


def profile_bars(rows: list[dict], top: int = 6) -> Optional[bytes]:
    """One stacked bar per profiled bench row: the share of op time by op type.

    Args:
        rows: bench rows; those with an available per-op profile (``edgeqd bench --profile``) are drawn.
        top: op types named per row; the rest are summed as "other".

    >>> profile_bars([]) is None
    True
    """
    rows = [r for r in rows if (r.get("profile") or {}).get("available")]
    if not rows:
        return None
    shares = []
    for row in rows:
        entries = row["profile"]["by_op_type"]
        named = {e["op"]: e["percent"] for e in entries[:top]}
        rest = sum(e["percent"] for e in entries[top:])
        if rest:
            named["other"] = rest
        shares.append(named)
    ops = list(dict.fromkeys(op for share in shares for op in share if op != "other"))
    ops += ["other"] if any("other" in share for share in shares) else []
    fig, ax = _figure(8.0, 1.2 + 0.45 * len(rows))
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
              "#bcbd22", "#17becf"]
    for k, op in enumerate(ops):
        left = [sum(share.get(o, 0.0) for o in ops[:k]) for share in shares]
        ax.barh(range(len(rows)), [share.get(op, 0.0) for share in shares], left=left,
                color="#cccccc" if op == "other" else colors[k % len(colors)], edgecolor="white",
                linewidth=0.5, label=op)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r['artifact']} · {r['device']}{' ' + EMULATED_MARK if r.get('emulated') else ''}"
                        f" · {r['threads']}t" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of op time (%)")
    ax.set_title("per-op profile: where the time goes", fontsize=11)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


@dataclass
class Plot:
    """One embedded image.

    Attributes:
        name: file stem (Markdown writes ``<name>.png``).
        title: the section's heading.
        png: the PNG bytes, or None when there is nothing to plot.
        empty: the sentence shown instead of an empty plot.
        caption: a line under the plot.
    """

    name: str
    title: str
    png: Optional[bytes]
    empty: str = ""
    caption: str = ""


def build_plots(data: ReportData) -> list[Plot]:
    """The report's plots, each with the reason when it has no data.

    Args:
        data: the report's inputs.

    >>> [p.png for p in build_plots(ReportData("t"))]
    [None, None, None, None]
    """
    sizes = size_points(data.runs)
    latencies = latency_points(data)
    real = [r for r in data.bench_rows if not r.get("emulated")]
    emulated = [r for r in data.bench_rows if r.get("emulated")]
    plots = [
        Plot("accuracy_vs_size", "Accuracy vs size", _scatter(sizes, "artifact size (KiB, log scale)",
                                                              "accuracy vs size", log_x=True) if sizes else None,
             empty="No artifact with an accuracy (unlabelled data, or no manifest).",
             caption="Circled points form the Pareto front: no other artifact is both smaller and more accurate."),
        Plot("accuracy_vs_latency", "Accuracy vs latency",
             _scatter(latencies, "p50 latency (ms)", "accuracy vs p50 latency (real devices)", numbered=True)
             if latencies else None,
             empty="No bench data from a real device: run `edgeqd bench ARTIFACTS --device local --json bench.json` "
                   "in the run folder." if not emulated else
             f"Only emulated bench rows ({len(emulated)}): {EMULATED_NOTE}, so there is no latency to plot.",
             caption="; ".join(f"{i + 1} = {p['label']}" for i, p in enumerate(latencies))
             + ". Emulated rows are left out: their latency is not a device latency."),
        Plot("latency", "Latency per device and thread count", latency_bars(real, "latency"),
             empty="No latency from a real device." + (f" {len(emulated)} emulated row(s) are in the table below."
                                                      if emulated else ""),
             caption="Solid bar: p50; light bar behind it: p90."),
        Plot("memory", "Memory", latency_bars(data.bench_rows, "memory"),
             empty="No bench data: peak memory is measured by `edgeqd bench`.",
             caption=f"Peak resident memory of the runner process (model, runtime and Python). "
                     f"Hatched bars ({EMULATED_MARK}) ran under emulation." if emulated else
                     "Peak resident memory of the runner process (model, runtime and Python)."),
    ]
    profiled = profile_bars(data.bench_rows)
    if profiled is not None:
        plots.append(Plot("op_profile", "Per-op profile", profiled,
                          caption="Share of the profiler's op time by op type (`edgeqd bench --profile`: "
                                  "ONNX Runtime's profiler, or benchmark_model's op profiling on adb)."))
    return plots
