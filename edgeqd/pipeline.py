"""The one orchestrator: [distil] → [QAT] → converters → verify → manifest → bundle.

:func:`convert` is the path every run takes — ``edgeqd convert``, ``edgeqd quantize``
(a preset: QAT on), ``convert --distill-from`` and ``make demo``. The stages:

1. **distil** (``settings.distill``): a student is distilled from ``teacher``
   (:mod:`edgeqd.distillation`) and becomes the model to quantize;
2. **load**: the model and the data it needs (:func:`edgeqd.data.load_for_model`);
3. **QAT** (``settings.qat``): quantization-aware fine-tuning from calibrated ranges,
   distilling from the float model or the teacher, in a child process
   (:mod:`edgeqd.qat_stage`, :mod:`edgeqd.quantization.qat`, :mod:`edgeqd.isolate`);
4. **convert**: every requested format (:mod:`edgeqd.converters`); float formats from
   the float model, quantized ones from the QAT model when QAT ran — unless PTQ's int8
   model agrees better with the float model on QAT's validation split, then PTQ's;
5. **verify**: every artifact runs in its real runtime on the held-out samples and is
   compared with the float model the stages started from (:mod:`edgeqd.verify`): a
   float artifact off that model is a failed row, an int8 one past the warning
   thresholds a warning;
6. **manifest** and **bundle**: ``manifest.json`` through :mod:`edgeqd.documents`, then
   labels, the C array and INTEGRATION.md (:mod:`edgeqd.bundle`).

A converter that fails becomes a row with its reason, not a crash. Everything is
written into a temporary folder renamed into place at the end.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgeqd import __version__, interrupts
from edgeqd.errors import ConversionError, EdgeqdError, ModelError, UsageError
from edgeqd.settings import ConvertSettings
from edgeqd.types import ArtifactResult, Dataset, Status

ProgressCallback = Callable[[str, int, int], None]


@dataclass
class ConvertResult:
    """What ``convert`` produced.

    Attributes:
        out: the output folder.
        manifest: the content of ``manifest.json``.
        artifacts: one row per requested format.
        problems: failed artifacts and ``max_drop`` violations, one sentence each.
        warnings: int8 artifacts past the default warning thresholds
            (:func:`edgeqd.verify.int8_warnings`), one sentence each; the run still succeeds.
    """

    out: Path
    manifest: dict[str, Any]
    artifacts: list[ArtifactResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def raise_for_problems(self) -> None:
        """Raise :class:`ConversionError` (exit 4) when any problem was recorded."""
        if self.problems:
            raise ConversionError("; ".join(self.problems) + f" (outputs kept in {self.out})")


# --precision auto adds these formats; their search uses at most this many training samples.
MIXED_FORMATS = ("tflite-mixed", "onnx-mixed")
MIXED_SEARCH_SAMPLES = 2000


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


def artifact_metadata(model, dataset: Dataset, semantics=None) -> dict[str, Any]:
    """What an app needs to know to feed the artifact and read its output.

    Args:
        model: the Keras model being converted.
        dataset: its data (labels, the task and input normalization come from here).
        semantics: what the output holds (:func:`edgeqd.models.heads.output_semantics`; found here when None).
    """
    from edgeqd.models.heads import output_semantics

    semantics = semantics or output_semantics(model, regression=dataset.regression)
    task = "regression" if semantics.output == "regression" else \
        "image_classification" if len(dataset.input_shape) == 3 else "classification"
    return {"producer": f"edgeqd {__version__}", "task": task, "model_name": model.name,
            "labels": list(dataset.class_names), "input_normalization": dataset.normalization,
            "output": semantics.output, "output_activation": semantics.activation}


def load_keras(model: str | Path | Any, role: str, unsafe_deserialization: bool,
               allow_serving: bool = False) -> tuple[Any, Optional[Path]]:
    """A model given as a path (loaded safely; Keras 3 translated and proven) or as a ``tf_keras`` model; and its path.

    Args:
        model: a ``.keras``/``.h5``/SavedModel path or a loaded ``tf_keras`` model.
        role: what it is ("model", "teacher"), for messages.
        unsafe_deserialization: allow layers that carry code.
        allow_serving: accept a SavedModel without Keras layers (Keras 3 ``model.export()``) for
            post-training quantization from its serving signature; refused otherwise.
    """
    from edgeqd.models import is_serving_saved_model, load_model, load_serving_model

    if isinstance(model, (str, Path)):
        if allow_serving and is_serving_saved_model(model):
            return load_serving_model(model), Path(model)
        return load_model(Path(model), unsafe_deserialization=unsafe_deserialization), Path(model)
    import tf_keras as keras

    if not isinstance(model, keras.Model):
        raise ModelError(f"the {role} must be a model path or a tf_keras model, got {type(model).__name__}")
    return model, None


@dataclass
class _Run:
    """The state one run carries from stage to stage."""

    settings: ConvertSettings
    out: Path
    force: bool
    unsafe_deserialization: bool
    report: ProgressCallback
    scratch: Path
    sections: dict[str, Any] = field(default_factory=dict)
    copies: list[Path] = field(default_factory=list)
    lowbit_float: Optional[bytes] = None  # low-bit QAT's trained float .tflite (the low-bit formats quantize it)


def _check_arguments(model, teacher, settings: ConvertSettings) -> None:
    if settings.distill is not None and model is not None:
        raise UsageError("give either MODEL or a teacher to distil a student from (--distill-from), not both")
    if settings.distill is not None and teacher is None:
        raise UsageError("distilling a student needs a teacher (--distill-from TEACHER)")
    if settings.distill is None and model is None:
        raise UsageError("give MODEL, or --distill-from TEACHER to distil a student first")
    if settings.qat is None and settings.distill is None and teacher is not None:
        raise UsageError("--teacher applies to quantization-aware training (--mode qat)")


def _distil_stage(run: _Run, teacher, data) -> Any:
    """Distil the student the settings ask for; keep it (and its report) for the output folder."""
    from edgeqd.distillation import distill

    settings = run.settings.distill
    run.report(f"distilling a {settings.student} student (--recipe {settings.recipe})", 0, 1)
    result = distill(teacher, data, settings, run.scratch / "student.keras", seed=run.settings.seed,
                     unsafe_deserialization=run.unsafe_deserialization, progress=False)
    run.copies = [Path(p) for p in (result.student_path, result.report_path) if p]
    # The student is copied into the output folder: point the manifest at those copies.
    run.sections["distillation"] = {**result.to_dict(), "student_path": run.copies[0].name,
                                    "report_path": run.copies[1].name if len(run.copies) > 1 else None}
    return result.student


def _artifact_row(name: str, context, out_dir: Path, x_eval, reference, labels, keras_eval,
                  regression: bool) -> tuple[ArtifactResult, Optional[np.ndarray]]:
    """Convert one format and verify it; a failure becomes a failed row. Returns the row and its outputs."""
    from edgeqd.atomic import no_room
    from edgeqd.bundle import embed_metadata
    from edgeqd.converters import CONVERTERS
    from edgeqd.models import file_sha256
    from edgeqd.verify import check_float_artifact, mae_increase_pct, verify_artifact

    converter = CONVERTERS[name]
    started = time.perf_counter()
    target = out_dir / converter.filename

    def failed(reason: str) -> tuple[ArtifactResult, None]:
        target.unlink(missing_ok=True)
        return ArtifactResult(name, "", converter.runtime, Status.FAILED, reason=reason,
                              seconds=time.perf_counter() - started), None

    try:
        details = converter.fn(context, target) or {}
        embed_metadata(target, converter.runtime, context.metadata)
        evaluation, inputs, outputs, predictions = verify_artifact(target, x_eval, reference, labels, regression)
        if not converter.quantized:  # a float artifact must compute what the float model computes
            check_float_artifact(converter.filename, evaluation, reference)
    except EdgeqdError as exc:
        if interrupts.received() is not None:
            target.unlink(missing_ok=True)
            raise
        return failed(str(exc))
    except Exception as exc:  # a converter bug or a library edge case: still a row, not a crash
        # An interrupt that native code turned into another error (an import's "initialization
        # failed") is the interrupt, and a full disk fails every later artifact too: not rows.
        if interrupts.received() is not None or no_room(exc) is not None:
            target.unlink(missing_ok=True)
            raise
        return failed(f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}")
    drop = None
    if keras_eval.accuracy is not None and evaluation.accuracy is not None:
        drop = round(100.0 * (keras_eval.accuracy - evaluation.accuracy), 3)
    row = ArtifactResult(name, converter.filename, converter.runtime, Status.OK, dtype=converter.precision,
                         bytes=target.stat().st_size, sha256=file_sha256(target), inputs=inputs, outputs=outputs,
                         evaluation=evaluation, accuracy_drop_pts=drop, seconds=time.perf_counter() - started,
                         details=details, mae_increase_pct=mae_increase_pct(evaluation.mae, keras_eval.mae))
    return row, predictions


def _context(run: _Run, model, qat, dataset: Dataset, worker, semantics):
    """The converters' context: the float model, calibration samples, the QAT export, the child process."""
    from edgeqd.converters import ConversionContext
    from edgeqd.data import calibration_subset
    from edgeqd.models import model_source
    from edgeqd.qat_stage import HINT_CALIBRATION

    settings = run.settings
    calibration, note = calibration_subset(dataset, settings.calibration.samples, settings.seed)

    def isolated(stage: str, fn, *args):
        return worker.call(stage, fn, *args, hint=HINT_CALIBRATION)

    context = ConversionContext(model=model, calibration=calibration, workdir=run.scratch,
                                per_channel=settings.calibration.per_channel,
                                calibration_method=settings.calibration.method,
                                metadata=artifact_metadata(model, dataset, semantics), run=isolated if worker else None,
                                saved_model_dir=getattr(model_source(model), "saved_model_dir", None))
    if qat is not None:
        context.qat_export, context.qat_softmax, context.qat_float_layers = qat.export, qat.softmax, qat.float_layers
    if run.lowbit_float is not None:
        context.cache["lowbit-qat-float"] = run.lowbit_float
    # Mixed precision searches on training samples (the evaluation split stays held out for its check).
    search = min(len(dataset.x_train), MIXED_SEARCH_SAMPLES)
    labels = dataset.y_train[-search:] if dataset.y_train is not None and not dataset.regression else None
    labels = labels if labels is None or labels.ndim == 1 else None
    context.search_samples, context.max_drop = (dataset.x_train[-search:], labels), settings.verify.max_drop
    return context, note


