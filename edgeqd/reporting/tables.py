"""The rows a report shows, shared by the HTML and the Markdown renderers.

Each function turns runs or bench rows into display rows (dicts of strings keyed by
column name, plus ``_class`` for the row's CSS class): the pipeline's stages, the
parity table across Keras / TFLite / ONNX, the bench rows with emulated ones marked,
and the problems to show first.

>>> parity_rows([])
[]
"""

from __future__ import annotations

from typing import Optional

from edgeqd.documents import reference_label
from edgeqd.documents import MANIFEST_CORE
from edgeqd.reporting.load import ReportData, Run

EMULATED_MARK = "†"
EMULATED_NOTE = "emulated — not a device latency; never compare it with a real device"
# Manifest keys every run writes; any other top-level dict is a stage's section (distillation, QAT, …).
CORE_KEYS = set(MANIFEST_CORE) | {"bundle"}


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

    >>> from pathlib import Path
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


def _regression_cells(ev: dict, increase: Optional[float]) -> dict[str, str]:
    """A regression run's figures in the parity columns: MAE, its increase in percent, max |Δ| to the float model."""
    return {"top-1": f"MAE {_num(ev.get('mae'), 4)}",
            "Δ pts": "–" if increase is None else f"{increase + 0.0:+.2f} % MAE",
            "agreement": f"max |Δ| {_num(ev.get('max_abs_diff'), 4)}"}


def parity_rows(runs: list[Run]) -> list[dict[str, str]]:
    """The parity table: the Keras reference, then each artifact, per run.

    A regression run (or one of a single-output model) shows MAE against the targets, its relative
    increase and max |Δ| against the float model in the top-1, Δ and agreement columns.

    Args:
        runs: convert runs.

    >>> parity_rows([])
    []
    """
    rows = []
    for run in runs:
        keras = run.manifest.get("keras") or {}
        regression = keras.get("task") == "regression"
        rows.append({"run": run.name, "artifact": reference_label(run.manifest), "runtime": "keras", "dtype": "float32",
                     "size": "", "top-1": f"MAE {_num(keras.get('mae'), 4)}" if regression else _pct(keras.get("accuracy")),
                     "Δ pts": "", "agreement": "reference (regression)" if regression else "reference",
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
            if regression and not failed:
                rows[-1].update(_regression_cells(ev, a.get("mae_increase_pct")))
    return rows


BENCH_COLUMNS = ("artifact", "device", "threads", "status", "p50 ms", "p90 ms", "mean ms", "peak MB",
                 "arena", "flash", "top-1", "agreement", "runtime")
TFLM_NOTE = ("tflm rows ran in TensorFlow Lite Micro's interpreter on the host: their latency is host reference "
             "kernels (not an MCU figure) and is never compared; arena = the smallest tensor arena TFLM allocated and "
             "ran the model in (exact, on the host's 64-bit build); flash = the model's bytes, which model_data.cc "
             "puts in flash")


def bench_table_rows(rows: list[dict]) -> list[dict[str, str]]:
    """Bench rows for display; emulated ones carry the † mark and a CSS class; tflm rows their arena and flash.

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
        micro = r.get("micro") or {}  # tflm rows: what a microcontroller needs
        out.append({"artifact": r.get("label", r.get("artifact", "")), "device": f"{r.get('device', '')}{mark}",
                    "threads": str(r.get("threads", "")),
                    "status": f"failed: {r.get('reason', '')}" if failed else "ok",
                    "p50 ms": _num(r.get("p50_ms")) + mark if r.get("p50_ms") is not None else "–",
                    "p90 ms": _num(r.get("p90_ms")) + mark if r.get("p90_ms") is not None else "–",
                    "mean ms": _num(r.get("mean_ms")) + mark if r.get("mean_ms") is not None else "–",
                    "peak MB": _num(r.get("peak_rss_mb"), 1),
                    "arena": f"{micro['arena_bytes']:,} B" if micro.get("arena_bytes") else "–",
                    "flash": _size(micro.get("flash_bytes")),
                    "top-1": _pct(r.get("accuracy")) if r.get("mae") is None else f"MAE {_num(r.get('mae'), 4)}",
                    "agreement": _pct(r.get("agreement")),
                    "runtime": f"{r.get('runtime', '')} {r.get('runtime_version', '')}".strip(),
                    "_class": "failed" if failed else ("emulated" if r.get("emulated") else "")})
    return out


def problems(data: ReportData) -> list[str]:
    """One sentence per problem a run recorded and per failed bench row.

    Args:
        data: the report's inputs.

    >>> problems(ReportData("t"))
    []
    """
    found = [f"{run.name}: {p}" for run in data.runs for p in run.manifest.get("problems") or []]
    found += [f"bench {r['label']} on {r.get('device')} ×{r.get('threads')}: {r.get('reason')}"
              for r in data.bench_rows if r.get("status") != "ok"]
    return found
