"""``edgeqd convert``: a Keras model becomes verified TFLite and ONNX artifacts.

Every artifact is loaded back in its real runtime and evaluated on the held-out
split against the labels and the float Keras model. A converter that fails becomes
a row with its reason, not a crash. Outputs are written into a temporary folder
that is renamed into place at the end.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgeqd import __version__, interrupts
from edgeqd.errors import ConversionError, DataError, EdgeqdError, UsageError
from edgeqd.types import ArtifactResult, Dataset, Evaluation, QuantMode, Status

MANIFEST = "manifest.json"
LIBRARIES = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "onnx", "onnxruntime",
             "tf2onnx", "ai-edge-litert", "numpy")

ProgressCallback = Callable[[str, int, int], None]


@dataclass
class ConvertResult:
    """What ``convert`` produced.

    Attributes:
        out: the output folder.
        manifest: the content of ``manifest.json``.
        artifacts: one row per requested format.
        problems: failed artifacts and ``max_drop`` violations, one sentence each.
    """

    out: Path
    manifest: dict[str, Any]
    artifacts: list[ArtifactResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def raise_for_problems(self) -> None:
        """Raise :class:`ConversionError` (exit 4) when any problem was recorded."""
        if self.problems:
            raise ConversionError("; ".join(self.problems) + f" (outputs kept in {self.out})")


def library_versions() -> dict[str, Optional[str]]:
    """Installed versions of the libraries that shape an artifact."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def resolve_formats(formats: Sequence[str]) -> list[str]:
    """Validate format names against the registry, keeping order and dropping repeats.

    Args:
        formats: names such as "tflite-int8".

    >>> resolve_formats(["tflite-int8", "tflite-int8"])
    ['tflite-int8']
    """
    from edgeqd.converters import CONVERTERS

    unknown = [f for f in formats if f not in CONVERTERS]
    if unknown:
        raise UsageError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(sorted(CONVERTERS))}")
    if not formats:
        raise UsageError(f"no formats given; choose from {', '.join(sorted(CONVERTERS))}")
    return list(dict.fromkeys(formats))


def calibration_subset(dataset: Dataset, samples: int, seed: int = 0) -> np.ndarray:
    """``samples`` training inputs, drawn with a fixed seed, for PTQ calibration.

    Args:
        dataset: the data.
        samples: how many to draw.
        seed: seed of the draw.
    """
    available = len(dataset.x_train)
    if samples <= 0:
        raise UsageError(f"--calibration-samples must be positive, got {samples}")
    if samples > available:
        raise DataError(f"asked for {samples} calibration samples but {dataset.name} has only "
                        f"{available} training samples; lower --calibration-samples")
    order = np.random.default_rng(seed).permutation(available)[:samples]
    return dataset.x_train[np.sort(order)]


def load_for_model(model, data: str | Dataset, seed: int = 0) -> Dataset:
    """Load ``--data`` and check that it fits ``model`` (input shape, label range).

    Args:
        model: the Keras model.
        data: a dataset spec for :func:`edgeqd.data.load_dataset`, or a loaded Dataset.
        seed: seed of the held-out split when the data has none.
    """
    from edgeqd.data import check_fits_model, load_dataset, validate_dataset, with_class_names
    from edgeqd.models import model_signature

    input_shape, num_classes = model_signature(model)
    if isinstance(data, Dataset):
        validate_dataset(data)
        dataset = data
    else:
        image_size = tuple(input_shape[:2]) if len(input_shape) == 3 and None not in input_shape[:2] else None
        channels = int(input_shape[-1]) if len(input_shape) == 3 and input_shape[-1] in (1, 3, 4) else 3
        dataset = load_dataset(data, image_size=image_size, channels=channels, seed=seed)
    check_fits_model(dataset, input_shape, num_classes)
    return with_class_names(dataset, num_classes)  # labels.txt needs a name per output