def _build_artifacts(run: _Run, names: list[str], model, qat, dataset: Dataset, tmp: Path, worker
                     ) -> tuple[list[ArtifactResult], dict, dict]:
    """Every format converted and verified against the float model: rows, calibration and parity sections."""
    from edgeqd.models.heads import output_semantics
    from edgeqd.verify import evaluate_outputs, parity, regression_parity

    settings = run.settings
    x_eval = dataset.x_eval[:settings.verify.eval_samples]
    labels = None if dataset.y_eval is None else dataset.y_eval[:settings.verify.eval_samples]
    run.report("evaluating the Keras model", 1, len(names) + 2)
    reference = model.predict(x_eval, batch_size=256, verbose=0).astype(np.float32)
    semantics = output_semantics(model, reference, regression=dataset.regression)
    regression = semantics.output == "regression"
    run.sections["output"] = semantics.to_dict()
    context, note = _context(run, model, qat, dataset, worker, semantics)
    keras_eval = evaluate_outputs(reference, reference, labels, dataset.regression)
    mode = settings.mode
    if qat is not None and {"tflite-int8", "onnx-int8"} & set(names):
        from edgeqd.qat_stage import choose_int8

        run.report("QAT or PTQ: comparing both int8 models on the validation split", 1, len(names) + 2)
        choice = choose_int8(context, qat, dataset, settings)
        run.sections["int8_choice"] = choice.section
        if choice.shipped == "ptq":  # PTQ agreed better: the int8 artifacts are calibrated, not QAT's
            context.qat_export, context.qat_float_layers, mode = None, (), "ptq (QAT fell back)"
    rows, outputs = [], {"keras": reference}
    if context.quantization_aware:
        outputs["keras-fake-quant"] = qat.fake_quant_outputs
    for done, name in enumerate(names, start=2):
        interrupts.check()  # a stage boundary: an interrupt a converter swallowed ends the run here
        run.report(f"converting {name}", done, len(names) + 2)
        row, predictions = _artifact_row(name, context, tmp, x_eval, reference, labels, keras_eval,
                                         dataset.regression)
        rows.append(row)
        if predictions is not None:
            outputs[name] = predictions
    calibration_section = {"samples": int(len(context.calibration)), "seed": settings.seed,
                           "source": "training split", "mode": mode, "per_channel": settings.calibration.per_channel,
                           "onnx_method": settings.calibration.method, "note": note}
    reference_section = {"accuracy": keras_eval.accuracy, "samples": int(len(x_eval)),
                         "task": "regression" if regression else "classification"}
    if dataset.regression:
        reference_section.update(mae=keras_eval.mae, rmse=keras_eval.rmse, max_abs_error=keras_eval.max_abs_error)
    run.sections["parity"] = regression_parity(outputs, labels if dataset.regression else None) if regression \
        else parity({n: o.argmax(1) for n, o in outputs.items()}, labels)
    return rows, calibration_section, reference_section


