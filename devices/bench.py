"""``bench``: measure artifacts on devices, one row per (artifact, device, threads).

A failure anywhere (a device that cannot be reached, a dropped connection, a runner
crash, a timeout) becomes a failed row with its reason; the other rows are kept.
Devices that run on this machine's CPU (``local``, ``qemu-*``) run one after the
other — measured side by side, their latencies would disturb each other — while
remote devices of a fleet run concurrently.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from edgeqd.devices.base import Device, DeviceRunError, Job, Session, device_from_spec
from edgeqd.errors import DataError, DeviceError, EdgeqdError, UsageError
from edgeqd.settings import BenchSettings
from edgeqd.types import EMULATED_LATENCY_NOTE, BenchResult, Status

ARTIFACT_SUFFIXES = (".tflite", ".onnx")
_DEVICE_FILE_KEYS = {"name", "spec", "notes", "thermal", "governor", "options"}
# Options that are paths or command lines: the transports hand them to shlex/subprocess.
_TEXT_OPTIONS = {"python", "adb", "workdir_parent", "ssh_config", "identity_file", "benchmark_binary"}


@dataclass(frozen=True)
class DeviceConfig:
    """One entry of a devices file.

    Attributes:
        spec: the device spec ("ssh://pi@raspberrypi", "adb:R58M12345", "qemu-aarch64").
        name: display name (defaults to the spec).
        notes: free text carried into every row (thermal state, CPU governor, power supply).
        options: kind-specific settings (``python``, ``ssh_config``, ``workdir_parent``, …).
    """

    spec: str
    name: str = ""
    notes: str = ""
    options: dict = field(default_factory=dict)

    def device(self) -> Device:
        """Build the configured device."""
        return device_from_spec(self.spec, name=self.name or None, options=self.options)


def load_devices_file(path: Union[str, os.PathLike]) -> list[DeviceConfig]:
    """Read a devices file: a YAML list (or ``devices:`` list) of named device specs.

    Each entry has ``spec`` and optionally ``name``, ``notes``, ``thermal``, ``governor``
    and ``options``; unknown keys raise :class:`UsageError`. The file is read by
    :func:`~edgeqd.devices.fleet_yaml.read_fleet_yaml`: at most 1 MiB of UTF-8, no YAML
    anchors or aliases (a "billion laughs" file is refused before it expands).

    Args:
        path: the YAML file.

    Raises:
        UsageError: for every problem with the file (exit 2), naming the file.

    >>> load_devices_file("fleet.yaml")  # doctest: +SKIP
    [DeviceConfig(spec='ssh://pi@pi4.local', name='pi4', notes='governor performance', options={})]
    """
    from edgeqd.devices.fleet_yaml import read_fleet_yaml

    path = Path(path)
    document = read_fleet_yaml(path)
    entries = document.get("devices") if isinstance(document, dict) else document
    if isinstance(document, dict) and set(document) - {"devices"}:
        raise UsageError(f"devices file {path}: unknown top-level key(s) "
                         f"{', '.join(sorted(map(str, set(document) - {'devices'})))}; expected 'devices'")
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"devices file {path}: expected a non-empty list of devices")
    configs = []
    for number, entry in enumerate(entries, 1):
        if isinstance(entry, str):
            entry = {"spec": entry}
        if not isinstance(entry, dict) or "spec" not in entry:
            raise UsageError(f"devices file {path}: entry {number} needs a 'spec'")
        unknown = set(entry) - _DEVICE_FILE_KEYS
        if unknown:
            raise UsageError(f"devices file {path}: entry {number} has unknown key(s) "
                             f"{', '.join(sorted(map(str, unknown)))}; "
                             f"allowed: {', '.join(sorted(_DEVICE_FILE_KEYS))}")
        if not isinstance(entry["spec"], str):
            raise UsageError(f"devices file {path}: entry {number}: 'spec' must be a string like "
                             f"local or ssh://pi@host")
        for key in ("name", "notes", "thermal", "governor"):
            if isinstance(entry.get(key), (dict, list)):
                raise UsageError(f"devices file {path}: entry {number}: {key!r} must be text, not a "
                                 f"{'mapping' if isinstance(entry[key], dict) else 'list'}")
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            raise UsageError(f"devices file {path}: entry {number}: 'options' must be a mapping")
        _check_options(options, path, number)
        notes = "; ".join(str(entry[key]) if key == "notes" else f"{key}: {entry[key]}"
                          for key in ("notes", "thermal", "governor") if entry.get(key))
        config = DeviceConfig(spec=str(entry["spec"]), name=str(entry.get("name") or ""),
                              notes=notes, options=dict(options))
        try:
            config.device()  # validate the spec and its options now, not halfway through a run
        except UsageError as exc:
            raise UsageError(f"devices file {path}: entry {number}: {exc}") from None
        configs.append(config)
    counts = collections.Counter(c.name or c.spec for c in configs)  # not list.count: O(n²) on big files
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        raise UsageError(f"devices file {path}: duplicate device name(s) {', '.join(duplicates)}")
    return configs


def _check_options(options: dict, path: Path, number: int) -> None:
    """Option names must be text, values text, finite numbers or lists of text (what the kinds read)."""
    for key, value in options.items():
        if not isinstance(key, str):
            raise UsageError(f"devices file {path}: entry {number}: option name {key!r} must be text")
        plain = isinstance(value, (str, int, bool)) or (isinstance(value, float) and math.isfinite(value)) \
            or (isinstance(value, list) and all(isinstance(item, str) for item in value))
        if not plain or (key in _TEXT_OPTIONS and not isinstance(value, str)):
            raise UsageError(f"devices file {path}: entry {number}: option {key!r} must be "
                             f"{'text' if key in _TEXT_OPTIONS else 'text, a finite number or a list of text'}")


def _check_artifacts(artifacts: Sequence[Union[str, os.PathLike]]) -> list[Path]:
    if not artifacts:
        raise UsageError("give at least one artifact (.tflite or .onnx)")
    paths = []
    for artifact in artifacts:
        path = Path(artifact)
        if not path.is_file():
            raise UsageError(f"artifact not found: {path}")
        if path.suffix.lower() not in ARTIFACT_SUFFIXES:
            raise UsageError(f"{path}: unsupported artifact {path.suffix or '(no suffix)'}; "
                             f"edgeqd bench runs {' and '.join(ARTIFACT_SUFFIXES)} files")
        paths.append(path)
    if len({p.resolve() for p in paths}) != len(paths):
        raise UsageError(f"an artifact is given twice: {[str(p) for p in paths]}")
    return paths


def artifact_labels(paths: Sequence[Path]) -> list[str]:
    """Row names: each file's name, or enough of its folders to tell same-named files apart.

    Comparing ``ptq/model_int8.tflite`` with ``qat/model_int8.tflite`` is the commonest bench
    run there is; their rows are labelled by their folders.

    Args:
        paths: the artifacts.

    >>> artifact_labels([Path("ptq/model_int8.tflite"), Path("qat/model_int8.tflite"), Path("a/m.onnx")])
    ['ptq/model_int8.tflite', 'qat/model_int8.tflite', 'm.onnx']
    """
    parts = [Path(p).resolve().parts for p in paths]
    labels = []
    for index, own in enumerate(parts):
        depth = 1
        while depth < len(own) and any(other[-depth:] == own[-depth:] for i, other in enumerate(parts)
                                       if i != index):
            depth += 1
        labels.append("/".join(own[-depth:]))
    return labels


def _reference_outputs(reference: Path, x: np.ndarray) -> np.ndarray:
    """Float outputs of the reference artifact on this machine (the runner's own code, batched)."""
    from edgeqd.devices import runner

    try:
        model = runner.open_model(str(reference), threads=1)
        return runner.predict(model, x, batch=256)
    except runner.RunnerError as exc:
        raise UsageError(f"reference {reference}: {exc}") from None


def _pick_reference(reference: Union[str, os.PathLike, None], artifacts: list[Path]) -> Optional[Path]:
    if reference is None:
        return None
    if str(reference) == "auto":
        # A float TFLite among the artifacts (convert writes model_fp32.tflite) is the reference.
        for path in artifacts:
            if path.suffix == ".tflite" and "fp32" in path.name:
                return path
        return None
    path = Path(reference)
    if not path.is_file() or path.suffix.lower() not in ARTIFACT_SUFFIXES:
        raise UsageError(f"reference must be an existing .tflite or .onnx float model: {path}")
    return path


def check_data_fits(x: np.ndarray, artifacts: Sequence[Path], data: Union[str, os.PathLike]) -> None:
    """Refuse data whose samples do not fit an artifact's input, before any device runs.

    Each artifact is opened on this machine with the runner's own code and its input shape
    checked the way the runner checks it on the device (same element count per sample).
    An artifact this machine cannot open is left to the device to judge.

    Args:
        x: the evaluation samples to be shipped, shape (N, ...).
        artifacts: the artifacts (and the reference) that will see them.
        data: ``--data`` as given, for the message.

    Raises:
        DataError: the samples do not fit one of the artifacts (exit 3).
    """
    from edgeqd.devices import runner

    for artifact in artifacts:
        try:
            model = runner.open_model(str(artifact), threads=1)
        except runner.RunnerError:
            continue  # e.g. ops this host's runtime lacks: the device reports its own failure
        try:
            runner._fit_samples(x[:1], model.input_shape())
        except runner.RunnerError as exc:
            raise DataError(f"--data {data} does not fit {artifact.name}: {exc}") from None


def _input_spec(artifact: Path) -> tuple[tuple, str]:
    """An artifact's per-sample input shape as this machine's runtime reads it (() if it cannot), and the
    dtype its samples take: the input's integer dtype when it is not quantized (token ids), else float32."""
    from edgeqd.devices import runner

    try:
        model = runner.open_model(str(artifact), threads=1)
    except runner.RunnerError:
        return (), "float32"
    tensor = model.inputs[0]
    integer = np.dtype(tensor["dtype"]).kind in "iu" and not any(tensor["scale"])
    return tuple(model.input_shape()[1:]), tensor["dtype"] if integer else "float32"


def prepare_data(data: Union[str, os.PathLike, None], samples: int, reference: Optional[Path],
                 folder: Path, artifacts: Sequence[Path] = ()) -> Optional[Path]:
    """Write the ``.npz`` slice shipped to devices: x, y and the reference outputs.

    Args:
        data: ``--data`` (``fashion-mnist``, an ``.npz``, an image folder) or None.
        samples: how many evaluation samples to ship.
        reference: a float artifact whose outputs on this machine are the agreement reference.
        folder: where to write ``eval.npz``.
        artifacts: artifacts the data must fit (checked here, so that a wrong shape is a
            data error, exit 3, not a failed row on every device).

    >>> prepare_data(None, 100, None, Path("/tmp")) is None
    True
    """
    if data is None:
        return None
    if samples < 1:
        raise UsageError(f"--samples must be at least 1 (got {samples})")
    from edgeqd.data import load_for_input

    shape, dtype = _input_spec(artifacts[0]) if artifacts else ((), "float32")
    dataset = load_for_input(data, shape, input_dtype=dtype)
    x = dataset.x_eval[:samples]
    check_data_fits(x, list(dict.fromkeys([*artifacts, *([reference] if reference is not None else [])])), data)
    arrays = {"x": x}
    if dataset.y_eval is not None:  # float regression targets: the runner reports MAE instead of accuracy
        arrays["y"] = dataset.y_eval[:samples].astype(np.float32 if dataset.regression else np.int64)
    if reference is not None:
        arrays["reference"] = _reference_outputs(reference, x)
    path = folder / "eval.npz"
    np.savez(path, **arrays)
    return path


def _row_from_document(document: dict, device: Device, job: Job, attempts: int, seconds: float,
                       notes: str) -> BenchResult:
    timings = document.get("timings_ms", {})
    memory = document.get("memory_mb", {})
    quality = document.get("quality") or {}
    info = document.get("device", {})
    emulated = bool(device.emulated or info.get("emulated"))
    runtime = document.get("runtime", {})
    return BenchResult(
        artifact=job.name, device=device.name, kind=device.kind, threads=job.threads,
        status=Status.OK, emulated=emulated,
        latency_note=(device.latency_note or EMULATED_LATENCY_NOTE) if emulated else "", micro=document.get("micro"),
        runtime=runtime.get("name", ""), runtime_version=runtime.get("version", ""),
        xnnpack=document.get("xnnpack"),
        init_ms=timings.get("init"), first_inference_ms=timings.get("first_inference"),
        warmup_avg_ms=timings.get("warmup_avg"), count=int(timings.get("count", 0)),
        mean_ms=timings.get("mean"), std_ms=timings.get("std"), min_ms=timings.get("min"),
        max_ms=timings.get("max"), p50_ms=timings.get("p50"), p90_ms=timings.get("p90"),
        p99_ms=timings.get("p99"), peak_rss_mb=memory.get("peak_rss"),
        rss_increase_mb=memory.get("peak_increase_over_import"),
        artifact_bytes=int(document.get("artifact", {}).get("bytes", job.artifact.stat().st_size)),
        samples=int(quality.get("samples", 0) or 0), accuracy=quality.get("accuracy"), mae=quality.get("mae"),
        agreement=quality.get("agreement"), device_info=info, attempts=attempts,
        seconds=round(seconds, 3), notes=notes, profile=document.get("profile"), raw=document)


def _failed_row(device: Device, job: Job, reason: str, attempts: int, seconds: float,
                notes: str) -> BenchResult:
    return BenchResult(artifact=job.name, device=device.name, kind=device.kind,
                       threads=job.threads, status=Status.FAILED, reason=reason,
                       emulated=device.emulated,
                       latency_note=(device.latency_note or EMULATED_LATENCY_NOTE) if device.emulated else "",
                       artifact_bytes=job.artifact.stat().st_size, attempts=attempts,
                       seconds=round(seconds, 3), notes=notes)


def _run_device(device: Device, jobs: list[Job], retries: int, notes: str,
                log: Callable[[str], None]) -> list[BenchResult]:
    """All jobs of one device over one session; a broken session is reopened for a retry."""
    rows = []
    session: Optional[Session] = None
    if device.single_threaded:  # one row per artifact, at the one thread it runs
        jobs = list({job.artifact: dataclasses.replace(job, threads=1) for job in jobs}.values())
    try:
        for job in jobs:
            started = time.monotonic()
            attempts, reason = 0, ""
            while attempts <= retries:
                attempts += 1
                try:
                    if session is None:
                        session = device.open()
                    log(f"{device.name}: {job.name} × {job.threads} thread(s)"
                        + (f" (attempt {attempts})" if attempts > 1 else ""))
                    document = device.run_job(session, job)
                    rows.append(_row_from_document(document, device, job, attempts,
                                                   time.monotonic() - started, notes))
                    break
                except EdgeqdError as exc:
                    reason = str(exc)
                    log(f"{device.name}: {job.name}: failed: {reason}")
                    # Start the next attempt (or the next job) on a fresh connection.
                    if session is not None:
                        session.close()
                        session = None
            else:
                rows.append(_failed_row(device, job, reason, attempts, time.monotonic() - started, notes))
    finally:
        if session is not None:
            session.close()
    return rows


def _device_entries(devices: Sequence[Union[str, Device, DeviceConfig]],
                    benchmark_binary: Union[str, os.PathLike, None],
                    say: Callable[[str], None]) -> list[tuple[Device, str]]:
    """The devices to run on, each with its notes; ``benchmark_binary`` handed to those that take one."""
    if not devices:
        raise UsageError("give at least one --device or a --devices file")
    entries: list[tuple[Device, str]] = []
    for entry in devices:
        if isinstance(entry, Device):
            entries.append((entry, ""))
        elif isinstance(entry, DeviceConfig):
            entries.append((entry.device(), entry.notes))
        else:
            entries.append((device_from_spec(str(entry)), ""))
    if benchmark_binary is not None:
        binary = Path(benchmark_binary)
        if not binary.is_file():
            raise UsageError(f"--benchmark-binary not found: {binary}")
        for device, _ in entries:
            if "benchmark_binary" in device.option_names:
                device.options.setdefault("benchmark_binary", str(binary))
    for device, _ in entries:
        device.log = say
    names = [device.name for device, _ in entries]
    if len(set(names)) != len(names):
        raise UsageError(f"device names must be distinct: {names}")
    return entries


def _run_everywhere(entries: list[tuple[Device, str]], jobs: list[Job], retries: int,
                    say: Callable[[str], None]) -> list[BenchResult]:
    """Every job on every device: devices on this machine's CPU one after the other, remote ones at once."""
    host_group = [(d, n) for d, n in entries if d.shares_host]
    groups = [[entry] for entry in entries if not entry[0].shares_host]
    if host_group:
        groups.insert(0, host_group)

    def run_group(group):
        return [row for device, notes in group for row in _run_device(device, jobs, retries, notes, say)]

    results: list[BenchResult] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(groups)) as pool:
        for rows in pool.map(run_group, groups):
            results.extend(rows)
    return results


