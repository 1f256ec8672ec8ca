"""``edgeqd report``: one self-contained HTML (or Markdown) page from convert manifests and bench JSON.

Inputs are run folders (holding ``manifest.json`` and/or bench JSON files) or JSON
files. The page shows the pipeline's stages and settings, the parity table across
Keras / TFLite / ONNX, accuracy vs size and accuracy vs latency with the Pareto front,
p50/p90 latency per device and thread count, peak memory, and every bench row with
emulated rows marked. Plots are PNGs drawn with matplotlib's Agg backend and embedded
as base64, so the HTML makes no network request. Without bench data the latency and
memory sections say so instead of failing.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import html
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from edgeqd import __version__
from edgeqd.errors import DataError, UsageError
from edgeqd.cli.tables import reference_label

MANIFEST = "manifest.json"
EMULATED_MARK = "†"
EMULATED_NOTE = "emulated — not a device latency; never compare it with a real device"
# Manifest keys the pipeline always writes; any other top-level dict is an extra stage (distill, QAT, …).
CORE_KEYS = {"edgeqd_version", "created", "libraries", "input_model", "data", "calibration", "keras",
             "artifacts", "max_drop", "problems", "bundle"}


@dataclass
class Run:
    """One ``edgeqd convert`` output folder.

    Attributes:
        name: a short label (the folder's name).
        path: the folder.
        manifest: its ``manifest.json``.
    """

    name: str
    path: Path
    manifest: dict[str, Any]


@dataclass
class ReportData:
    """Everything a report shows, gathered from the inputs.

    Attributes:
        title: the page title.
        runs: convert runs.
        bench_rows: bench rows (dicts as ``BenchResult.to_dict``), each with ``run`` and ``label`` added.
        sources: the files read.
    """

    title: str
    runs: list[Run] = field(default_factory=list)
    bench_rows: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON ({type(exc).__name__}: {str(exc)[:120]})") from None


def _describe_json(document: Any) -> str:
    """A few words on what a JSON document is, for errors about unexpected documents."""
    if isinstance(document, dict):
        keys = sorted(map(str, document))
        return (f"an object with keys {', '.join(keys[:6])}{', …' if len(keys) > 6 else ''}" if keys
                else "an empty object {}")
    if isinstance(document, list):
        return f"a list of {len(document)} item(s)"
    return f"a {type(document).__name__} ({json.dumps(document)[:40]})"


def _check_manifest(file: Path, document: Any) -> None:
    """Raise DataError (exit 3) unless ``document`` has the shape of an edgeqd manifest."""
    fields = {"artifacts": list, "data": dict}
    wrong = [] if isinstance(document, dict) else list(fields)
    if not wrong:
        wrong = [k for k, kind in fields.items() if not isinstance(document.get(k), kind)]
        if not wrong and not all(isinstance(a, dict) for a in document["artifacts"]):
            wrong = ["artifacts (entries must be objects)"]
    if wrong:
        raise DataError(f"{file}: not an edgeqd manifest (found {_describe_json(document)}; expected an object "
                        f"with {', '.join(wrong)}); give a folder written by edgeqd convert or quantize")


def _is_bench(document: Any) -> bool:
    return isinstance(document, dict) and isinstance(document.get("rows"), list) and (
        document.get("command") == "bench" or all("device" in r for r in document["rows"]))


def load_report_data(paths: Sequence[str | Path], title: Optional[str] = None) -> ReportData:
    """Read manifests and bench JSON from run folders and files.

    Args:
        paths: run folders (``manifest.json`` and/or ``*.json`` bench files inside) or JSON files.
        title: the page title (default: derived from the model names).

    Raises:
        UsageError: a path does not exist, or nothing usable was found (exit 2).
        DataError: a JSON file cannot be read (exit 3).

    >>> load_report_data(["demo_out"]).runs[0].name  # doctest: +SKIP
    'demo_out'
    """
    data = ReportData(title=title or "")
    bench_docs: list[tuple[Path, dict]] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        files = [path] if path.is_file() else sorted(path.glob("*.json"))
        for file in files:
            document = _read_json(file)
            if file.name == MANIFEST:
                _check_manifest(file, document)
            if isinstance(document, dict) and isinstance(document.get("artifacts"), list) and "data" in document:
                folder = file.parent
                data.runs.append(Run(folder.name or str(folder), folder, document))
                data.sources.append(str(file))
            elif _is_bench(document):
                bench_docs.append((file, document))
                data.sources.append(str(file))
            elif path.is_file():
                raise UsageError(f"{file}: neither an edgeqd manifest (with 'artifacts') nor bench JSON (with 'rows')")
    if not data.runs and not bench_docs:
        raise UsageError(f"no manifest.json or bench JSON found in {', '.join(str(p) for p in paths)}; "
                         "give edgeqd convert output folders or edgeqd bench --json files")
    # Folder names may repeat (two runs called "out"): make labels unique with their parent.
    names = [r.name for r in data.runs]
    for run in data.runs:
        if names.count(run.name) > 1:
            run.name = f"{run.path.parent.name}/{run.name}"
    for file, document in bench_docs:
        for row in document["rows"]:
            data.bench_rows.append(_attach_row(dict(row), file, document, data.runs))
    if not data.title:
        models = sorted({r.manifest.get("input_model", {}).get("name", "model") for r in data.runs})
        data.title = "edgeqd report — " + (", ".join(models) if models else "bench")
    return data


def _attach_row(row: dict, file: Path, document: dict, runs: list[Run]) -> dict:
    """Find the run an artifact of a bench row belongs to; label the row ``run/file``."""
    name = Path(str(row.get("artifact", ""))).name
    settings = document.get("settings", {}) or {}
    candidates = [Path(a) for a in settings.get("artifacts", []) if Path(a).name == name]
    run = None
    for candidate in candidates:  # paths in the bench settings are relative to where bench ran
        for base in (file.parent, Path.cwd()):
            full = (base / candidate).resolve() if not candidate.is_absolute() else candidate.resolve()
            run = next((r for r in runs if (r.path / name).resolve() == full), None)
            if run:
                break
        if run:
            break
    if run is None:
        owners = [r for r in runs if any(a.get("file") == name for a in r.manifest.get("artifacts", []))]
        same_folder = [r for r in owners if r.path.resolve() == file.parent.resolve()]
        run = (same_folder or owners or [None])[0] if len(owners) == 1 or same_folder else None
    row["run"] = run.name if run else ""
    row["label"] = f"{run.name}/{name}" if run and len(runs) > 1 else name
    row["emulated"] = bool(row.get("emulated"))
    return row


# --------------------------------------------------------------------------- tables (shared by HTML and Markdown)

def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _num(value: Optional[float], digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _size(n: Optional[int]) -> str:
    if not n:
        return "–"
    return f"{n / 1024:,.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:,.2f} MiB"


def stage_rows(run: Run) -> list[tuple[str, str]]:
    """The pipeline's stages with their settings, one (stage, settings) pair each.

    Args:
        run: a convert run.

    >>> stage_rows(Run("r", Path("."), {"data": {"name": "x"}, "artifacts": []}))[0][0]
    'data'
    """
    m = run.manifest
    rows = []
    model = m.get("input_model") or {}
    if model:
        rows.append(("input model", f"{model.get('name', '?')}: {model.get('params', 0):,} parameters, "
                     f"{model.get('layers', '?')} layers" + (f" ({model['path']})" if model.get("path") else "")))
    data = m.get("data") or {}
    rows.append(("data", f"{data.get('name', '?')}: {data.get('train_samples', '?')} train / "
                 f"{data.get('eval_samples', '?')} evaluated, input {data.get('input_shape')}, "
                 f"{len(data.get('class_names') or [])} classes, normalization {data.get('normalization')}"))
    for key, value in m.items():  # distillation, QAT and other stages recorded by their commands
        if key not in CORE_KEYS and isinstance(value, dict):
            rows.append((key.replace("_", " "), _settings_text(value)))
    calibration = m.get("calibration") or {}
    if calibration:
        rows.append(("quantization", f"{calibration.get('mode', 'ptq').upper()}, {calibration.get('samples')} "
                     f"calibration samples ({calibration.get('source', '')}), "
                     f"{'per-channel' if calibration.get('per_channel', True) else 'per-tensor'} weights, "
                     f"ONNX calibrator {calibration.get('onnx_method', '?')}"))
    artifacts = m.get("artifacts") or []
    ok = [a for a in artifacts if a.get("status") == "ok"]
    rows.append(("convert", f"{len(ok)}/{len(artifacts)} artifacts verified in their runtimes: "
                 + ", ".join(str(a.get("format", "?")) for a in artifacts)
                 + (f"; --max-drop {m['max_drop']} pts" if m.get("max_drop") is not None else "")))
    if m.get("bundle"):
        rows.append(("bundle", ", ".join(m["bundle"])))
    libraries = m.get("libraries") or {}
    if libraries:
        rows.append(("libraries", ", ".join(f"{k} {v}" for k, v in libraries.items() if v)))
    return rows


def _settings_text(value: dict, depth: int = 0) -> str:
    parts = []
    for key, item in value.items():
        if isinstance(item, dict) and depth < 1:
            parts.append(f"{key}: {{{_settings_text(item, depth + 1)}}}")
        elif isinstance(item, (list, tuple)) and len(item) > 6:
            parts.append(f"{key}: [{len(item)} items]")
        else:
            parts.append(f"{key}: {item}")
    return ", ".join(parts)


PARITY_COLUMNS = ("run", "artifact", "runtime", "dtype", "size", "top-1", "Δ pts", "agreement", "mean |Δ|", "status")


def parity_rows(runs: list[Run]) -> list[dict[str, str]]:
    """The parity table: the Keras reference, then each artifact, per run.

    Args:
        runs: convert runs.

    >>> parity_rows([])
    []
    """
    rows = []
    for run in runs:
        keras = run.manifest.get("keras") or {}
        rows.append({"run": run.name, "artifact": reference_label(run.manifest), "runtime": "keras", "dtype": "float32",
                     "size": "", "top-1": _pct(keras.get("accuracy")), "Δ pts": "", "agreement": "reference",
                     "mean |Δ|": "", "status": "reference", "_class": "reference"})
        for a in run.manifest.get("artifacts") or []:
            ev = a.get("evaluation") or {}
            failed = a.get("status") != "ok"
            drop = a.get("accuracy_drop_pts")
            rows.append({"run": run.name, "artifact": a.get("file") or a.get("format", "?"), "runtime": a.get("runtime", ""),
                         "dtype": a.get("dtype", ""), "size": _size(a.get("bytes")), "top-1": _pct(ev.get("accuracy")),
                         "Δ pts": "–" if drop is None else f"{-drop + 0.0:+.2f}", "agreement": _pct(ev.get("agreement")),
                         "mean |Δ|": _num(ev.get("mean_abs_diff"), 4),
                         "status": f"failed: {a.get('reason', '')}" if failed else "ok",
                         "_class": "failed" if failed else ""})
    return rows


BENCH_COLUMNS = ("artifact", "device", "threads", "status", "p50 ms", "p90 ms", "mean ms", "peak MB",
                 "top-1", "agreement", "runtime")


def bench_table_rows(rows: list[dict]) -> list[dict[str, str]]:
    """Bench rows for display; emulated ones carry the † mark and a CSS class.

    Args:
        rows: bench rows from :func:`load_report_data`.

    >>> bench_table_rows([{"label": "m.tflite", "device": "qemu", "threads": 1, "status": "ok",
    ...                    "emulated": True}])[0]["device"]
    'qemu †'
    """
    out = []
    for r in rows:
        mark = f" {EMULATED_MARK}" if r.get("emulated") else ""
        failed = r.get("status") != "ok"
        out.append({"artifact": r.get("label", r.get("artifact", "")), "device": f"{r.get('device', '')}{mark}",
                    "threads": str(r.get("threads", "")),
                    "status": f"failed: {r.get('reason', '')}" if failed else "ok",
                    "p50 ms": _num(r.get("p50_ms")) + mark if r.get("p50_ms") is not None else "–",
                    "p90 ms": _num(r.get("p90_ms")) + mark if r.get("p90_ms") is not None else "–",
                    "mean ms": _num(r.get("mean_ms")) + mark if r.get("mean_ms") is not None else "–",
                    "peak MB": _num(r.get("peak_rss_mb"), 1), "top-1": _pct(r.get("accuracy")),
                    "agreement": _pct(r.get("agreement")),
                    "runtime": f"{r.get('runtime', '')} {r.get('runtime_version', '')}".strip(),
                    "_class": "failed" if failed else ("emulated" if r.get("emulated") else "")})
    return out


# --------------------------------------------------------------------------- plots

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


# --------------------------------------------------------------------------- rendering

_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#1b1f23;padding:0 1em;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}th,td{border:1px solid #d0d7de;padding:.3em .6em;
text-align:left;vertical-align:top}th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.reference td{background:#f0f7ff}tr.failed td{background:#fff0f0;color:#8b0000}
tr.emulated td{background:#fff8e1;font-style:italic}.meta{color:#57606a;font-size:.9em}
.note{background:#fff8e1;border-left:4px solid #e0a800;padding:.4em .8em;margin:.6em 0}
.empty{color:#57606a;font-style:italic}figure{margin:.8em 0}figcaption{color:#57606a;font-size:.85em}
img.plot{max-width:100%;height:auto;border:1px solid #eee}
"""


def _html_table(columns: Sequence[str], rows: list[dict[str, str]], numeric: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(f"<td{' class=num' if c in numeric else ''}>{html.escape(str(row.get(c, '')))}</td>"
                        for c in columns)
        css = row.get("_class")
        body.append(f"<tr class=\"{css}\">{cells}</tr>" if css else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _problems(data: ReportData) -> list[str]:
    problems = [f"{run.name}: {p}" for run in data.runs for p in run.manifest.get("problems") or []]
    problems += [f"bench {r['label']} on {r.get('device')} ×{r.get('threads')}: {r.get('reason')}"
                 for r in data.bench_rows if r.get("status") != "ok"]
    return problems


def render_html(data: ReportData, plots: Optional[list[Plot]] = None) -> str:
    """The report as one self-contained HTML page (inline CSS, base64 PNGs, no scripts, no links).

    Args:
        data: the report's inputs.
        plots: prebuilt plots (default: :func:`build_plots`).

    >>> "<html" in render_html(ReportData("t"), plots=[])
    True
    """
    plots = build_plots(data) if plots is None else plots
    e = html.escape
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
             f"<title>{e(data.title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(data.title)}</h1>",
             f"<p class=\"meta\">Generated {e(created)} by edgeqd {e(__version__)} from "
             f"{len(data.runs)} run(s) and {len(data.bench_rows)} bench row(s): {e(', '.join(data.sources))}</p>"]
    if any(r.get("emulated") for r in data.bench_rows):
        parts.append(f"<p class=\"note\">{EMULATED_MARK} Rows marked {EMULATED_MARK} (italic, yellow) ran under "
                     f"emulation (qemu-user): {e(EMULATED_NOTE)}. They are left out of the latency plots.</p>")
    problems = _problems(data)
    if problems:
        parts.append("<h2>Problems</h2><ul>" + "".join(f"<li>{e(p)}</li>" for p in problems) + "</ul>")
    for run in data.runs:
        parts.append(f"<h2>Pipeline: {e(run.name)}</h2>")
        parts.append(_html_table(("stage", "settings"), [{"stage": s, "settings": t} for s, t in stage_rows(run)]))
    if data.runs:
        parts.append("<h2>Parity: Keras / TFLite / ONNX</h2>"
                     "<p class=\"meta\">Every artifact evaluated in its own runtime on the same held-out samples; "
                     "agreement = share of samples whose top-1 equals the float Keras model's.</p>")
        parts.append(_html_table(PARITY_COLUMNS, parity_rows(data.runs),
                                 numeric=("size", "top-1", "Δ pts", "agreement", "mean |Δ|")))
    for plot in plots:
        parts.append(f"<h2>{e(plot.title)}</h2>")
        if plot.png:
            encoded = base64.b64encode(plot.png).decode("ascii")
            parts.append(f"<figure><img class=\"plot\" alt=\"{e(plot.title)}\" "
                         f"src=\"data:image/png;base64,{encoded}\"><figcaption>{e(plot.caption)}</figcaption></figure>")
        else:
            parts.append(f"<p class=\"empty\">{e(plot.empty)}</p>")
    if data.bench_rows:
        parts.append("<h2>Bench rows</h2>")
        parts.append(_html_table(BENCH_COLUMNS, bench_table_rows(data.bench_rows),
                                 numeric=("threads", "p50 ms", "p90 ms", "mean ms", "peak MB", "top-1", "agreement")))
    parts.append("</body></html>")
    return "\n".join(parts)


# Characters Markdown gives a meaning to inline: code spans, emphasis, links/images, table cells.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_MD_SPECIAL_KEEP_CODE = re.compile(r"([\\*_\[\]|~])")


def md_text(value: Any, code_spans: bool = False) -> str:
    """Text from the data (names, paths, reasons) made inert for Markdown renderers.

    HTML-escapes ``<``, ``>`` and ``&`` (most renderers pass raw HTML through), backslash-escapes
    the characters that make code spans, emphasis, links and table cells, and joins lines.

    Args:
        value: anything; it is turned into a string first.
        code_spans: keep backticks, for edgeqd's own sentences that quote commands (a code
            span is inert: nothing in it is rendered as HTML or a link).

    >>> md_text("<b>|x") == "&lt;b&gt;" + chr(92) + "|x"
    True
    """
    text = " ".join(html.escape(str(value), quote=False).splitlines())
    return (_MD_SPECIAL_KEEP_CODE if code_spans else _MD_SPECIAL).sub(r"\\\1", text)


def _md_table(columns: Sequence[str], rows: list[dict[str, str]]) -> str:
    lines = ["| " + " | ".join(md_text(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        text = [md_text(row.get(c, "")) for c in columns]
        if row.get("_class") == "emulated":
            text = [f"*{t}*" if t else t for t in text]
        lines.append("| " + " | ".join(text) + " |")
    return "\n".join(lines)


def render_markdown(data: ReportData, plots: Optional[list[Plot]] = None, image_dir: str = "") -> str:
    """The same report as Markdown (for a pull request); plots are referenced as ``image_dir/<name>.png``.

    Args:
        data: the report's inputs.
        plots: prebuilt plots (default: :func:`build_plots`).
        image_dir: folder of the PNGs, relative to the Markdown file.

    >>> render_markdown(ReportData("t"), plots=[]).startswith("# t")
    True
    """
    plots = build_plots(data) if plots is None else plots
    lines = [f"# {md_text(data.title)}", "",
             f"Generated by edgeqd {__version__} from {len(data.runs)} run(s) and {len(data.bench_rows)} bench row(s).",
             ""]
    if any(r.get("emulated") for r in data.bench_rows):
        lines += [f"> {EMULATED_MARK} Rows marked {EMULATED_MARK} (in italics) ran under emulation: {EMULATED_NOTE}.",
                  ""]
    problems = _problems(data)
    if problems:
        lines += ["## Problems", ""] + [f"- {md_text(p)}" for p in problems] + [""]
    for run in data.runs:
        lines += [f"## Pipeline: {md_text(run.name)}", "",
                  _md_table(("stage", "settings"), [{"stage": s, "settings": t} for s, t in stage_rows(run)]), ""]
    if data.runs:
        lines += ["## Parity: Keras / TFLite / ONNX", "", _md_table(PARITY_COLUMNS, parity_rows(data.runs)), ""]
    for plot in plots:
        lines += [f"## {md_text(plot.title)}", ""]
        if plot.png:
            target = f"{image_dir}/{plot.name}.png" if image_dir else f"{plot.name}.png"
            caption = f"*{md_text(plot.caption, code_spans=True)}*" if plot.caption else ""
            lines += [f"![{md_text(plot.title)}]({target})", "", caption, ""]
        else:
            lines += [f"_{md_text(plot.empty, code_spans=True)}_", ""]
    if data.bench_rows:
        lines += ["## Bench rows", "", _md_table(BENCH_COLUMNS, bench_table_rows(data.bench_rows)), ""]
    return "\n".join(lines)


def write_report(run_dirs: Sequence[str | Path], out: Optional[str | Path] = None, markdown: bool = False,
                 title: Optional[str] = None, force: bool = False) -> Path:
    """Build the report from run folders / JSON files and write it atomically.

    Args:
        run_dirs: ``edgeqd convert`` output folders and/or bench JSON files (or folders holding them).
        out: the output file (default ``report.html``, or ``report.md`` with ``markdown``). Markdown
            also writes its plots into ``<out stem>_files/`` beside it.
        markdown: write Markdown instead of HTML.
        title: the page title.
        force: replace an existing output.

    Returns:
        The path written.

    Raises:
        UsageError: no inputs, nothing usable in them, or the output exists without ``force`` (exit 2).
        DataError: unreadable JSON (exit 3).

    >>> write_report(["demo_out"], "demo_out/report.html", force=True)  # doctest: +SKIP
    PosixPath('demo_out/report.html')
    """
    from edgeqd.atomic import atomic_dir, atomic_file, check_output_safe, check_writable

    if not run_dirs:
        raise UsageError("give at least one run folder or bench JSON file")
    out = Path(out) if out is not None else Path("report.md" if markdown else "report.html")
    # The inputs are the files read, not the run folders: a report beside a run's manifest
    # (``-o RUN/report.html``) is the usual place and destroys nothing.
    inputs = [file for run in map(Path, run_dirs) for file in (sorted(run.glob("*.json")) if run.is_dir() else [run])]
    check_output_safe(out, inputs, file=True, option="-o")
    check_writable(out, force)
    images = out.with_name(out.stem + "_files") if markdown else None
    if images is not None:
        check_output_safe(images, inputs, option="-o (its _files folder)")
        check_writable(images, force)
    data = load_report_data(run_dirs, title=title)
    plots = build_plots(data)
    text = render_markdown(data, plots, image_dir=images.name) if markdown else render_html(data, plots)
    # The plots' folder is committed only once the page is: a full disk or an interrupt
    # while writing either leaves neither.
    with atomic_dir(images, force=force) if markdown else contextlib.nullcontext() as image_tmp:
        for plot in plots if markdown else ():
            if plot.png:
                (image_tmp / f"{plot.name}.png").write_bytes(plot.png)
        with atomic_file(out, force=force) as tmp:
            tmp.write_text(text, encoding="utf-8")
            # mkstemp creates 0600; a report is meant to be shared, so use the usual umask-derived mode.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
    return out
