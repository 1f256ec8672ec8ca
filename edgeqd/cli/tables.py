"""Terminal tables (rich) built from manifests and results."""

from __future__ import annotations

from typing import Any, Optional

from rich.markup import escape
from rich.table import Table

from edgeqd.documents import reference_label


def _pct(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _num(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.4g}"


def _quality_cells(manifest: dict[str, Any], a: dict[str, Any]) -> list[str]:
    """The four figures of one artifact: accuracy, Δ pts, agreement, mean |Δ| — or, for regression (and a
    single output), MAE, its increase in percent, max |Δ| and mean |Δ| against the float model."""
    ev = a["evaluation"]
    if manifest["keras"].get("task") == "regression":
        increase = a.get("mae_increase_pct")
        return [_num(ev.get("mae")), "—" if increase is None else f"{increase:+.2f}%".replace("-0.00", "+0.00"),
                _num(ev.get("max_abs_diff")),
                f"{ev['mean_abs_diff']:.4f}"]
    drop = "—" if a["accuracy_drop_pts"] is None else f"{0.0 - a['accuracy_drop_pts']:+.2f}".replace("-0.00", "+0.00")
    return [_pct(ev["accuracy"]), drop, _pct(ev["agreement"]), f"{ev['mean_abs_diff']:.4f}"]


def convert_table(manifest: dict[str, Any]) -> Table:
    """The ``edgeqd convert`` table: one row per artifact, the Keras float model first.

    A regression model (or one with a single output) is shown by MAE against the targets, its
    increase over the float model's in percent, and max / mean |Δ| against the float model.

    Args:
        manifest: the content of ``manifest.json``.
    """
    keras = manifest["keras"]
    regression = keras.get("task") == "regression"
    float_bytes = next((a["bytes"] for a in manifest["artifacts"]
                        if a["format"] == "tflite-fp32" and a["status"] == "ok"), None)
    # Names and reasons come from users' files: escape them, or rich reads "[/]" in them as markup.
    table = Table(title=escape(f"edgeqd convert — {manifest['input_model']['name']} on {manifest['data']['name']} "
                               f"({keras['samples']} held-out samples{', regression' if regression else ''})"))
    figures = ("MAE", "Δ MAE", "max |Δ|") if regression else ("accuracy", "Δ pts", "agreement")
    for column, justify in (("artifact", "left"), ("dtype", "left"), ("I/O", "left"), ("size", "right"),
                            ("× fp32 tflite", "right"), *((f, "right") for f in figures),
                            ("mean |Δ|", "right"), ("status", "left")):
        table.add_column(column, justify=justify)
    table.add_row(reference_label(manifest), "float32", "", "", "",
                  _num(keras.get("mae")) if regression else _pct(keras["accuracy"]), "", "", "", "reference")
    for a in manifest["artifacts"]:
        if a["status"] != "ok":
            table.add_row(a["format"], "", "", "", "", "", "", "", "", f"[red]failed[/red]: {escape(a['reason'][:80])}")
            continue
        io = f"{a['inputs'][0]['dtype']}→{a['outputs'][0]['dtype']}" if a["inputs"] and a["outputs"] else ""
        ratio = f"{a['bytes'] / float_bytes:.2f}" if float_bytes else "—"
        table.add_row(escape(a["file"]), a["dtype"], io, _size(a["bytes"]), ratio, *_quality_cells(manifest, a),
                      "[green]ok[/green]")
    return table


def parity_table(manifest: dict[str, Any]):
    """The parity table: the float Keras model, the fake-quant model and every artifact on the same samples.

    Args:
        manifest: a manifest with a ``parity`` section.
    """
    from rich.table import Table

    parity = manifest["parity"]
    if parity.get("task") == "regression":
        return _regression_parity_table(parity)
    float_accuracy = (manifest.get("keras") or {}).get("accuracy")
    table = Table(title=f"parity on {parity['samples']} held-out samples (float model: {_pct(float_accuracy)})")
    names = list(parity["accuracy"])
    for column, justify in (("model", "left"), ("top-1", "right"), ("Δ vs float pts", "right"),
                            *((f"agrees with {n}", "right") for n in names)):
        table.add_column(column, justify=justify)
    for name in names:
        accuracy = parity["accuracy"][name]
        drop = "—" if accuracy is None or float_accuracy is None else f"{100 * (accuracy - float_accuracy):+.2f}"
        cells = []
        for other in names:
            key = f"{name} vs {other}" if f"{name} vs {other}" in parity["agreement"] else f"{other} vs {name}"
            cells.append("" if other == name else _pct(parity["agreement"].get(key)))
        table.add_row(name, _pct(accuracy), drop, *cells)
    return table




def _regression_parity_table(parity: dict[str, Any]) -> Table:
    """The parity table of a regression model: MAE per model, max and mean |Δ| against the float model."""
    table = Table(title=f"parity on {parity['samples']} held-out samples (regression)")
    for column in ("model", "MAE", "max |Δ| vs float", "mean |Δ| vs float"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, mae in parity["mae"].items():
        key = next((k for k in parity["max_abs_diff"] if k.endswith(f" vs {name}")), None)
        table.add_row(name, _num(mae), _num(parity["max_abs_diff"].get(key)), _num(parity["mean_abs_diff"].get(key)))
    return table
