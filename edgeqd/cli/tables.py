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


def parity_table(manifest: dict[str, Any]):
    """The parity table: the float Keras model, the fake-quant model and every artifact on the same samples.

    Args:
        manifest: a manifest with a ``parity`` section.
    """
    from rich.table import Table

    parity = manifest["parity"]
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