def _write_outputs(run: _Run, model, model_path: Optional[Path], dataset: Dataset, names: list[str],
                   qat, worker) -> ConvertResult:
    """Convert, verify, write the manifest and the bundle into a folder renamed into place at the end."""
    from edgeqd.atomic import atomic_dir
    from edgeqd.bundle import write_bundle
    from edgeqd.converters import CONVERTERS
    from edgeqd.documents import MANIFEST_FILE, add_section, new_manifest, write_document
    from edgeqd.models import describe_model, file_sha256, source_record
    from edgeqd.verify import drop_problems, int8_warnings

    settings = run.settings
    with atomic_dir(run.out, force=run.force) as tmp:
        for file in run.copies:
            shutil.copy2(file, tmp / file.name)
        rows, calibration, reference = _build_artifacts(run, names, model, qat, dataset, tmp, worker)
        quantized = {n for n in names if CONVERTERS[n].quantized}
        problems = [f"{r.format} failed: {r.reason}" for r in rows if r.status == Status.FAILED]
        problems += drop_problems(rows, reference["accuracy"], settings.verify.max_drop, quantized,
                                  reference_mae=reference.get("mae"))
        warnings = int8_warnings(rows, reference["accuracy"], quantized)
        manifest = new_manifest(
            input_model={"path": str(model_path) if model_path else None,
                         "sha256": file_sha256(model_path) if model_path else None, **describe_model(model),
                         **source_record(model, settings.qat is not None)},
            data={"name": dataset.name, "train_samples": int(len(dataset.x_train)),
                  "eval_samples": reference["samples"], "labelled": dataset.y_eval is not None, "task": dataset.task,
                  "input_dtype": dataset.x_train.dtype.name,
                  "input_shape": list(dataset.input_shape), "class_names": list(dataset.class_names),
                  "normalization": dataset.normalization, "seed": settings.seed},
            calibration=calibration, keras=reference, artifacts=[r.to_dict() for r in rows],
            max_drop=settings.verify.max_drop, problems=problems)
        add_section(manifest, "warnings", warnings)
        add_section(manifest, "settings", settings.to_dict())
        for name, section in run.sections.items():
            add_section(manifest, name, section)
        add_section(manifest, "bundle", write_bundle(tmp, manifest))
        write_document(tmp / MANIFEST_FILE, manifest)
    return ConvertResult(out=run.out, manifest=manifest, artifacts=rows, problems=problems, warnings=warnings)