def bench(artifacts: Sequence[Union[str, os.PathLike]],
          devices: Sequence[Union[str, Device, DeviceConfig]],
          data: Union[str, os.PathLike, None] = None,
          settings: Optional[BenchSettings] = None, *,
          benchmark_binary: Union[str, os.PathLike, None] = None,
          log: Optional[Callable[[str], None]] = None) -> list[BenchResult]:
    """Measure every artifact on every device at every thread count.

    Args:
        artifacts: ``.tflite`` / ``.onnx`` files; same-named files from different folders
            are told apart by their folders in the rows.
        devices: device specs ("local", "qemu-aarch64", "ssh://pi@host", "adb:SERIAL"),
            :class:`DeviceConfig` entries of a devices file, or :class:`Device` objects.
        data: evaluation data shipped to the device for accuracy (``fashion-mnist``,
            an ``.npz``, an image folder), or None for latency and memory only.
        settings: threads, timing, samples, XNNPACK, reference, retries, timeout, profile
            (:class:`~edgeqd.settings.BenchSettings`; its defaults when None).
        benchmark_binary: TFLite's native ``benchmark_model`` for adb devices (Android has
            no Python); None runs the Python runner there (Termux).
        log: callable receiving progress lines (None = quiet).

    Returns:
        One :class:`BenchResult` per (artifact, device, threads), in that order; failures
        are rows with ``status`` failed and a ``reason``.

    >>> rows = bench(["model_int8.tflite"], ["local"], data="fashion-mnist")  # doctest: +SKIP
    >>> rows[0].p50_ms, rows[0].accuracy  # doctest: +SKIP
    (0.41, 0.894)
    """
    from edgeqd.atomic import scratch_dir

    settings = settings or BenchSettings()
    say = log or (lambda line: None)
    paths = _check_artifacts(artifacts)
    labels = artifact_labels(paths)
    entries = _device_entries(devices, benchmark_binary, say)
    reference = None if settings.reference in (None, "none") else settings.reference
    with scratch_dir("edgeqd-bench") as folder:
        data_path = prepare_data(data, settings.samples, _pick_reference(reference, paths), folder, artifacts=paths)
        jobs = [Job(artifact=path.resolve(), data=data_path, threads=count, runs=settings.runs,
                    warmup=settings.warmup, min_seconds=settings.min_seconds, max_seconds=settings.max_seconds,
                    xnnpack=settings.xnnpack, timeout=settings.timeout, profile=settings.profile, label=label)
                for path, label in zip(paths, labels) for count in dict.fromkeys(settings.threads)]
        results = _run_everywhere(entries, jobs, settings.retries, say)
    order_artifact = {label: i for i, label in enumerate(labels)}
    order_device = {device.name: i for i, (device, _) in enumerate(entries)}
    results.sort(key=lambda r: (order_artifact[r.artifact], order_device[r.device], r.threads))
    return results


def all_failed(rows: Sequence[BenchResult]) -> bool:
    """Whether every row failed (``edgeqd bench`` then exits with code 5).

    Args:
        rows: the rows of a bench run.

    >>> all_failed([])
    False
    """
    return bool(rows) and all(not row.ok for row in rows)


__all__ = ["bench", "load_devices_file", "DeviceConfig", "prepare_data", "all_failed",
           "DeviceError", "DeviceRunError"]
