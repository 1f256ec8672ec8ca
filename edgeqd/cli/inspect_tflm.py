"""``edgeqd inspect --target tflm``: can TensorFlow Lite Micro run this ``.tflite``, op by op.

Static, from the flatbuffer and TFLM's vendored op table
(:func:`edgeqd.artifact_info.tflm.tflm_compatibility`): per op type its
``MicroMutableOpResolver`` method, the kernel a Cortex-M build gets (CMSIS-NN or reference
only), and why TFLM cannot run it where it cannot. ``edgeqd bench --device tflm`` runs the
model in TFLM itself and measures the arena.

>>> tflm_target_info(b"not a tflite", "model.onnx")  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
edgeqd.errors.UsageError: --target tflm takes a .tflite file (TensorFlow Lite Micro runs nothing else), not model.onnx
"""

from __future__ import annotations

from typing import Any

from edgeqd.errors import UsageError

__all__ = ["tflm_target_info", "tflm_target_tables"]

_STATUS_STYLE = {"ok": "green", "missing": "red", "board-only": "yellow", "unsupported": "red"}


def tflm_target_info(data: bytes, name: str) -> dict[str, Any]:
    """TFLM compatibility of a ``.tflite`` given as bytes.

    Args:
        data: the file's bytes.
        name: its name (for the error of a non-``.tflite`` file).
    """
    if not name.lower().endswith(".tflite"):
        raise UsageError(f"--target tflm takes a .tflite file (TensorFlow Lite Micro runs nothing else), not {name}")
    from edgeqd.artifact_info.tflm import tflm_compatibility

    return tflm_compatibility(data)


def tflm_target_tables(compatibility: dict[str, Any]) -> list:
    """Rich renderables: one row per op type (method, kernel, status, note) and the verdict.

    Args:
        compatibility: :func:`tflm_target_info`'s answer.
    """
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"TensorFlow Lite Micro (op table of tflite-micro {compatibility['tflm_commit'][:7]}, "
                  f"{compatibility['tflm_date']})", title_justify="left")
    for column, justify in (("op", "left"), ("count", "right"), ("resolver method", "left"), ("kernel", "left"),
                            ("TFLM", "left"), ("note", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for row in compatibility["ops"]:
        note = "; ".join(row["problems"]) or row["note"]
        table.add_row(row["op"], str(row["count"]), row["method"] + "()" if row["method"] else "–",
                      row["kernel"] or "–", Text(row["status"], style=_STATUS_STYLE.get(row["status"], "")), note)
    if compatibility["runnable"]:
        verdict = Text(f"TFLM can run it: MicroMutableOpResolver<{len(compatibility['resolver_calls'])}> with "
                       + ", ".join(compatibility["resolver_calls"]), style="green")
    else:
        verdict = Text("TFLM cannot run it: " + " | ".join(compatibility["problems"]), style="red")
    extra = []
    if compatibility["offset_buffers"]:
        extra.append(Text(f"{compatibility['offset_buffers']} buffer(s) stored after the flatbuffer: TFLM ignores "
                          "them; embed the inlined bytes (edgeqd's bundle and tflm device do)", style="yellow"))
    if compatibility["int4_unpack_bytes"]:
        # A scratch buffer the memory planner overlaps with tensors not live at that op: fer's mini-Xception
        # (16,384-byte largest filter) measured +384 arena bytes over its int8 twin on --device tflm.
        extra.append(Text(f"int4 filters are unpacked to int8 in an arena scratch buffer: up to "
                          f"+ {compatibility['int4_unpack_bytes']:,} bytes of RAM (the largest filter; the planner "
                          "reuses memory, `edgeqd bench --device tflm` measures the arena)", style="yellow"))
    return [table, verdict, *extra]
