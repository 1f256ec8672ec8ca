"""``tflm``: TensorFlow Lite Micro's own interpreter and reference kernels, run on the host.

What a microcontroller developer asks first — does TFLM run the model, with which ops, and how
big must the tensor arena be — answered without a board. The runner runs the ``.tflite`` with
``--runtime tflm`` (``runner_tflm.py`` shipped beside it; ``pip install tflite-micro``), so the
row has the same accuracy and agreement as every other device, plus a ``micro`` section:

- ``arena_bytes``: the smallest tensor arena in which TFLM allocates and invokes the model. The
  search starts from ``print_allocations()``'s total (the ``RecordingMicroAllocator``'s "Arena
  allocation total N bytes", written to file descriptor 2; ``arena_reported_bytes``): fresh
  interpreters with that many bytes and one byte less, then a binary search, each try in a forked
  child because TFLM crashes instead of failing at some sizes (measured: the total is exact on some
  models, 8 bytes over, 24 bytes or 20 % short on others). ``arena_below_fails``
  is TFLM's error one byte below. The host build has 64-bit pointers: a 32-bit MCU's persistent
  structures are smaller, so the figure is an upper bound there (an inference, not measured);
- ``flash_bytes``: the model's size, which ``model_data.cc`` puts in flash;
- ``ops``: per op type its ``MicroMutableOpResolver`` method, kernel (CMSIS-NN or reference only)
  and a note for each op TFLM lacks, from :func:`~edgeqd.artifact_info.tflm.tflm_compatibility`.

Latency is TFLM's portable reference kernels on the host CPU: "host reference kernels (not an
MCU figure)". The row is marked ``emulated`` so that it is never compared with a device's.
A model with an op TFLM lacks fails at ``MicroInterpreter::AllocateTensors()``; the row fails
naming the op. A file whose buffers are stored after the flatbuffer (``Buffer.offset``, which
TFLM ignores) runs inlined, as ``model_data.cc`` would have to embed it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgeqd.devices.base import RUNNER, DeviceRunError, Job, Session
from edgeqd.devices.local import LocalDevice
from edgeqd.devices.registry import register_device

__all__ = ["TFLM_LATENCY_NOTE", "TFLMDevice", "micro_figures"]

RUNNER_TFLM = Path(__file__).with_name("runner_tflm.py")
TFLM_LATENCY_NOTE = "host reference kernels (not an MCU figure)"


def micro_figures(micro: dict, artifact: Path) -> dict:
    """The ``micro`` section of a tflm row: the runner's arena figures, flash bytes and TFLM's ops.

    Args:
        micro: the runner's ``micro`` document (arena figures).
        artifact: the ``.tflite`` that ran.
    """
    from edgeqd.artifact_info.tflm import tflm_compatibility

    compatibility = tflm_compatibility(artifact.read_bytes())
    return {key: micro.get(key) for key in ("runtime", "arena_bytes", "arena_reported_bytes", "arena_head_bytes",
                                            "arena_tail_bytes", "arena_checked", "arena_below_fails",
                                            "arena_source", "allocations")} | {
        "flash_bytes": artifact.stat().st_size, "ops": compatibility["ops"],
        "resolver_calls": compatibility["resolver_calls"], "int4_unpack_bytes": compatibility["int4_unpack_bytes"],
        "tflm_commit": compatibility["tflm_commit"], "latency_note": TFLM_LATENCY_NOTE}


@register_device("tflm")
class TFLMDevice(LocalDevice):
    """TensorFlow Lite Micro's interpreter on the host: the arena, the ops and accuracy; latency not an MCU's.

    >>> TFLMDevice("tflm").emulated, TFLMDevice("tflm").latency_note
    (True, 'host reference kernels (not an MCU figure)')
    """

    # Not an emulator, but its latency is no device's either: marked so that it is never compared.
    emulated = True
    latency_note = TFLM_LATENCY_NOTE
    single_threaded = True  # TFLM's interpreter has no threads: --threads 1,2 would measure the same run twice
    description = "TensorFlow Lite Micro's interpreter on the host (arena, flash, ops; latency not an MCU figure)"

    def run_job(self, session: Session, job: Job) -> dict:
        """Run the runner with ``--runtime tflm`` and add the flash bytes and TFLM's op table to ``micro``.

        Args:
            session: an open local session.
            job: what to run (a ``.tflite``; TFLM runs nothing else).
        """
        if job.artifact.suffix.lower() != ".tflite":
            raise DeviceRunError(f"{self.name}: TensorFlow Lite Micro runs .tflite files only, not {job.artifact.name}")
        from edgeqd.artifact_info.tflm import inline_buffers, offset_buffers

        data = job.artifact.read_bytes()
        outside = offset_buffers(data)
        if outside:  # TFLM ignores Buffer.offset (it would run with empty weights): run, and count, the inlined file
            inlined = Path(session.workdir) / "inlined" / job.artifact.name  # the session ships it beside the runner
            inlined.parent.mkdir(exist_ok=True)
            inlined.write_bytes(inline_buffers(data))
            job = dataclasses.replace(job, artifact=inlined, label=job.name)
        session.ship(RUNNER)
        session.ship(RUNNER_TFLM)  # beside runner.py, which loads it for --runtime tflm
        document = super().run_job(session, job)
        document["micro"] = micro_figures(document.get("micro") or {}, job.artifact)
        document["micro"]["inlined_offset_buffers"] = outside  # flash_bytes is then the inlined file's
        return document

    def runner_args(self) -> list[str]:
        """The runner's extra arguments on this device."""
        return ["--runtime", "tflm"]
