"""The report as one self-contained HTML page or as Markdown, from the same rows and plots.

The HTML has its CSS inline and its plots as base64 PNGs: no script, no link, no
network request. Text from the data (names, paths, reasons) is escaped in both forms.

>>> md_text("<b>")
'&lt;b&gt;'
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import re
from typing import Any, Optional, Sequence

from edgeqd import __version__
from edgeqd.reporting.load import ReportData
from edgeqd.reporting.plots import Plot, build_plots
from edgeqd.reporting.tables import (BENCH_COLUMNS, EMULATED_MARK, EMULATED_NOTE, PARITY_COLUMNS, TFLM_NOTE,
                                     bench_table_rows, parity_rows, problems, stage_rows)

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
    if any(r.get("emulated") and r.get("kind") != "tflm" for r in data.bench_rows):
        parts.append(f"<p class=\"note\">{EMULATED_MARK} Rows marked {EMULATED_MARK} (italic, yellow) ran under "
                     f"emulation (qemu-user): {e(EMULATED_NOTE)}. They are left out of the latency plots.</p>")
    if any(r.get("kind") == "tflm" for r in data.bench_rows):
        parts.append(f"<p class=\"note\">{EMULATED_MARK} {e(TFLM_NOTE)}. They are left out of the latency plots.</p>")
    found = problems(data)
    if found:
        parts.append("<h2>Problems</h2><ul>" + "".join(f"<li>{e(p)}</li>" for p in found) + "</ul>")
    for run in data.runs:
        parts.append(f"<h2>Pipeline: {e(run.name)}</h2>")
        parts.append(_html_table(("stage", "settings"), [{"stage": s, "settings": t} for s, t in stage_rows(run)]))
    if data.runs:
        parts.append("<h2>Parity: Keras / TFLite / ONNX</h2>"
                     "<p class=\"meta\">Every artifact evaluated in its own runtime on the same held-out samples; "
                     "agreement = share of samples whose top-1 equals the float Keras model's; regression runs show "
                     "MAE against the targets, its increase in percent and max |Δ| against the float model.</p>")
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
                                 numeric=("threads", "p50 ms", "p90 ms", "mean ms", "peak MB", "arena", "flash", "top-1",
                                          "agreement")))
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
    if any(r.get("emulated") and r.get("kind") != "tflm" for r in data.bench_rows):
        lines += [f"> {EMULATED_MARK} Rows marked {EMULATED_MARK} (in italics) ran under emulation: {EMULATED_NOTE}.",
                  ""]
    if any(r.get("kind") == "tflm" for r in data.bench_rows):
        lines += [f"> {EMULATED_MARK} {md_text(TFLM_NOTE)}.", ""]
    found = problems(data)
    if found:
        lines += ["## Problems", ""] + [f"- {md_text(p)}" for p in found] + [""]
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
