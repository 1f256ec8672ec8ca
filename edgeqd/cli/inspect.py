"""``edgeqd inspect``: a thin shell over :func:`edgeqd.artifact_info.inspect_artifact`.

The answer is printed as rich tables (names from the artifact are data, never markup)
or, with ``--json``, as the JSON the function returns. Registered on the main group by
:func:`register`.

>>> _size(2048)
'2.0 KiB'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgeqd.cli.common import console, handle_errors, print_json
from edgeqd.cli.options import force_option, json_option


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _quant(tensor: dict[str, Any]) -> str:
    if not tensor["scale"]:
        return "–"
    if len(tensor["scale"]) == 1:
        return f"scale {tensor['scale'][0]:.6g}, zp {tensor['zero_point'][0]}"
    return f"per-channel ×{len(tensor['scale'])} (axis {tensor['quantized_dimension']})"


def _weight_bits(rows: list[dict[str, Any]]) -> str:
    """"int4 ×3 (CONV_2D, FULLY_CONNECTED) · int8 ×1 (DEPTHWISE_CONV_2D)": each stored weight type and its ops.

    >>> _weight_bits([{"dtype": "int4", "op": "CONV_2D"}, {"dtype": "int4", "op": "CONV_2D"}])
    'int4 ×2 (CONV_2D)'
    """
    by_dtype: dict[str, list[str]] = {}
    for row in rows:
        by_dtype.setdefault(row["dtype"], []).append(row["op"])
    return " · ".join(f"{dtype} ×{len(ops)} ({', '.join(sorted(set(ops)))})" for dtype, ops in
                      sorted(by_dtype.items(), key=lambda item: (int(''.join(c for c in item[0] if c.isdigit()) or 0),
                                                                 item[0])))


def inspect_tables(info: dict[str, Any]) -> list:
    """Rich renderables for one ``inspect_artifact`` answer: summary, I/O, operators, metadata.

    Args:
        info: the dict returned by :func:`edgeqd.artifact_info.inspect_artifact`.

    >>> from edgeqd.artifact_info import inspect_artifact
    >>> inspect_tables(inspect_artifact("model_int8.tflite"))  # doctest: +SKIP
    """
    from rich.table import Table
    from rich.text import Text

    params = info["parameters"]
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("file", f"{info['file']} ({info['format']}, {_size(info['bytes'])})")
    warn = info["float_fallback"] or (info["float_ops"] and info["quantization"] != "dynamic-range"
                                      and not info["quantization"].endswith("float activations"))
    summary.add_row("quantization", Text(info["quantization"], style="yellow" if warn else "green"))
    summary.add_row("parameters", f"{params['count']:,}  "
                    + ", ".join(f"{dtype} {row['elements']:,}" for dtype, row in params["by_dtype"].items()))
    summary.add_row("size", f"weights {_size(params['weights_bytes'])} · graph {_size(params.get('graph_bytes', 0))}"
                    f" · metadata {_size(params['metadata_bytes'])}"
                    + (f" · Q/DQ params {_size(params['quantization_params_bytes'])}"
                       if params.get("quantization_params_bytes") else ""))
    if info.get("weight_bits"):
        summary.add_row("weight bits", _weight_bits(info["weight_bits"]))
    scales = info["weight_scales"]
    if scales["per_channel"] or scales["per_tensor"]:
        summary.add_row("weight scales", f"{scales['per_channel']} per-channel, {scales['per_tensor']} per-tensor")
    if info["float_activations"]:
        names = info["float_activations"]
        summary.add_row("float activations", f"{len(names)}: " + ", ".join(names[:4]) + (" …" if len(names) > 4 else ""))
    for note in info["notes"]:
        summary.add_row("note", note)

    io = Table(title="inputs and outputs", title_justify="left")
    for column in ("", "name", "shape", "dtype", "quantization"):
        io.add_column(column)
    for kind in ("inputs", "outputs"):
        for tensor in info[kind]:
            io.add_row(kind[:-1], tensor["name"], str(tensor["shape"]), tensor["dtype"], _quant(tensor))

    ops = Table(title=f"operators ({info['operator_count']})", title_justify="left")
    for column, justify in (("type", "left"), ("count", "right"), ("input dtypes", "left"),
                            ("output dtypes", "left"), ("runs as", "left")):
        ops.add_column(column, justify=justify)
    for row in info["operators"]:
        style = "yellow" if row["float"] else None
        modes = ", ".join(row["modes"]) + ("  ⚠ float in a quantized model" if row["float"] else "")
        ops.add_row(row["type"], str(row["count"]), ", ".join(row["input_dtypes"]),
                    ", ".join(row["output_dtypes"]), Text(modes, style=style or ""))

    renderables = [summary, io, ops]
    if info["float_ops"]:
        fl = Table(title="ops computing in float", title_justify="left")
        for column in ("#", "type", "mode", "kind", "outputs"):
            fl.add_column(column)
        for op in info["float_ops"][:30]:
            fl.add_row(str(op["index"]), op["type"], op["mode"], "layout" if op["layout_only"] else "arithmetic",
                       ", ".join(op["outputs"])[:80])
        renderables.append(fl)
    if info["metadata"]:
        meta = Table(title="embedded metadata", title_justify="left")
        meta.add_column("key")
        meta.add_column("value", overflow="fold")
        for key, value in info["metadata"].items():
            text = value if isinstance(value, str) else json.dumps(value)
            meta.add_row(key, text[:300] + ("…" if len(text) > 300 else ""))
        renderables.append(meta)
    return renderables


@click.command("inspect")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--sensitivity", is_flag=True, help="Per-layer sensitivity of a float .tflite: each weighted layer "
              "quantized alone (w8a8, w4a8, w8a16, w2) and compared with float on --data (agreement, SQNR).")
@click.option("--data", default=None, metavar="DATA", help="Data for --sensitivity (fashion-mnist, .npz, folder).")
@click.option("--samples", default=1000, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="Held-out samples --sensitivity compares on.")
@click.option("--plot", type=click.Path(path_type=Path), default=None, metavar="FILE.png",
              help="With --sensitivity: also draw the table (SQNR per layer and precision) as a PNG.")
@force_option
@click.option("--target", type=click.Choice(["tflm"]), default=None,
              help="Also check a runtime target per op: tflm = TensorFlow Lite Micro (resolver method, kernel, "
              "what it lacks).")
@json_option
@handle_errors
def inspect_command(artifact: Path, as_json: bool, sensitivity: bool = False, data: str | None = None,
                    samples: int = 1000, plot: Path | None = None, force: bool = False,
                    target: str | None = None) -> None:
    """Show what is inside ARTIFACT (.tflite or .onnx): I/O and quantization, operators, float fallback,
    per-channel scales, parameter count and size breakdown, embedded metadata; with --sensitivity, how far
    quantizing each layer alone moves a float model's outputs."""
    from edgeqd.artifact_info import inspect_artifact

    if sensitivity:
        from edgeqd.cli.sensitivity import sensitivity_report, sensitivity_table_renderable
        from edgeqd.errors import UsageError

        if data is None:
            raise UsageError("--sensitivity needs --data (the samples the layers are compared on)")
        if plot is not None:
            from edgeqd.atomic import check_output_safe, check_writable

            check_output_safe(plot, [artifact, data], file=True, option="--plot")
            check_writable(plot, force)
        table = sensitivity_report(artifact, data, samples)
        if plot is not None:
            from edgeqd.cli.sensitivity import write_sensitivity_plot

            write_sensitivity_plot(table, plot, force)
        print_json(table) if as_json else console(markup=False).print(sensitivity_table_renderable(table))
        return
    if plot is not None:
        from edgeqd.errors import UsageError

        raise UsageError("--plot draws the --sensitivity table: give --sensitivity --data DATA")
    info = inspect_artifact(artifact)
    if target == "tflm":
        from edgeqd.cli.inspect_tflm import tflm_target_info

        info["tflm"] = tflm_target_info(Path(artifact).read_bytes(), Path(artifact).name)
    if as_json:
        print_json(info)
        return
    out = console(markup=False)  # names inside the artifact are data, never rich markup
    for renderable in inspect_tables(info):
        out.print(renderable)
    if "tflm" in info:
        from edgeqd.cli.inspect_tflm import tflm_target_tables

        for renderable in tflm_target_tables(info["tflm"]):
            out.print(renderable)


def register(group: click.Group) -> None:
    """Add ``inspect`` to the main command group.

    Args:
        group: the ``edgeqd`` click group.

    >>> register(click.Group("demo"))
    """
    group.add_command(inspect_command)
