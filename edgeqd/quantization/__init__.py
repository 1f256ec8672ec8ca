"""Quantization: QAT from calibrated ranges, distilling from the float model or a teacher (TFMOT).

* :mod:`edgeqd.quantization.qat` — the QAT stage of the pipeline (:func:`train_qat`);
* :mod:`edgeqd.quantization.calibrate` — every fake-quant range calibrated before the
  first step, batch norms frozen (QAT starts where PTQ ends);
* :mod:`edgeqd.quantization.finetune` — distillation epochs, the best one kept on a
  validation split (epoch 0: calibrated, untrained), and the comparison rule;
* :mod:`edgeqd.quantization.prepare` — the model TFMOT will train: rewritten, annotated,
  and the list of layers left float;
* :mod:`edgeqd.quantization.rewrite` — equivalent rewrites of layer patterns TFMOT
  rejects, checked numerically; :mod:`edgeqd.quantization.lift` lifts a whole 1-D trunk
  to 2-D first;
* :mod:`edgeqd.quantization.graph` — the functional-graph helpers the rewrites use.

:func:`quantize` is a preset of :func:`edgeqd.pipeline.convert` with QAT on.
Post-training quantization needs no stage of its own: the converters calibrate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from edgeqd.quantization.qat import QATOutcome, train_qat
from edgeqd.settings import ConvertSettings, QATSettings
from edgeqd.types import Dataset

__all__ = ["quantize", "train_qat", "QATOutcome"]


def quantize(model: str | Path | Any, data: str | Path | Dataset, out: str | Path,
             settings: Optional[ConvertSettings] = None, *, teacher: str | Path | Any | None = None,
             force: bool = False, unsafe_deserialization: bool = False, progress=None):
    """Quantization-aware training (distilling from ``teacher`` in every step), then verified artifacts.

    The same run as :func:`edgeqd.pipeline.convert`, with ``settings.qat`` defaulting to
    :class:`QATSettings` (pass settings with ``qat=None`` for post-training quantization).

    Args:
        model: the float model (``.keras``/``.h5``/SavedModel path or ``tf_keras`` model).
        data: ``fashion-mnist``, an ``.npz``, an image folder, or a loaded Dataset.
        out: the output folder (created atomically).
        settings: the run's settings (default: QAT with :class:`QATSettings` defaults).
        teacher: a model to distil from in every QAT step, or None (the float model teaches itself).
        force: replace an existing ``out``.
        unsafe_deserialization: allow model files whose layers carry code.
        progress: called as ``progress(step, done, total)``.

    Returns:
        The :class:`edgeqd.pipeline.ConvertResult`.

    >>> quantize("student.keras", "fashion-mnist", "out/", teacher="teacher.keras")  # doctest: +SKIP
    """
    from edgeqd.pipeline import convert

    settings = settings if settings is not None else ConvertSettings(qat=QATSettings())
    return convert(model, data, out, settings, teacher=teacher, force=force,
                   unsafe_deserialization=unsafe_deserialization, progress=progress)
