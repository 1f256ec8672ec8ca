"""Terminal tables (rich) built from manifests and results."""

from __future__ import annotations

from typing import Any, Optional

from rich.markup import escape
from rich.table import Table


def _pct(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def reference_label(manifest: dict[str, Any]) -> str:
    """Name of the Keras model the artifacts were compared with: the float one, or QAT's fake-quant one.

    Args:
        manifest: the content of ``manifest.json``.
    """
    qat = manifest.get("calibration", {}).get("mode") == "qat"
    return "Keras (QAT fake-quant)" if qat else "Keras (float)"


def convert_table(manifest: dict[str, Any]) -> Table:
    """The ``edgeqd convert`` table: one row per artifact, the Keras float model first.

    Args:
        manifest: the content of ``manifest.json``.
    """
    keras_acc = manifest["keras"]["accuracy"]
    float_bytes = next((a["bytes"] for a in manifest["artifacts"]
                        if a["format"] == "tflite-fp32" and a["status"] == "ok"), None)
    # Names and reasons come from users' files: escape them, or rich reads "[/]" in them as markup.
    table = Table(title=escape(f"edgeqd convert — {manifest['input_model']['name']} on {manifest['data']['name']} "
                        f"({manifest['keras']['samples']} held-out samples)"))
    for column, justify in (("artifact", "left"), ("dtype", "left"), ("I/O", "left"), ("size", "right"),
                            ("× fp32 tflite", "right"), ("accuracy", "right"), ("Δ pts", "right"),
                            ("agreement", "right"), ("mean |Δ|", "right"), ("status", "left")):
        table.add_column(column, justify=justify)
    table.add_row(reference_label(manifest), "float32", "", "", "", _pct(keras_acc), "", "", "", "reference")
    for a in manifest["artifacts"]:
        if a["status"] != "ok":
            table.add_row(a["format"], "", "", "", "", "", "", "", "", f"[red]failed[/red]: {escape(a['reason'][:80])}")
            continue
        ev = a["evaluation"]
        io = f"{a['inputs'][0]['dtype']}→{a['outputs'][0]['dtype']}" if a["inputs"] and a["outputs"] else ""
        ratio = f"{a['bytes'] / float_bytes:.2f}" if float_bytes else "—"
        drop = "—" if a["accuracy_drop_pts"] is None else f"{0.0 - a['accuracy_drop_pts']:+.2f}".replace("-0.00", "+0.00")
        table.add_row(escape(a["file"]), a["dtype"], io, _size(a["bytes"]), ratio, _pct(ev["accuracy"]), drop,
                      _pct(ev["agreement"]), f"{ev['mean_abs_diff']:.4f}", "[green]ok[/green]")
    return table
