"""``edgeqd bench`` and ``edgeqd devices list|probe|setup``: the device commands of the CLI.

A thin shell over :func:`edgeqd.devices.bench` and the device registry; registered
on the main group by :func:`register`. Exit codes: 0 when at least one row
succeeded, 5 when every row failed (or a probe/setup failed), 2 for usage errors
(a refused devices file, ``--timeout 0``, ``nan`` for a number), 3 for ``--data``
that cannot be read or does not fit an artifact (checked before any device runs).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import click

from edgeqd.cli.common import FiniteFloat, console, handle_errors, native_logs_captured, print_json
from edgeqd.errors import DeviceError, UsageError

EMULATED_MARK = "†"
_RUNTIME_SHORT = {"ai_edge_litert": "litert", "tflite_runtime": "tflite-rt", "onnxruntime": "ort"}


def _thread_counts(value: str) -> list[int]:
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
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


def bench_table(rows) -> "object":
    """The rich table of bench rows; emulated latencies are marked and never compared.

    Args:
        rows: :class:`~edgeqd.types.BenchResult` rows.
    """
    from rich.markup import escape
    from rich.table import Table

    from edgeqd.types import EMULATED_LATENCY_NOTE

    table = Table(title="edgeqd bench", caption=f"{EMULATED_MARK} {EMULATED_LATENCY_NOTE}: functional "
                  f"and accuracy check only" if any(r.emulated for r in rows) else None)
    for column, justify in (("artifact", "left"), ("device", "left"), ("thr", "right"), ("status", "left"),
                            ("p50 ms", "right"), ("p90 ms", "right"), ("mean ms", "right"),
                            ("init ms", "right"), ("peak MB", "right"), ("accuracy", "right"),
                            ("agree", "right"), ("runtime", "left"), ("machine", "left"), ("note", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for row in rows:
        mark = EMULATED_MARK if row.emulated else ""
        latency = [(_fmt(v) + mark) if v is not None else "–" for v in (row.p50_ms, row.p90_ms, row.mean_ms)]
        note = row.reason if not row.ok else (row.latency_note or row.notes)
        machine = row.device_info.get("machine", "") if row.device_info else ""
        cpu = row.device_info.get("cpu", "") if row.device_info else ""
        # Artifact names, device names, reasons and device strings are not ours: no markup in them.
        table.add_row(escape(row.artifact), escape(row.device), str(row.threads),
                      "[green]ok[/]" if row.ok else "[red]failed[/]", *latency,
                      _fmt(row.init_ms, 1), _fmt(row.peak_rss_mb, 1), _fmt(row.accuracy, 4),
                      _fmt(row.agreement, 4),
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


def bench_document(rows, settings: dict) -> dict:
    """The JSON document of a bench run: settings, the emulation label and every row.

    Args:
        rows: :class:`~edgeqd.types.BenchResult` rows.
        settings: the options the run used.
    """
    from edgeqd import __version__
    from edgeqd.types import EMULATED_LATENCY_NOTE

    return {"edgeqd": __version__, "command": "bench", "settings": settings,
            "emulated_latency_note": EMULATED_LATENCY_NOTE,
            "rows": [row.to_dict(raw=False) for row in rows],
            "ok_rows": sum(1 for row in rows if row.ok), "failed_rows": sum(1 for row in rows if not row.ok)}


@click.command("bench")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--device", "device_specs", multiple=True,
              help="local, qemu-aarch64, qemu-armv7, ssh://[user@]host[:port], adb[:SERIAL]; repeatable.")
@click.option("--devices", "devices_file", type=click.Path(path_type=Path),
              help="YAML list of named device specs (a fleet, run concurrently).")
@click.option("--data", default=None, help="Evaluation data shipped for accuracy: 'fashion-mnist', an .npz "
                                          "or an image folder. Without it: latency and memory only.")
@click.option("--samples", default=500, show_default=True, help="Evaluation samples shipped from --data.")
@click.option("--threads", default="1", show_default=True, help="Comma-separated thread counts, e.g. 1,4.")
@click.option("--runs", default=50, show_default=True, help="Minimum timed runs.")
@click.option("--warmup", default=5, show_default=True, help="Warmup runs (the first inference included).")
@click.option("--min-seconds", default=1.0, type=FiniteFloat(), show_default=True, help="Minimum timed seconds.")
@click.option("--max-seconds", default=150.0, type=FiniteFloat(), show_default=True, help="Stop timing after this long.")
@click.option("--no-xnnpack", is_flag=True, help="Run LiteRT without its XNNPACK delegate.")
@click.option("--profile", is_flag=True,
              help="Also a per-op profile, after the timed runs, where the runtime offers one "
                   "(ONNX Runtime; benchmark_model on adb). LiteRT's Python API has none.")
@click.option("--reference", default="auto", show_default=True,
              help="Float artifact whose top-1 defines agreement; 'auto' = a *fp32*.tflite among the "
                   "artifacts; 'none' to skip.")
@click.option("--retries", default=0, show_default=True, help="Extra attempts for a failed row.")
@click.option("--timeout", default=600.0, type=FiniteFloat(), show_default=True, help="Seconds allowed for one run on a device.")
@click.option("--benchmark-binary", type=click.Path(path_type=Path), default=None,
              help="TFLite's native benchmark_model for adb devices (Android has no Python).")
@click.option("--json", "json_file", type=click.Path(path_type=Path), default=None,
              help="Also write every row as JSON to this file ('-' for stdout instead of the table).")
@click.option("--force", is_flag=True, help="Overwrite an existing --json file.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@handle_errors
def bench_command(artifacts, device_specs, devices_file, data, samples, threads, runs, warmup, min_seconds,
                  max_seconds, no_xnnpack, profile, reference, retries, timeout, benchmark_binary, json_file, force,
                  quiet) -> None:
    """Measure ARTIFACTS (.tflite/.onnx) on devices: latency, memory and accuracy, one row each.

    Exit code 5 only if every row failed; a failed row carries its reason.
    """
    from edgeqd.devices import bench, load_devices_file
    from edgeqd.devices.bench import all_failed
    from edgeqd.atomic import atomic_file, check_output_safe, check_writable
    from edgeqd.strict_json import dumps

    devices: list = list(device_specs)
    if devices_file is not None:
        devices += load_devices_file(devices_file)
    if not devices:
        raise UsageError("give --device SPEC (repeatable) or --devices FILE.yaml")
    to_stdout = json_file is not None and str(json_file) == "-"
    if json_file is not None and not to_stdout:
        check_output_safe(json_file, [*artifacts, devices_file, benchmark_binary, data, reference],
                          file=True, option="--json")
        check_writable(json_file, force)
    counts = _thread_counts(threads)
    with native_logs_captured() as stderr_fd:
        stream = os.fdopen(os.dup(stderr_fd), "w") if stderr_fd is not None else sys.stderr

        def log(line: str) -> None:
            if not quiet:
                stream.write(line + "\n")
                stream.flush()

        try:
            rows = bench(artifacts, devices, data=data, threads=counts, runs=runs, warmup=warmup,
                         min_seconds=min_seconds, max_seconds=max_seconds, samples=samples,
                         xnnpack=not no_xnnpack, reference=None if reference == "none" else reference,
                         retries=retries, timeout=timeout, benchmark_binary=benchmark_binary,
                         profile=profile, log=log)
        finally:
            if stream is not sys.stderr:
                stream.close()
    settings = {"artifacts": [str(a) for a in artifacts],
                "devices": [getattr(d, "name", None) or getattr(d, "spec", d) for d in devices],
                "data": data, "samples": samples, "threads": counts, "runs": runs, "warmup": warmup,
                "min_seconds": min_seconds, "max_seconds": max_seconds, "xnnpack": not no_xnnpack,
                "profile": profile, "retries": retries}
    document = bench_document(rows, settings)
    if to_stdout:
        click.echo(dumps(document, "the bench document", indent=2, default=str))
    else:
        console().print(bench_table(rows))
        for table in profile_tables(rows):
            console().print(table)
        if json_file is not None:
            with atomic_file(json_file, force=force) as tmp:
                tmp.write_text(dumps(document, str(json_file), indent=2, default=str))
            click.echo(f"wrote {json_file}", err=True)
    if all_failed(rows):
        click.echo(f"error: all {len(rows)} row(s) failed; first reason: {rows[0].reason}", err=True)
        sys.exit(DeviceError.exit_code)


@click.group("devices")
def devices_group() -> None:
    """List, probe and set up devices."""


@devices_group.command("list")
@click.option("--devices", "devices_file", type=click.Path(path_type=Path), default=None,
              help="Also list the devices configured in this YAML file.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def devices_list(devices_file, as_json) -> None:
    """Show the registered device kinds (and the devices of a devices file)."""
    from rich.table import Table

    from edgeqd.devices import DEVICES, load_devices_file
    from edgeqd.devices.qemu import RECIPES, sysroot_ready

    kinds = []
    for name, cls in DEVICES.items():
        state = ""
        if name in RECIPES:
            state = "sysroot ready" if sysroot_ready(name) else "sysroot not built (built on first use)"
        kinds.append({"kind": name, "emulated": cls.emulated, "description": cls.description, "state": state})
    configured = [{"name": c.name or c.spec, "spec": c.spec, "notes": c.notes, "options": c.options}
                  for c in (load_devices_file(devices_file) if devices_file else [])]
    if as_json:
        print_json({"kinds": kinds, "configured": configured})
        return
    table = Table(title="device kinds")
    for column in ("kind", "emulated", "description", "state"):
        table.add_column(column)
    for kind in kinds:
        table.add_row(kind["kind"], "yes" if kind["emulated"] else "no", kind["description"], kind["state"])
    console().print(table)
    if configured:
        table = Table(title=f"configured in {devices_file}")
        for column in ("name", "spec", "notes"):
            table.add_column(column)
        for entry in configured:
            table.add_row(entry["name"], entry["spec"], entry["notes"])
        console().print(table)


@devices_group.command("probe")
@click.argument("spec")
@click.option("--timeout", default=120.0, show_default=True, type=FiniteFloat(min=0, min_open=True),
              help="Seconds for the probe (> 0).")
@handle_errors
def devices_probe(spec, timeout) -> None:
    """Print what device SPEC has: CPU, cores, memory, OS, Python and runtimes (JSON)."""
    from edgeqd.devices import device_from_spec

    device = device_from_spec(spec)
    result = device.probe(timeout=timeout)
    result["kind"] = device.kind
    result["emulated"] = bool(device.emulated or result.get("device", {}).get("emulated"))
    print_json(result)


@devices_group.command("setup")
@click.argument("spec")
@click.option("--force", is_flag=True, help="Rebuild a cached qemu sysroot.")
@handle_errors
def devices_setup(spec, force) -> None:
    """Make device SPEC ready: build a qemu sysroot (cached, idempotent) or install the runtime over ssh."""
    from edgeqd.devices import device_from_spec

    click.echo(device_from_spec(spec).setup(force=force))


def register(group: click.Group) -> None:
    """Add ``bench`` and ``devices`` to the main command group.

    Args:
        group: the ``edgeqd`` click group.

    >>> register(click.Group())
    """
    group.add_command(bench_command, "bench")
    group.add_command(devices_group, "devices")
