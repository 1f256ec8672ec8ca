"""``edgeqd inspect FLOAT.tflite --sensitivity --data DATA``: the per-layer sensitivity table.

The measuring is :func:`edgeqd.quantization.sensitivity.sensitivity_table`; here the data
are loaded for the model's input, and the answer printed as a rich table (one row per
weighted layer; per precision its agreement with float and output SQNR) or as JSON.

>>> _cell({"agreement": 0.9875, "sqnr_db": 34.96})
'98.8% · 35.0 dB'
>>> _cell(None)
'–'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from edgeqd.errors import UsageError

__all__ = ["sensitivity_report", "sensitivity_table_renderable", "write_sensitivity_plot"]


def _cell(result: Optional[dict[str, Any]]) -> str:
    """"agreement % · SQNR dB" of one variant, "–" where the op has no kernel at that precision."""
    if result is None:
        return "–"
    sqnr = "identical" if result["sqnr_db"] is None else f"{result['sqnr_db']:.1f} dB"
    return f"{100 * result['agreement']:.1f}% · {sqnr}"


def sensitivity_report(artifact: Path, data: str, samples: int, calibration_samples: int = 200,
                       seed: int = 0) -> dict[str, Any]:
    """The sensitivity table of a float ``.tflite`` on ``samples`` held-out samples of ``data``.

    Args:
        artifact: the float ``.tflite`` (``model_fp32.tflite`` of a convert run).
        data: a ``--data`` spec (``fashion-mnist``, an ``.npz``, an image folder).
        samples: held-out samples compared.
        calibration_samples: training samples that calibrate the activation ranges.
        seed: seed of the data split and the calibration subset.
    """
    from edgeqd.artifact_info import inspect_artifact
    from edgeqd.data import calibration_subset, load_for_input
    from edgeqd.quantization.sensitivity import sensitivity_table

    if artifact.suffix != ".tflite":
        raise UsageError(f"--sensitivity takes a float .tflite (model_fp32.tflite), not {artifact.name}")
    info = inspect_artifact(artifact)
    shape = info["inputs"][0]["shape"]
    dataset = load_for_input(data, list(shape[1:]), seed=seed)
    calibration, _ = calibration_subset(dataset, calibration_samples, seed)
    labels = None if dataset.y_eval is None or dataset.regression else dataset.y_eval[:samples]
    table = sensitivity_table(artifact.read_bytes(), calibration, dataset.x_eval[:samples], labels)
    table["file"] = str(artifact)
    return table


def sensitivity_table_renderable(table: dict[str, Any]):
    """A rich table: layer, op, weights, then "agreement · SQNR" per precision."""
    from rich.table import Table

    out = Table(title=f"per-layer sensitivity (one layer quantized at a time, {table['samples']} held-out samples; "
                      "agreement with float · output SQNR)", title_justify="left")
    for column, justify in (("layer", "left"), ("op", "left"), ("weights", "right")):
        out.add_column(column, justify=justify)
    for mode in table["modes"]:
        out.add_column(mode, justify="right")
    for row in table["layers"]:
        out.add_row(row["layer"], row["op"], f"{row['elements']:,}", *(_cell(row[mode]) for mode in table["modes"]))
    return out


def write_sensitivity_plot(table: dict[str, Any], path: Path, force: bool = False) -> None:
    """Draw the sensitivity table as a PNG at ``path`` (written atomically).

    Args:
        table: the answer of :func:`sensitivity_report`.
        path: the ``.png`` to write.
        force: replace an existing file.
    """
    from edgeqd.atomic import write_bytes_atomic
    from edgeqd.reporting.plots import sensitivity_bars

    png = sensitivity_bars(table)
    if png is None:
        raise UsageError(f"--plot: no layer of {table.get('file', 'the model')} could be quantized alone: "
                         "nothing to draw")
    write_bytes_atomic(path, png, force=force)
