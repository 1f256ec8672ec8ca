"""The pipeline's QAT stage: training in a child process, then QAT or PTQ — whichever int8 model is better ships.

:func:`run_qat` trains (:func:`edgeqd.quantization.qat.train_qat`) in the run's
:class:`edgeqd.isolate.Worker`, so that a native crash in training (oneDNN's, see
:mod:`edgeqd`) is one ``error:`` line naming the signal, not a silent exit. The child
gets the model as a temporary ``.keras`` file and the data as arrays, and sends back the
trained model exported for conversion (a SavedModel folder), its outputs on the held-out
samples and the manifest section. A model the child cannot load (a custom layer class
defined in the caller's own script) trains in this process instead, with a note.

:func:`choose_int8` then converts both int8 TFLite models — QAT's and PTQ's (calibrated
on the same samples) — runs them on the validation split QAT picked its epoch on, and
ships the better one by :func:`edgeqd.quantization.finetune.better` (agreement with the
model QAT aims at; within 1/√n, the lower mean total-variation distance of the
class probabilities, defined where an int8 softmax rounds small ones to 0). QAT starts from calibrated ranges, so
it is rarely worse; when it is, PTQ ships, and the manifest records both figures and
the choice. ``QATSettings.fallback=False`` (``--no-fallback``) ships QAT regardless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgeqd.settings import ConvertSettings
from edgeqd.types import Dataset

HINT_TRAINING = ("TensorFlow died in native code while training; edgeqd already caps oneDNN at AVX2 "
                 "(ONEDNN_MAX_CPU_ISA) — retry with TF_ENABLE_ONEDNN_OPTS=0, or use --mode ptq")
HINT_CALIBRATION = ("TFLite's calibrator died in native code (it does on GRU/SimpleRNN loops traced at batch 1); "
                    "use LSTM or deploy the ONNX artifact")


class ModelTransferError(Exception):
    """The child process could not load the model the parent saved for it."""


@dataclass
class QATRun:
    """What the QAT stage hands to the converters.

    Attributes:
        export: the trained QAT model exported for conversion (SavedModel folder).
        fake_quant_outputs: its outputs (logits) on the held-out evaluation samples.
        section: the manifest's ``quantize`` section.
        validation: indices of the validation split in the training data QAT used.
        target_logits: the logits QAT aimed at, on the validation split.
        softmax: the user's model ends in a softmax (the artifacts add it back).
        model: the fake-quant model itself when it trained in this process, else None.
    """

    export: Path
    fake_quant_outputs: np.ndarray
    section: dict[str, Any]
    validation: np.ndarray
    target_logits: np.ndarray
    softmax: bool
    model: Any = None

    @property
    def float_layers(self) -> tuple[str, ...]:
        """"name (Kind)" of each layer TFMOT left float."""
        return tuple(f"{f['name']} ({f['kind']})" for f in self.section.get("left_float", []))


def _outcome_to_run(outcome, export: Path, x_eval: np.ndarray, model: Any = None) -> QATRun:
    return QATRun(export, outcome.model.predict(x_eval, batch_size=256, verbose=0), outcome.section,
                  outcome.validation, outcome.target_logits, outcome.softmax, model)


def train_and_export(model_path: str, teacher_path: Optional[str], dataset: Dataset, arguments: dict,
                     export: str, output_names: list, progress: Callable) -> dict:
    """The child's side: load, train, export. Returns plain data (no Keras objects cross the pipe).

    Args:
        model_path: the float model, saved by the parent (``.keras``).
        teacher_path: the teacher, or None.
        dataset: the data.
        arguments: :func:`~edgeqd.quantization.qat.train_qat`'s keyword arguments.
        export: where to write the SavedModel export.
        output_names: the user's output names, for the export's signature.
        progress: the parent's progress callback (forwarded by the worker).
    """
    from edgeqd.converters.export import export_saved_model
    from edgeqd.models import load_own_model
    from edgeqd.quantization.qat import train_qat

    try:  # the parent loaded these already (and checked they are safe): they hold no new code
        # load_own_model also registers the Keras 3 activations and reserves the layer names (TFMOT hangs otherwise)
        model = load_own_model(model_path)
        teacher = None if teacher_path is None else load_own_model(teacher_path)
    except Exception as exc:
        raise ModelTransferError(f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}") \
            from None
    outcome = train_qat(model, dataset, teacher=teacher, progress=progress, **arguments)
    export_saved_model(outcome.model, Path(export), batch=1, output_names=output_names, softmax=outcome.softmax)
    run = _outcome_to_run(outcome, Path(export), dataset.x_eval[:arguments.get("eval_samples")])
    return {name: getattr(run, name) for name in ("export", "fake_quant_outputs", "section", "validation",
                                                    "target_logits", "softmax")}


def run_qat(model, dataset: Dataset, settings: ConvertSettings, *, teacher=None, teacher_name: Optional[str],
            calibration: np.ndarray, scratch: Path, worker, progress: Callable) -> QATRun:
    """Train QAT in ``worker``'s child process (in this one if the child cannot load the model).

    Args:
        model: the float ``tf_keras`` model.
        dataset: the data.
        settings: the run's settings (``settings.qat`` set).
        teacher: the loaded teacher, or None.
        teacher_name: how the manifest names it.
        calibration: the samples PTQ calibrates on (QAT's ranges start from them too).
        scratch: the run's scratch folder.
        worker: the run's :class:`edgeqd.isolate.Worker`, or None to train here.
        progress: ``progress(step, done, total)``.
    """
    from edgeqd.converters.export import export_saved_model
    from edgeqd.quantization.qat import train_qat

    arguments = {"settings": settings.qat, "teacher_name": teacher_name, "seed": settings.seed,
                 "per_channel": settings.calibration.per_channel, "eval_samples": settings.verify.eval_samples,
                 "calibration": calibration}
    export = scratch / "export-qat"
    x_eval = dataset.x_eval[:settings.verify.eval_samples]
    note = None
    if worker is not None:
        model_path, teacher_path = scratch / "qat-input.keras", scratch / "qat-teacher.keras"
        try:
            model.save(model_path)
            if teacher is not None:
                teacher.save(teacher_path)
        except Exception as exc:  # a layer without get_config: not saveable as .keras
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            note = f"QAT trained in edgeqd's own process (the model could not be saved for its child: {first})"
        else:
            try:
                answer = worker.call("QAT training", train_and_export, str(model_path),
                                     None if teacher is None else str(teacher_path), dataset, arguments, str(export),
                                     list(model.output_names), progress=progress, hint=HINT_TRAINING)
                return QATRun(**answer)
            except ModelTransferError as exc:
                note = f"QAT trained in edgeqd's own process (its child process could not load the model: {exc})"
    outcome = train_qat(model, dataset, teacher=teacher, progress=progress, **arguments)
    if note:
        outcome.section["notes"].append(note)
    export_saved_model(outcome.model, export, batch=1, output_names=model.output_names, softmax=outcome.softmax)
    return _outcome_to_run(outcome, export, x_eval, outcome.model)


@dataclass
class Choice:
    """Which int8 model ships, and why.

    Attributes:
        shipped: "qat" or "ptq".
        section: the manifest's ``int8_choice`` section (both figures, the rule, the reason).
    """

    shipped: str
    section: dict[str, Any] = field(default_factory=dict)


def _figures(context, which: str, x_val: np.ndarray, target: np.ndarray, softmax: bool) -> dict:
    """Convert ``which`` int8 model (memoized in the context: the converters reuse it) and measure it."""
    from edgeqd.converters.tflite import tflite_bytes
    from edgeqd.quantization.calibrate import total_variation
    from edgeqd.verify import predict

    path = context.workdir / f"choice-{which}-int8.tflite"
    path.write_bytes(tflite_bytes(context, "qat" if which == "qat" else "float", "int8"))
    outputs = predict(path, x_val)
    agreement = float((outputs.argmax(1) == target.argmax(1)).mean())
    distance = total_variation(outputs, target, probabilities=softmax)
    return {"agreement": round(agreement, 5), "tv": float(f"{distance:.4g}"), "bytes": path.stat().st_size}


def choose_int8(context, qat: QATRun, dataset: Dataset, settings: ConvertSettings) -> Choice:
    """Compare the QAT and PTQ int8 TFLite models on QAT's validation split; the better ships.

    Args:
        context: the run's :class:`~edgeqd.converters.ConversionContext` (QAT export set).
        qat: the QAT stage's result.
        dataset: the data (the validation split is drawn from its training part).
        settings: the run's settings.
    """
    from edgeqd.errors import EdgeqdError
    from edgeqd.quantization.finetune import better
    from edgeqd.quantization.qat import training_subset

    x_train, _ = training_subset(dataset, settings.qat.train_samples, settings.seed)
    x_val = x_train[qat.validation]
    section: dict[str, Any] = {"validation_samples": int(len(x_val)), "target": qat.section["selection"]["target"],
                               "rule": "top-1 agreement with the target; within 1/sqrt(n), the lower mean "
                                       "total-variation distance (tv) of the class probabilities; PTQ only when "
                                       "strictly better", "fallback": settings.qat.fallback}
    figures = {}
    for which in ("qat", "ptq"):
        if which == "ptq" and not settings.qat.fallback:
            continue  # --no-fallback: QAT ships whatever PTQ would score; no need to build PTQ's model
        try:
            figures[which] = _figures(context, which, x_val, qat.target_logits, qat.softmax)
        except EdgeqdError as exc:
            figures[which] = {"failed": str(exc)[:300]}
    section.update(figures)
    qat_ok, ptq_ok = "agreement" in figures["qat"], "agreement" in figures.get("ptq", {})
    if not settings.qat.fallback:
        shipped, reason = "qat", "--no-fallback"
    elif qat_ok and ptq_ok:
        ptq_better = better(figures["ptq"], figures["qat"], len(x_val), divergence="tv")
        shipped = "ptq" if ptq_better else "qat"
        reason = ("PTQ agrees better with the target on the validation split" if ptq_better else
                  "QAT agrees with the target at least as well as PTQ on the validation split")
    elif qat_ok or ptq_ok:
        shipped = "ptq" if ptq_ok else "qat"
        reason = f"the {'QAT' if shipped == 'ptq' else 'PTQ'} int8 conversion failed"
    else:
        shipped, reason = "qat", "both int8 conversions failed (the int8 rows say why)"
    section.update(shipped=shipped, reason=reason)
    return Choice(shipped, section)
