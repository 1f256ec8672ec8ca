"""Train a surviving candidate through the one orchestrator, :func:`edgeqd.pipeline.convert`.

Distillation (the candidate's family, width, depth and recipe) then, for an int8 candidate
whose layers TFMOT can quantize, QAT with the teacher in every step (the pipeline ships
QAT's or PTQ's int8 model, whichever agrees better with the float student); the artifact is
converted and verified in its real runtime. The output folder is a full ``convert`` output
(artifact, manifest, integration bundle), which becomes ``DIR/best/`` when chosen.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgeqd.errors import ConversionError
from edgeqd.optimize.settings import OptimizeSettings
from edgeqd.optimize.space import FILE_FAMILY, QAT_FAMILIES, Candidate
from edgeqd.types import Dataset, Status


def convert_settings(candidate: Candidate, settings: OptimizeSettings, train_samples: int,
                     student_file: Optional[str]):
    """The pipeline settings that train and convert ``candidate``.

    Args:
        candidate: the candidate.
        settings: the search settings.
        train_samples: training samples available (QAT keeps at most a quarter for validation).
        student_file: the user's student file, for ``family == "file"``.
    """
    from edgeqd.optimize.settings import MIXED_DEFAULT_DROP
    from edgeqd.settings import CalibrationSettings, ConvertSettings, DistillSettings, QATSettings, VerifySettings

    is_file = candidate.family == FILE_FAMILY
    distill = DistillSettings(student=student_file if is_file else candidate.family,
                              width=None if is_file else candidate.width,
                              depth=1.0 if is_file else candidate.depth,
                              recipe=candidate.recipe, epochs=settings.epochs)
    qat = None
    if settings.qat_epochs and candidate.precision == "int8" and candidate.family in QAT_FAMILIES:
        qat = QATSettings(epochs=settings.qat_epochs, validation_samples=max(1, min(1000, train_samples // 4)))
    if candidate.precision == "mixed":  # per-layer bits searched on the trained student, within the drop budget
        return ConvertSettings(formats=(candidate.format,), seed=settings.seed, distill=distill,
                               calibration=CalibrationSettings(precision="auto"),
                               verify=VerifySettings(max_drop=settings.max_drop or MIXED_DEFAULT_DROP))
    return ConvertSettings(formats=(candidate.format,), seed=settings.seed, distill=distill, qat=qat)


def train_candidate(candidate: Candidate, settings: OptimizeSettings, teacher, selection: Dataset, out: Path,
                    student_file: Optional[str], unsafe_deserialization: bool,
                    progress: Optional[Callable[[str, int, int], None]] = None) -> dict[str, Any]:
    """Distil, [QAT,] convert and verify one candidate into ``out``; its figures.

    Args:
        candidate: the candidate.
        settings: the search settings.
        teacher: the ``tf_keras`` teacher.
        selection: the data (its held-out split is the one the search selects on).
        out: the candidate's output folder (a full ``convert`` output).
        student_file: the user's student file, for ``family == "file"``.
        unsafe_deserialization: allow layers that carry code.
        progress: ``progress(step, done, total)`` of the pipeline.

    Returns:
        ``accuracy`` (of the verified artifact on the selection split), ``size_bytes``,
        ``quantization`` (``qat``, ``ptq`` or ``ptq (QAT fell back)``), ``params`` and
        ``student_accuracy`` (the float student's).

    Raises:
        ConversionError: the artifact failed to convert or verify (exit 4), with its reason.
    """
    from edgeqd.pipeline import convert

    pipeline = convert_settings(candidate, settings, len(selection.x_train), student_file)
    result = convert(None, selection, out, pipeline, teacher=teacher, force=True,
                     unsafe_deserialization=unsafe_deserialization, progress=progress)
    row = result.artifacts[0]
    if row.status != Status.OK or row.evaluation is None or row.evaluation.accuracy is None:
        raise ConversionError(f"{candidate.label}: {row.format} failed: {row.reason or 'no accuracy'}")
    manifest = result.manifest
    return {"accuracy": float(row.evaluation.accuracy), "size_bytes": int(row.bytes),
            "file": row.file, "quantization": manifest["calibration"]["mode"],
            "params": int(manifest["input_model"].get("params") or 0) or None,
            "student_accuracy": manifest["keras"]["accuracy"]}


def split_held_out(dataset: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Two copies of ``dataset`` whose held-out splits are disjoint: one to select on, one to report on.

    The search compares candidates on the first; the chosen one's drop is reported on the
    second, which no choice ever depended on.

    Args:
        dataset: the loaded data.
        test_fraction: share of the held-out samples kept for the report.
        seed: seed of the shuffle.

    >>> d = Dataset("d", np.zeros((4, 2), "f4"), np.zeros(4, int), np.zeros((10, 2), "f4"), np.arange(10) % 2)
    >>> [len(s.x_eval) for s in split_held_out(d, 0.3, 0)]
    [7, 3]
    """
    order = np.random.default_rng(seed).permutation(len(dataset.x_eval))
    n_test = int(round(len(order) * test_fraction))
    if n_test < 1 or n_test >= len(order):
        from edgeqd.errors import DataError

        raise DataError(f"{dataset.name}: {len(order)} held-out samples cannot be split {1 - test_fraction:.0%} / "
                        f"{test_fraction:.0%} into a selection and a test part; give more held-out data")
    pick, test = np.sort(order[:len(order) - n_test]), np.sort(order[len(order) - n_test:])

    def part(index: np.ndarray) -> Dataset:
        return dataclasses.replace(dataset, x_eval=dataset.x_eval[index], y_eval=dataset.y_eval[index])

    return part(pick), part(test)


def subset_train(dataset: Dataset, samples: Optional[int], seed: int) -> Dataset:
    """``dataset`` with at most ``samples`` (seeded) training samples.

    Args:
        dataset: the data.
        samples: how many to keep (None = all).
        seed: seed of the draw.
    """
    if samples is None or samples >= len(dataset.x_train):
        return dataset
    index = np.sort(np.random.default_rng(seed).permutation(len(dataset.x_train))[:samples])
    return dataclasses.replace(dataset, x_train=dataset.x_train[index], y_train=dataset.y_train[index])


def artifact_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of an artifact in its real runtime (LiteRT / ONNX Runtime).

    Args:
        path: the artifact.
        x: inputs.
        y: integer labels.
    """
    from edgeqd.verify import predict

    return float((predict(path, x).argmax(-1) == y).mean())
