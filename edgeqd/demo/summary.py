"""The demo's summary: teacher vs student, every figure read back from the files the run wrote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgeqd.errors import DataError


@dataclass(frozen=True)
class Figures:
    """One model of the story, every figure read from the run's documents.

    Attributes:
        label: "teacher fp32" or "student int8".
        params: the Keras model's parameter count (manifest ``input_model.params``).
        bytes: the artifact's size (its manifest row).
        accuracy: the artifact's top-1 accuracy on the held-out images (its manifest row).
        eval_samples: how many held-out images that accuracy is on.
        p50_ms: its median latency in the bench run (None when its row failed).
        onnx_p50_ms: the same model's ONNX artifact's median latency (None without one).
    """

    label: str
    params: int
    bytes: int
    accuracy: float
    eval_samples: int
    p50_ms: Optional[float]
    onnx_p50_ms: Optional[float] = None


def artifact_row(manifest: dict, name: str, folder: Path) -> dict:
    for row in manifest["artifacts"]:
        if row["format"] == name and row["status"] == "ok":
            return row
    raise DataError(f"{folder}: no verified {name} artifact in its manifest; see {folder / 'manifest.json'}")


def _p50(rows: Sequence[dict], label: str) -> Optional[float]:
    """The p50 of the bench row labelled ``label`` (the fewest threads), None when absent or failed."""
    found = sorted((r for r in rows if r["artifact"] == label and r["status"] == "ok" and r.get("kind") != "tflm"),
                   key=lambda r: r["threads"])
    return found[0]["p50_ms"] if found else None


def read_figures(label: str, folder: Path, name: str, bench_rows: Sequence[dict], bench_labels: dict[str, str],
                 onnx_name: Optional[str] = None) -> Figures:
    """A model's figures from its run folder's ``manifest.json`` and the bench rows.

    Args:
        label: how the summary names it.
        folder: the convert run's output folder.
        name: the format whose size, accuracy and latency are shown ("tflite-int8").
        bench_rows: the bench document's rows.
        bench_labels: artifact path (as a string) → its row label in the bench document.
        onnx_name: the format of its ONNX twin, whose latency is shown too.

    >>> read_figures("student int8", Path("demo_out"), "tflite-int8", [], {})  # doctest: +SKIP
    """
    from edgeqd.documents import MANIFEST_FILE, read_document

    _, manifest = read_document(folder / MANIFEST_FILE)
    row = artifact_row(manifest, name, folder)
    onnx = None
    if onnx_name is not None and any(r["format"] == onnx_name and r["status"] == "ok" for r in manifest["artifacts"]):
        onnx = _p50(bench_rows, bench_labels.get(str(folder / artifact_row(manifest, onnx_name, folder)["file"]), ""))
    return Figures(label, int(manifest["input_model"]["params"]), int(row["bytes"]),
                   float(row["evaluation"]["accuracy"]), int(row["evaluation"]["samples"]),
                   _p50(bench_rows, bench_labels.get(str(folder / row["file"]), "")), onnx)


def _size(size: int) -> str:
    """A file size for people: MiB from 1 MiB up, else KiB."""
    return f"{size / 2 ** 20:.2f} MiB" if size >= 2 ** 20 else f"{size / 1024:.1f} KiB"


def _ms(value: Optional[float]) -> str:
    """A latency with three significant digits (– when missing)."""
    if value is None:
        return "–"
    return f"{value:.{max(0, 2 - int(np.floor(np.log10(value)))) if value > 0 else 3}f} ms"


def _times(ratio: Optional[float]) -> str:
    """A ratio as "16×" from ten up, "4.1×" below (– when missing)."""
    return "–" if ratio is None else f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.1f}×"


def summary_lines(teacher: Figures, student: Figures) -> list[str]:
    """The story in four lines: a table of the two models and what the student gained.

    Args:
        teacher: the teacher's figures.
        student: the student's figures.

    >>> t = Figures("teacher fp32", 871210, 3486090, 0.9083, 10000, 0.2, 0.35)
    >>> s = Figures("student int8", 54610, 81634, 0.8991, 10000, 0.05, 0.1)
    >>> print("\\n".join(summary_lines(t, s)))  # doctest: +NORMALIZE_WHITESPACE
                  parameters       size  accuracy  p50 LiteRT  p50 ONNX RT
    teacher fp32     871,210   3.32 MiB   90.83 %    0.200 ms     0.350 ms
    student int8      54,610   79.7 KiB   89.91 %   0.0500 ms     0.100 ms
    student: 16× fewer parameters, 43× smaller, −0.92 pts accuracy, 4.0× faster (p50 LiteRT, this host)
    """
    lines = [f"{'':12}  {'parameters':>10}  {'size':>9}  {'accuracy':>8}  {'p50 LiteRT':>10}  {'p50 ONNX RT':>11}"]
    for m in (teacher, student):
        lines.append(f"{m.label:12}  {m.params:>10,}  {_size(m.bytes):>9}  {100 * m.accuracy:>6.2f} %  "
                     f"{_ms(m.p50_ms):>10}  {_ms(m.onnx_p50_ms):>11}")
    speed = teacher.p50_ms / student.p50_ms if teacher.p50_ms and student.p50_ms else None
    delta = f"{100 * (student.accuracy - teacher.accuracy):+.2f}".replace("-", "−")  # a real minus sign
    lines.append(f"student: {_times(teacher.params / student.params)} fewer parameters, "
                 f"{_times(teacher.bytes / student.bytes)} smaller, {delta} pts accuracy, "
                 + (f"{_times(speed)} faster (p50 LiteRT, this host)" if speed is not None
                    else "latency not measured (its bench row failed)"))
    return lines


def micro_line(rows: Sequence[dict], label: str) -> str:
    """The student in TensorFlow Lite Micro, from its ``tflm`` bench row: arena, flash, ops, accuracy.

    Args:
        rows: the bench document's rows.
        label: the student's int8 TFLite's row label.

    >>> print(micro_line([{"artifact": "m.tflite", "kind": "tflm", "status": "ok", "accuracy": 0.8991,
    ...     "samples": 500, "micro": {"arena_bytes": 75972, "flash_bytes": 86016, "resolver_calls": ["AddConv2D()"]}}],
    ...     "m.tflite"))
    TFLite Micro (host): tensor arena 75,972 B, flash 84.0 KiB, 1 op to register, 89.91 % on 500 images (latency: host reference kernels, not an MCU figure)
    """
    row = next((r for r in rows if r["artifact"] == label and r.get("kind") == "tflm"), None)
    if row is None or row["status"] != "ok":
        return "TFLite Micro: " + (row["reason"] if row else "not benched")
    micro = row["micro"]
    ops = len(micro["resolver_calls"])
    return (f"TFLite Micro (host): tensor arena {micro['arena_bytes']:,} B, flash {_size(micro['flash_bytes'])}, "
            f"{ops} op{'s' if ops != 1 else ''} to register, {100 * row['accuracy']:.2f} % on {row['samples']:,} images "
            "(latency: host reference kernels, not an MCU figure)")


def int8_origin(manifest: dict) -> str:
    """Where the student's int8 model came from, as its manifest says (QAT, or PTQ when QAT fell back).

    Args:
        manifest: the student run's manifest.

    >>> int8_origin({"int8_choice": {"shipped": "ptq", "reason": "PTQ agrees better"}})
    'student int8 from post-training quantization: QAT fell back (PTQ agrees better)'
    """
    choice = manifest.get("int8_choice") or {}
    if choice.get("shipped") == "ptq":
        return f"student int8 from post-training quantization: QAT fell back ({choice.get('reason', '')})"
    return ("student int8 from quantization-aware training with the teacher in the loop"
            + (f" ({choice['reason']})" if choice.get("reason") else ""))


def timing_lines(timings: dict[str, float]) -> list[str]:
    """The stage timings, one line each, and the total.

    Args:
        timings: stage → seconds (``  of which`` entries are parts of the stage before them).

    >>> print("\\n".join(timing_lines({"teacher (cached)": 0.0, "bench": 12.34})))
    teacher (cached)                          0.0 s
    bench                                    12.3 s
    total                                    12.3 s
    """
    total = sum(v for k, v in timings.items() if not k.startswith(" "))
    return [f"{name:38} {seconds:6.1f} s" for name, seconds in [*timings.items(), ("total", total)]]