def artifact_metadata(model, dataset: Dataset) -> dict[str, Any]:
    """What an app needs to know to feed the artifact and read its output.

    Args:
        model: the Keras model being converted.
        dataset: its data (labels and input normalization come from here).
    """
    return {"producer": f"edgeqd {__version__}", "task": "image_classification"
            if len(dataset.input_shape) == 3 else "classification",
            "model_name": model.name, "labels": list(dataset.class_names),
            "input_normalization": dataset.normalization, "output": "logits"}


def verify_artifact(path: Path, runtime: str, x_eval: np.ndarray, reference: np.ndarray,
                    labels: Optional[np.ndarray]) -> tuple[Evaluation, tuple, tuple]:
    """Load an artifact in its runtime, describe its I/O and evaluate it.

    Args:
        path: the artifact.
        runtime: "tflite" or "onnx".
        x_eval: float held-out inputs.
        reference: the float Keras model's outputs on ``x_eval``.
        labels: held-out labels or None.
    """
    from edgeqd.runtimes import IO_READERS, PREDICTORS, evaluate_outputs

    inputs, outputs = IO_READERS[runtime](path)
    predictions = PREDICTORS[runtime](path, x_eval)
    if predictions.shape != reference.shape:
        raise ConversionError(f"{path.name} outputs shape {predictions.shape[1:]} but the Keras model "
                              f"{reference.shape[1:]}")
    return evaluate_outputs(predictions, reference, labels), tuple(inputs), tuple(outputs)


def _build_one(name: str, context, out_dir: Path, x_eval, reference, labels,
               keras_accuracy: Optional[float]) -> ArtifactResult:
    """Convert one format and verify it; a failure becomes a failed row."""
    from edgeqd.bundle import embed_metadata
    from edgeqd.converters import CONVERTERS
    from edgeqd.models import file_sha256
    from edgeqd.atomic import no_room

    converter = CONVERTERS[name]
    started = time.perf_counter()
    target = out_dir / converter.filename
    try:
        details = converter.fn(context, target) or {}
        embed_metadata(target, converter.runtime, context.metadata)
        evaluation, inputs, outputs = verify_artifact(target, converter.runtime, x_eval, reference, labels)
    except EdgeqdError as exc:
        target.unlink(missing_ok=True)
        if interrupts.received() is not None:
            raise
        return ArtifactResult(name, "", converter.runtime, Status.FAILED, reason=str(exc),
                              seconds=time.perf_counter() - started)
    except Exception as exc:  # a converter bug or a library edge case: still a row, not a crash
        target.unlink(missing_ok=True)
        # An interrupt that native code turned into another error (an import's "initialization
        # failed") is the interrupt, and a full disk fails every later artifact too: not rows.
        if interrupts.received() is not None or no_room(exc) is not None:
            raise
        reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
        return ArtifactResult(name, "", converter.runtime, Status.FAILED, reason=reason,
                              seconds=time.perf_counter() - started)
    drop = None
    if keras_accuracy is not None and evaluation.accuracy is not None:
        drop = round(100.0 * (keras_accuracy - evaluation.accuracy), 3)
    return ArtifactResult(
        name, converter.filename, converter.runtime, Status.OK,
        dtype=converter.precision, bytes=target.stat().st_size,
        sha256=file_sha256(target), inputs=inputs, outputs=outputs, evaluation=evaluation,
        accuracy_drop_pts=drop, seconds=time.perf_counter() - started, details=details)