def _has_recurrent_layer(model) -> bool:
    """Whether ``model`` holds an RNN layer (LSTM, GRU, SimpleRNN, also inside Bidirectional)."""
    import tf_keras as keras

    return any(isinstance(layer, keras.layers.RNN) for layer in model.submodules)


def _prove_translations(model, teacher, dataset: Dataset) -> None:
    """Prove Keras 3 translations again on the run's real data (they were proven on random inputs at load)."""
    from edgeqd.models import prove_on_data

    prove_on_data(model, dataset.x_train)
    if teacher is not None and tuple(teacher.inputs[0].shape[1:]) == tuple(dataset.x_train.shape[1:]):
        prove_on_data(teacher, dataset.x_train)


def convert(model: str | Path | Any | None, data: str | Path | Dataset, out: str | Path,
            settings: Optional[ConvertSettings] = None, *, teacher: str | Path | Any | None = None,
            force: bool = False, unsafe_deserialization: bool = False,
            progress: Optional[ProgressCallback] = None) -> ConvertResult:
    """Run the pipeline: [distil] → [QAT] → verified TFLite/ONNX artifacts, ``manifest.json`` and the bundle.

    Args:
        model: the float model to convert (``.keras``/``.h5``/SavedModel path or ``tf_keras``
            model); None when ``settings.distill`` distils a student from ``teacher`` first.
        data: ``fashion-mnist``, an ``.npz``, an image folder, or a loaded Dataset.
        out: the output folder (created atomically).
        settings: formats, calibration, verification budget, and the optional ``distill``
            and ``qat`` stages (default: PTQ of the four default formats).
        teacher: the teacher to distil from (with ``settings.distill``) and to learn from in
            every QAT step (with ``settings.qat``); a path or a ``tf_keras`` model.
        force: replace an existing ``out`` (never one of the run's inputs).
        unsafe_deserialization: allow model files whose layers carry code.
        progress: called as ``progress(step, done, total)`` while working.

    Returns:
        A :class:`ConvertResult`; call ``raise_for_problems()`` to turn failures into exit 4.

    >>> convert("teacher.keras", "fashion-mnist", "out/")  # doctest: +SKIP
    >>> convert(None, "fashion-mnist", "out/", ConvertSettings(distill=DistillSettings(),
    ...         qat=QATSettings()), teacher="teacher.keras")  # doctest: +SKIP
    """
    from edgeqd.atomic import check_output_safe, check_writable, scratch_dir

    settings = settings or ConvertSettings()
    names = resolve_formats(list(settings.formats) + (list(MIXED_FORMATS) if settings.calibration.precision == "auto"
                                                      else []))
    out = Path(out)
    _check_arguments(model, teacher, settings)
    student_path = settings.distill.student if settings.distill is not None else None
    check_output_safe(out, [model, data, teacher, student_path])
    check_writable(out, force)
    report = progress or (lambda step, done, total: None)
    from edgeqd.isolate import Worker

    # $TMPDIR/edgeqd-work-PID-XXXX: removed however the run ends; a killed run's is removed by the next.
    # The worker is the child process that runs the stages which can crash natively (edgeqd.isolate).
    with scratch_dir("edgeqd-work") as scratch, Worker() as worker:
        if settings.qat is not None:
            worker.start()  # its TensorFlow import overlaps loading the model and data here
        run = _Run(settings, out, force, unsafe_deserialization, report, scratch)
        teacher_model, teacher_path = (None, None) if teacher is None else \
            load_keras(teacher, "teacher", unsafe_deserialization)
        if settings.distill is not None:
            model, model_path = _distil_stage(run, teacher_model, data), None
        else:
            report("loading model and data", 0, len(names) + 2)
            model, model_path = load_keras(model, "model", unsafe_deserialization, allow_serving=settings.qat is None)
        from edgeqd.data import load_for_model

        dataset = load_for_model(model, data, seed=settings.seed)
        _prove_translations(model, teacher_model, dataset)
        qat = None
        if settings.qat is not None and settings.qat.weight_bits < 8:  # low-bit QAT: the int8 formats stay PTQ
            from edgeqd.quantization.lowbit_qat import run_lowbit_stage

            report(f"low-bit QAT ({settings.qat.weight_bits}-bit weights)", 1, len(names) + 2)
            run.lowbit_float, run.sections["quantize_lowbit"] = run_lowbit_stage(model, dataset, settings,
                                                                                teacher_model)
            low = {4: "tflite-w4a8", 2: "tflite-w2"}[settings.qat.weight_bits]
            names = names if {"tflite-w4a8", "tflite-w4", "tflite-w2", *MIXED_FORMATS} & set(names) else names + [low]
        elif settings.qat is not None:
            from edgeqd.data import calibration_subset
            from edgeqd.qat_stage import run_qat

            interrupts.check()
            qat = run_qat(model, dataset, settings, teacher=teacher_model,
                          teacher_name=str(teacher_path or getattr(teacher_model, "name", "")) or None,
                          calibration=calibration_subset(dataset, settings.calibration.samples, settings.seed)[0],
                          scratch=scratch, worker=worker, progress=report)
            run.sections["quantize"] = qat.section
        interrupts.check()
        # TFLite calibration runs in the child too where it is known to crash (RNN loops), and
        # wherever the child runs anyway (QAT); elsewhere in this process, sparing a TensorFlow start.
        isolate = settings.qat is not None or _has_recurrent_layer(model)
        result = _write_outputs(run, model, model_path, dataset, names, qat, worker if isolate else None)
    report("done", 1, 1)
    return result
