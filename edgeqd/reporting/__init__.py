"""``edgeqd report``: one self-contained HTML (or Markdown) page from convert manifests and bench JSON.

Inputs are run folders (holding ``manifest.json`` and/or bench JSON files) or JSON
files, read through :func:`edgeqd.documents.read_document`. The page shows the
pipeline's stages and settings, the parity table across Keras / TFLite / ONNX,
accuracy vs size and accuracy vs latency with the Pareto front, p50/p90 latency per
device and thread count, peak memory, and every bench row with emulated rows marked.
Plots are PNGs drawn with matplotlib's Agg backend and embedded as base64, so the HTML
makes no network request. Without bench data the latency and memory sections say so
instead of failing.

The stages of a report, one module each: :mod:`~edgeqd.reporting.load` (runs and bench
rows), :mod:`~edgeqd.reporting.tables` (rows shared by HTML and Markdown),
:mod:`~edgeqd.reporting.plots` (matplotlib) and :mod:`~edgeqd.reporting.render`.

>>> "<html" in render_html(ReportData("t"), plots=[])
True
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional, Sequence

from edgeqd.errors import UsageError
from edgeqd.reporting.load import ReportData, Run, load_report_data
from edgeqd.reporting.plots import (Plot, build_plots, latency_bars, latency_points, pareto_front, profile_bars,
                                    size_points)
from edgeqd.reporting.render import md_text, render_html, render_markdown
from edgeqd.reporting.tables import (BENCH_COLUMNS, EMULATED_MARK, EMULATED_NOTE, PARITY_COLUMNS, bench_table_rows,
                                     parity_rows, problems, stage_rows)

__all__ = ["BENCH_COLUMNS", "EMULATED_MARK", "EMULATED_NOTE", "PARITY_COLUMNS", "Plot", "ReportData", "Run",
           "bench_table_rows", "build_plots", "latency_bars", "latency_points", "load_report_data", "md_text",
           "pareto_front", "parity_rows", "problems", "profile_bars", "render_html", "render_markdown",
           "size_points", "stage_rows", "write_report"]


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