def convert(model: str | Path | Any, data: str | Dataset, out: str | Path,
            formats: Sequence[str] = (), calibration_samples: int = 200,
            max_drop: Optional[float] = None, force: bool = False,
            unsafe_deserialization: bool = False, eval_samples: Optional[int] = None,
            per_channel: bool = True, calibration_method: str = "minmax",
            mode: QuantMode = QuantMode.PTQ, seed: int = 0, extra_manifest: Optional[dict] = None,
            distill_from: str | Path | Any | None = None, student: str | Path = "cnn",
            distill_epochs: int = 20, progress: Optional[ProgressCallback] = None) -> ConvertResult:
    """Convert a Keras model to verified TFLite/ONNX artifacts and write ``manifest.json``.

    Args:
        model: a ``.keras``/``.h5``/SavedModel path, or a loaded ``tf_keras`` model.
        data: ``fashion-mnist``, an ``.npz``, an image folder, or a loaded Dataset.
        out: the output folder (created atomically).
        formats: registered converter names; empty means the four defaults.
        calibration_samples: training samples used to calibrate int8 ranges.
        max_drop: largest allowed accuracy loss, in points, of an int8 artifact
            against the float model; a larger loss is recorded as a problem.
        force: replace an existing ``out``.
        unsafe_deserialization: allow Lambda layers in the model file.
        eval_samples: evaluate on the first N held-out samples only (None = all).
        per_channel: per-channel (True) or per-tensor weight scales.
        calibration_method: "minmax", "percentile" or "entropy" for ONNX calibration.
        mode: PTQ (calibrate) or QAT (the model is quantization-aware; ship its ranges).
        seed: seed of the calibration draw and of any held-out split.
        extra_manifest: more top-level manifest fields (e.g. QAT or distillation settings).
        distill_from: a teacher to distil a student from first (distill → convert in one
            call); ``model`` must then be None. The student is saved in ``out`` as
            ``student.keras`` with its ``student.distill.json``.
        student: the student for ``distill_from``: a built-in family or a model path.
        distill_epochs: most distillation epochs (early stopping may end sooner).
        progress: called as ``progress(step, done, total)`` while working.

    Returns:
        A :class:`ConvertResult`; call ``raise_for_problems()`` to turn failures into exit 4.

    >>> convert("teacher.keras", "fashion-mnist", "out/")  # doctest: +SKIP
    """
    from edgeqd.converters import DEFAULT_FORMATS
    from edgeqd.atomic import check_output_safe, check_writable, scratch_dir

    names = resolve_formats(list(formats) or list(DEFAULT_FORMATS))
    out = Path(out)
    check_output_safe(out, [model, data, distill_from, student])
    check_writable(out, force)
    if max_drop is not None and not (np.isfinite(max_drop) and max_drop >= 0):  # NaN would turn the gate off
        raise UsageError(f"--max-drop must be a finite number >= 0 points, got {max_drop}")
    if eval_samples is not None and eval_samples <= 0:
        raise UsageError(f"--eval-samples must be positive, got {eval_samples}")
    if distill_from is not None and distill_epochs <= 0:  # checked here so the error names this option
        raise UsageError(f"--distill-epochs must be positive, got {distill_epochs}")
    report = progress or (lambda step, done, total: None)

    # $TMPDIR/edgeqd-work-PID-XXXX: removed however the run ends; a killed run's is removed by the next.
    with scratch_dir("edgeqd-work") as scratch:
        return _convert(model, data, out, names, calibration_samples, max_drop, force, unsafe_deserialization,
                        eval_samples, per_channel, calibration_method, mode, seed, dict(extra_manifest or {}),
                        distill_from, student, distill_epochs, report, scratch)


