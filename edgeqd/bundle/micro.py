"""What the bundle tells a microcontroller developer, measured in TensorFlow Lite Micro itself.

:func:`micro_facts` checks the int8 ``.tflite`` against TFLM's vendored op table
(:func:`~edgeqd.artifact_info.tflm.tflm_compatibility`) and, when every op is there, loads it in
TFLM's own interpreter (``tflite-micro``, the runner with ``--runtime tflm`` in a child process)
and runs one inference: the arena is the smallest in which TFLM allocates and runs the model,
searched from ``print_allocations()``'s total (:mod:`edgeqd.devices.tflm`). ``model_data.h`` then carries
``kTensorArenaSize`` = that figure plus :data:`ARENA_MARGIN`, rounded up to 16 bytes, and
``INTEGRATION.md`` registers exactly the model's ops. A model TFLM cannot run gets the reason
instead of a snippet that would fail on the board.

Why a margin at all, when the host figure is exact: on a Cortex-M the CMSIS-NN kernels ask for
scratch buffers (im2col for convolutions, …) that TFLM's reference kernels on the host do not,
and another TFLM release may plan differently. The host build's 64-bit pointers make the
persistent part larger than on a 32-bit MCU, so that part errs on the safe side.

>>> arena_with_margin(31552)
39440
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["ARENA_ALIGNMENT", "ARENA_MARGIN", "arena_with_margin", "micro_facts"]

ARENA_MARGIN = 0.25  # +25 %: CMSIS-NN scratch buffers and TFLM version drift (see the module docstring)
ARENA_ALIGNMENT = 16  # MicroAllocator aligns its buffers to 16 bytes


def arena_with_margin(measured: int) -> int:
    """``kTensorArenaSize`` for an arena TFLM measured at ``measured`` bytes: +25 %, rounded up to 16.

    Args:
        measured: the arena TFLM allocated on the host.
    """
    return int(math.ceil(measured * (1 + ARENA_MARGIN) / ARENA_ALIGNMENT) * ARENA_ALIGNMENT)


def _measure(path: Path) -> dict[str, Any]:
    """Run the model once in TFLM through the runner, in a child process (a kernel that crashes on an odd
    model must not take the conversion with it), and return its arena report (``micro``)."""
    import sys

    from edgeqd.devices.base import RUNNER, parse_runner_output, run_process

    done = run_process([sys.executable, str(RUNNER), "--model", str(path), "--runtime", "tflm", "--runs", "1",
                        "--warmup", "1", "--min-seconds", "0", "--max-seconds", "30"], timeout=300)
    return parse_runner_output(done, "tflm").get("micro") or {}


def micro_facts(path: Path) -> dict[str, Any]:
    """Whether TFLM runs this ``.tflite``, its arena and the resolver calls it needs.

    Args:
        path: the int8 ``.tflite``.

    Returns:
        ``{"runnable", "problems", "resolver_calls", "ops", "flash_bytes", "arena_bytes"
        (measured, or None), "arena_size" (kTensorArenaSize, or None), "arena_margin",
        "tflm_commit"}``.

    >>> micro_facts(Path("model_int8.tflite"))["arena_size"]  # doctest: +SKIP
    39440
    """
    from edgeqd.artifact_info.tflm import tflm_compatibility

    path = Path(path)
    static = tflm_compatibility(path.read_bytes())
    facts = {"runnable": static["runnable"], "problems": list(static["problems"]),
             "resolver_calls": static["resolver_calls"], "ops": static["ops"], "flash_bytes": path.stat().st_size,
             "arena_bytes": None, "arena_size": None, "arena_margin": ARENA_MARGIN,
             "tflm_commit": static["tflm_commit"]}
    if static["offset_buffers"]:
        facts["runnable"] = False
        facts["problems"].append(f"{static['offset_buffers']} buffer(s) stored after the flatbuffer, which TFLM "
                                 "ignores (it would run with empty weights)")
    if not facts["runnable"]:
        return facts
    import importlib.util

    if importlib.util.find_spec("tflite_micro") is None:
        facts["arena_note"] = "not measured: tflite-micro is not installed (pip install tflite-micro)"
        return facts
    try:
        report = _measure(path)
    except Exception as exc:  # TFLM itself has the last word (RunnerError, or a kernel's refusal)
        facts["runnable"] = False
        facts["problems"].append(f"TensorFlow Lite Micro could not run it: {exc}")
        return facts
    if report.get("arena_bytes") and report.get("arena_checked"):
        facts["arena_bytes"] = report["arena_bytes"]
        facts["arena_size"] = arena_with_margin(report["arena_bytes"])
    return facts
