"""``edgeqd bench``: latency, memory and accuracy of artifacts on devices, one row each.

A thin shell over :func:`edgeqd.devices.bench`. Exit codes: 0 when at least one row
succeeded, 5 when every row failed, 2 for usage errors (a refused devices file,
``--timeout 0``, ``nan`` for a number), 3 for ``--data`` that cannot be read or does not
fit an artifact (checked before any device runs).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import click

from edgeqd.cli.common import console, handle_errors, native_logs_captured
from edgeqd.cli.options import build_settings, data_option, force_option, out_option, quiet_option, settings_options
from edgeqd.errors import DeviceError, UsageError
from edgeqd.settings import BenchSettings

EMULATED_MARK = "†"
_RUNTIME_SHORT = {"ai_edge_litert": "litert", "tflite_runtime": "tflite-rt", "onnxruntime": "ort"}


def parse_threads(value: str) -> tuple[int, ...]:
    """``--threads 1,4`` as a tuple of thread counts.

    Args:
        value: comma-separated positive integers.

    >>> parse_threads("1, 4")
    (1, 4)
    """
    try:
        counts = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--threads takes comma-separated positive integers like 1,4 (got {value!r})") from None
    if not counts or min(counts) < 1:
        raise UsageError(f"--threads takes comma-separated positive integers like 1,4 (got {value!r})")
    return counts


def _fmt(value: Optional[float], digits: int = 3) -> str:
    if value is None:
        return "–"
    text = f"{value:.{digits}f}"
    return "0." + "0" * digits if text.startswith("-") and float(text) == 0 else text


def _percent(value: Optional[float]) -> str:
    """A fraction as convert's tables print it.

    >>> _percent(0.732), _percent(None)
    ('73.20%', '–')
    """
    return "–" if value is None else f"{100 * value:.2f}%"


def bench_table(rows) -> "object":
    """The rich table of bench rows; emulated latencies are marked and never compared.

    Args:
        rows: :class:`~edgeqd.types.BenchResult` rows.
    """
    from rich.markup import escape
    from rich.table import Table

    from edgeqd.types import EMULATED_LATENCY_NOTE

    caption = [f"{EMULATED_MARK} {note}: never compared with a device's latency" for note in
               dict.fromkeys(r.latency_note or EMULATED_LATENCY_NOTE for r in rows if r.emulated)]
    table = Table(title="edgeqd bench", caption="\n".join(caption) or None)
    for column, justify in (("artifact", "left"), ("device", "left"), ("thr", "right"), ("status", "left"),
                            ("p50 ms", "right"), ("p90 ms", "right"), ("mean ms", "right"),
                            ("init ms", "right"), ("peak MB", "right"), ("accuracy / MAE", "right"),
                            ("agree", "right"), ("runtime", "left"), ("machine", "left"), ("note", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for row in rows:
        mark = EMULATED_MARK if row.emulated else ""
        latency = [(_fmt(v) + mark) if v is not None else "–" for v in (row.p50_ms, row.p90_ms, row.mean_ms)]
        note = row.reason if not row.ok else (row.latency_note or row.notes)
        if row.ok and row.micro and row.micro.get("arena_bytes"):  # tflm: what an MCU needs, beside the latency
            note = f"arena {row.micro['arena_bytes']:,} B, flash {row.micro['flash_bytes']:,} B; {note}"
        machine = row.device_info.get("machine", "") if row.device_info else ""
        cpu = row.device_info.get("cpu", "") if row.device_info else ""
        # Artifact names, device names, reasons and device strings are not ours: no markup in them.
        table.add_row(escape(row.artifact), escape(row.device), str(row.threads),
                      "[green]ok[/]" if row.ok else "[red]failed[/]", *latency,
                      _fmt(row.init_ms, 1), _fmt(row.peak_rss_mb, 1),
                      _percent(row.accuracy) if row.mae is None else f"MAE {row.mae:.4g}",
                      _percent(row.agreement),
                      f"{_RUNTIME_SHORT.get(row.runtime, row.runtime)} {row.runtime_version}".strip()
                      + ("" if row.xnnpack is None else (" xnnpack" if row.xnnpack else " no-xnnpack")),
                      escape(f"{machine} {cpu}".strip()), escape(note))
    return table


def profile_tables(rows, top: int = 8) -> list:
    """One rich table per profiled row: time by op type, each with its slowest node.

    Args:
        rows: :class:`~edgeqd.types.BenchResult` rows (those without a profile are skipped).
        top: how many op types each table lists.
    """
    from rich.table import Table

    tables = []
    for row in rows:
        profile = row.profile
        if not profile:
            continue
        title = f"per-op profile: {row.artifact} on {row.device} × {row.threads} thread(s)"
        if not profile.get("available"):
            tables.append(f"{title}: not available ({profile.get('reason', '')})")
            continue
        mark = EMULATED_MARK if row.emulated else ""
        table = Table(title=title, caption=f"{profile['source']}, {profile['runs']} inferences; "
                      f"sum of op times {_fmt(profile['total_ms'])} ms{mark}")
        for column in ("op type", "nodes", "avg ms", "%", "slowest node", "its ms"):
            table.add_column(column, justify="left" if column in ("op type", "slowest node") else "right",
                             overflow="fold")
        for entry in profile["by_op_type"][:top]:
            slowest = next((n for n in profile["top_nodes"] if n["op"] == entry["op"]), None)
            table.add_row(entry["op"], str(entry["nodes"]), _fmt(entry["avg_ms"], 4) + mark,
                          f"{entry['percent']:.1f}", slowest["name"] if slowest else "–",
                          _fmt(slowest["avg_ms"], 4) + mark if slowest else "–")
        tables.append(table)
    return tables


def _log_to_stderr(stderr_fd: Optional[int], quiet: bool):
    """A progress-line writer to the real stderr (TensorFlow's chatter is captured meanwhile)."""
    stream = os.fdopen(os.dup(stderr_fd), "w") if stderr_fd is not None else sys.stderr

    def log(line: str) -> None:
        if not quiet:
            stream.write(line + "\n")
            stream.flush()

    return stream, log


@click.command("bench")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--device", "device_specs", multiple=True, metavar="SPEC",
              help="local, qemu-aarch64, qemu-armv7, ssh://[user@]host[:port], adb[:SERIAL]; repeatable.")