def _convert(model, data, out, names, calibration_samples, max_drop, force, unsafe_deserialization,
             eval_samples, per_channel, calibration_method, mode, seed, extra_manifest, distill_from,
             student, distill_epochs, report, scratch: Path) -> ConvertResult:
    """The body of :func:`convert` once its arguments are checked; ``scratch`` is removed by the caller."""
    from edgeqd.bundle import write_bundle
    from edgeqd.converters import ConversionContext
    from edgeqd.models import describe_model, file_sha256, load_model
    from edgeqd.atomic import atomic_dir

    total = len(names) + 2
    student_files: list[Path] = []
    if distill_from is not None:
        if model is not None:
            raise UsageError("give either MODEL or --distill-from TEACHER (with --student), not both")
        from edgeqd.distillation import distill_for_convert

        report(f"distilling a {student} student (up to {distill_epochs} epochs)", 0, total)
        distilled = distill_for_convert(distill_from, data, student, scratch / "student.keras",
                                        epochs=distill_epochs, seed=seed,
                                        unsafe_deserialization=unsafe_deserialization, progress=False)
        model = distilled.student
        student_files = [Path(p) for p in (distilled.student_path, distilled.report_path) if p]
        # The student is copied into the output folder: point the manifest at those copies.
        extra_manifest["distillation"] = {**distilled.to_dict(), "student_path": student_files[0].name,
                                          "report_path": student_files[1].name if len(student_files) > 1 else None}
    elif model is None:
        raise UsageError("give MODEL, or --distill-from TEACHER to distil a student first")

    report("loading model and data", 0, total)
    model_path = None
    if isinstance(model, (str, Path)):
        model_path = Path(model)
        model = load_model(model_path, unsafe_deserialization=unsafe_deserialization)
    dataset = load_for_model(model, data, seed=seed)
    calibration = calibration_subset(dataset, calibration_samples, seed)
    x_eval = dataset.x_eval[:eval_samples]
    labels = None if dataset.y_eval is None else dataset.y_eval[:eval_samples]

    report("evaluating the Keras model", 1, total)
    reference = model.predict(x_eval, batch_size=256, verbose=0).astype(np.float32)
    keras_accuracy = None if labels is None else float((reference.argmax(1) == labels).mean())

    results: list[ArtifactResult] = []
    with atomic_dir(out, force=force) as tmp:
        for file in student_files:
            shutil.copy2(file, tmp / file.name)
        context = ConversionContext(model=model, calibration=calibration, workdir=scratch, mode=mode,
                                    per_channel=per_channel, calibration_method=calibration_method,
                                    metadata=artifact_metadata(model, dataset))
        for done, name in enumerate(names, start=2):
            interrupts.check()  # a stage boundary: an interrupt a converter swallowed ends the run here
            report(f"converting {name}", done, total)
            results.append(_build_one(name, context, tmp, x_eval, reference, labels, keras_accuracy))

        problems = [f"{r.format} failed: {r.reason}" for r in results if r.status == Status.FAILED]
        from edgeqd.converters import CONVERTERS

        for r in results:
            if (max_drop is not None and r.status == Status.OK and CONVERTERS[r.format].quantized
                    and r.accuracy_drop_pts is not None and r.accuracy_drop_pts > max_drop):
                problems.append(f"{r.file} top-1 {r.evaluation.accuracy:.4f} vs float {keras_accuracy:.4f}: "
                                f"drop {r.accuracy_drop_pts:.2f} pts > --max-drop {max_drop}")
        manifest = {
            "edgeqd_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "libraries": library_versions(),
            "input_model": {"path": str(model_path) if model_path else None,
                            "sha256": file_sha256(model_path) if model_path else None,
                            **describe_model(model)},
            "data": {"name": dataset.name, "train_samples": int(len(dataset.x_train)),
                     "eval_samples": int(len(x_eval)), "labelled": labels is not None,
                     "input_shape": list(dataset.input_shape), "class_names": list(dataset.class_names),
                     "normalization": dataset.normalization, "seed": seed},
            "calibration": {"samples": int(len(calibration)), "seed": seed, "source": "training split",
                            "mode": mode.value, "per_channel": per_channel,
                            "onnx_method": calibration_method},
            "keras": {"accuracy": keras_accuracy, "samples": int(len(x_eval))},
            "artifacts": [r.to_dict() for r in results],
            "max_drop": max_drop,
            "problems": problems,
            **extra_manifest,
        }
        manifest["bundle"] = write_bundle(tmp, manifest)
        from edgeqd.strict_json import dumps

        (tmp / MANIFEST).write_text(dumps(manifest, MANIFEST, indent=2) + "\n")
    report("done", total, total)
    return ConvertResult(out=out, manifest=manifest, artifacts=results, problems=problems)