@click.option("--devices", "devices_file", type=click.Path(path_type=Path), metavar="FILE.yaml",
              help="YAML list of named device specs (a fleet, run concurrently).")
@data_option(required=False, help="Evaluation data shipped for accuracy: 'fashion-mnist', an .npz or an image "
                                  "folder (resized to the artifact's input). Without it: latency and memory only.")
@click.option("--threads", default="1", show_default=True, metavar="LIST",
              help="Comma-separated thread counts, e.g. 1,4.")
@settings_options(BenchSettings, "runs", "warmup", "min_seconds", "max_seconds", "samples", "xnnpack", "profile",
                  "reference", "retries", "timeout")
@click.option("--benchmark-binary", type=click.Path(path_type=Path), default=None,
              help="TFLite's native benchmark_model for adb devices (Android has no Python).")
@out_option("Also write the bench document (every row, JSON) to this file.", required=False, metavar="FILE.json")
@click.option("--json", "json_target", default=None, is_flag=False, flag_value="-", metavar="[FILE]",
              help="Print the bench document as JSON instead of the tables (--json FILE, the older "
                   "spelling of --out FILE, still works).")
@force_option
@quiet_option
@handle_errors
def bench_command(artifacts, device_specs, devices_file, data, threads, benchmark_binary, out, json_target, force,
                  quiet, **options) -> None:
    """Measure ARTIFACTS (.tflite/.onnx) on devices: latency, memory and accuracy, one row each.

    Same-named artifacts from different folders (ptq/model_int8.tflite, qat/model_int8.tflite)
    are rows of their own, labelled by their folders. Exit code 5 only if every row
    failed; a failed row carries its reason.
    """
    from edgeqd.atomic import check_output_safe, check_writable
    from edgeqd.devices import bench, load_devices_file
    from edgeqd.devices.bench import all_failed
    from edgeqd.documents import new_bench_document, to_json, write_document

    settings = build_settings(BenchSettings, options, threads=parse_threads(threads))
    if json_target not in (None, "-"):
        if out is not None:
            raise UsageError("give the bench document's file once: --out FILE (or the older --json FILE)")
        out, json_target = Path(json_target), None
    devices: list = list(device_specs) + (load_devices_file(devices_file) if devices_file is not None else [])
    if not devices:
        raise UsageError("give --device SPEC (repeatable) or --devices FILE.yaml")
    if out is not None:
        check_output_safe(out, [*artifacts, devices_file, benchmark_binary, data, settings.reference], file=True,
                          option="--out")
        check_writable(out, force)
    with native_logs_captured() as stderr_fd:
        stream, log = _log_to_stderr(stderr_fd, quiet)
        try:
            rows = bench(artifacts, devices, data=data, settings=settings, benchmark_binary=benchmark_binary,
                         log=log)
        finally:
            if stream is not sys.stderr:
                stream.close()
    document = new_bench_document([row.to_dict() for row in rows], {
        "artifacts": [str(a) for a in artifacts], "data": data,
        "devices": [getattr(d, "name", None) or getattr(d, "spec", d) for d in devices], **settings.to_dict()})
    if json_target == "-":
        click.echo(to_json(document, "the bench document"))
    else:
        console().print(bench_table(rows))
        for table in profile_tables(rows):
            console().print(table)
    if out is not None:
        write_document(out, document, force=force)
        click.echo(f"wrote {out}", err=True)
    if all_failed(rows):
        click.echo(f"error: all {len(rows)} row(s) failed; first reason: {rows[0].reason}", err=True)
        sys.exit(DeviceError.exit_code)


def register(group: click.Group) -> None:
    """Add ``bench`` to the main command group.

    Args:
        group: the ``edgeqd`` click group.

    >>> register(click.Group())
    """
    group.add_command(bench_command)
