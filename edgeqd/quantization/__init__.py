"""``edgeqd quantize``: quantization-aware training with the teacher in the loop, or calibrated PTQ.

QAT (``mode="qat"``) takes any real Keras model through :func:`edgeqd.quantization.rewrite.prepare_qat`
(rewrites TFMOT rejects into equivalents, checks them, leaves the rest float),
fine-tunes the fake-quant model, and hands it to :func:`edgeqd.pipeline.convert`
with ``QuantMode.QAT`` so that the ranges learnt in training are the ones that ship
in the int8 TFLite and ONNX artifacts (no re-calibration).

With a teacher, distillation happens in the SGD steps (the loss and its T² factor
come from :mod:`edgeqd.distillation`, the same code ``edgeqd distill`` trains with):

* ``schedule="joint"``: QAT with the distillation loss from the first step, starting
  from the float student;
* ``schedule="two-phase"``: distil in float first, then QAT on the labels.

Without a teacher QAT trains on the labels alone (TFMOT's recipe).

PTQ (``mode="ptq"``) calibrates ranges on training samples: per-channel (default) or
per-tensor weights, ONNX Runtime's minmax / percentile / entropy calibrators.

Either way the Keras model (fake-quant for QAT), the int8 TFLite and the int8 ONNX
are evaluated on the same held-out split: their accuracies and pairwise top-1
agreement ("parity") go into the table and ``manifest.json``. ``max_drop`` applies
to the int8 artifacts against the float model the user gave.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgeqd.errors import DataError, DistillationError, ModelError, QuantizationError, UsageError
from edgeqd.types import Dataset, QuantMode, Status

SCHEDULES = ("joint", "two-phase")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
DEFAULT_EPOCHS = 3
# QAT fine-tunes a trained model: a tenth of a typical from-scratch Adam rate keeps
# the weights near their float optimum while the ranges settle (TFMOT's examples
# fine-tune for ~1 epoch at Adam defaults on far larger batches).
DEFAULT_LEARNING_RATE = 1e-4
DEFAULT_BATCH_SIZE = 128
# Distillation settings of the QAT phase. QAT fine-tunes a student that has usually been
# distilled in float already (soft targets at T = 4): repeating that objective leaves the
# student where it was (issue 4 benchmark: joint at T = 4, α = 0.5 stayed at the float
# accuracy while label-only QAT gained ~0.7 pt). Fine-tuning should fix the decisions the
# fake-quant noise moves, so the teacher term uses its plain probabilities (T = 1, as in
# Apprentice, Mishra & Marr 2018) and the labels keep most of the weight: a teacher is
# often no better than the student on the student's own training images.
DEFAULT_QAT_TEMPERATURE = 1.0
DEFAULT_QAT_ALPHA = 0.3
QAT_FORMATS = ("tflite-int8", "onnx-int8")
KERAS_ROW = "keras"

ProgressCallback = Callable[[str, int, int], None]


def _check_options(mode: QuantMode, teacher, schedule: str, epochs: int, calibration: str,
                   calibration_samples: int, batch_size: int, learning_rate: float, max_drop: Optional[float],
                   train_samples: Optional[int], temperature: float, alpha: float, features: Sequence) -> None:
    """Raise :class:`UsageError` / :class:`DistillationError` for settings that cannot work."""
    from edgeqd.distillation import check_settings

    if schedule not in SCHEDULES:
        raise UsageError(f"--schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if calibration not in CALIBRATION_METHODS:
        raise UsageError(f"--calibration {calibration!r}: choose one of {', '.join(CALIBRATION_METHODS)}")
    if calibration_samples <= 0:
        raise UsageError(f"--calibration-samples must be positive, got {calibration_samples}")
    if max_drop is not None and not (np.isfinite(max_drop) and max_drop >= 0):  # NaN would turn the gate off
        raise UsageError(f"--max-drop must be a finite number >= 0 points, got {max_drop}")
    if train_samples is not None and train_samples <= 0:
        raise UsageError(f"--train-samples must be positive, got {train_samples}")
    if mode == QuantMode.PTQ:
        if teacher is not None or features:
            raise UsageError("--teacher and --feature apply to --mode qat (post-training quantization "
                             "does not train)")
        return
    if not isinstance(epochs, int) or epochs <= 0:
        raise UsageError(f"--epochs must be a positive integer for quantization-aware training, got {epochs}")
    if batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")
    if not (learning_rate > 0 and np.isfinite(learning_rate)):
        raise UsageError(f"--learning-rate must be > 0, got {learning_rate}")
    if features and teacher is None:
        raise UsageError("--feature needs --teacher: feature distillation matches the teacher's activations")
    if teacher is not None:
        check_settings(temperature, alpha)


def _load(model, what: str, unsafe_deserialization: bool):
    from edgeqd.models import load_model

    if isinstance(model, (str, Path)):
        return load_model(Path(model), unsafe_deserialization=unsafe_deserialization), str(model)
    import tf_keras as keras

    if not isinstance(model, keras.Model):
        raise ModelError(f"the {what} must be a model path or a tf_keras model, got {type(model).__name__}")
    return model, None


def _prepare_teacher(teacher, student, dataset: Dataset):
    """The teacher's logits model, checked against the student and the data."""
    from edgeqd.distillation import check_compatible, check_teacher_outputs_logits, logits_model

    teacher_logits, note = logits_model(teacher, "teacher")
    check_compatible(teacher_logits, student)
    check_teacher_outputs_logits(teacher_logits, dataset.x_train[:32])
    return teacher_logits, note


def _accuracy(model, x: np.ndarray, y: Optional[np.ndarray]) -> Optional[float]:
    if y is None:
        return None
    return float((model.predict(x, batch_size=256, verbose=0).argmax(1) == y).mean())


def _tf_data(x: np.ndarray, y: Optional[np.ndarray], batch_size: int, seed: int):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y.astype(np.int32)))
    return ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size).prefetch(2)


def _epoch_callback(phase: str, progress: ProgressCallback, offset: int, total: int, history: list):
    """A Keras callback that appends each epoch's figures to ``history`` and reports progress."""
    import tf_keras as keras

    def on_epoch_end(epoch, logs=None):
        figures = {k: round(float(v), 5) for k, v in (logs or {}).items()}
        history.append({"phase": phase, "epoch": epoch + 1, **figures})
        progress(f"{phase}: epoch {epoch + 1} done", offset + epoch + 1, total)

    return keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)


def _fit_distiller(student, teacher, x, y, *, epochs, batch_size, learning_rate, temperature, alpha,
                   features, seed, callback) -> Any:
    """Train ``student`` (float or fake-quant) against ``teacher``; return the trained student."""
    import tf_keras as keras

    from edgeqd.distillation import Distiller

    distiller = Distiller(student, teacher, temperature=temperature, alpha=alpha, features=features)
    distiller.compile(optimizer=keras.optimizers.Adam(learning_rate))
    distiller.fit(_tf_data(x, y, batch_size, seed), epochs=epochs, verbose=0, callbacks=[callback])
    return distiller.student


def _fit_labels(model, x, y, *, epochs, batch_size, learning_rate, seed, callback) -> Any:
    """Train ``model`` on hard labels with cross-entropy on its logits."""
    import tf_keras as keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    model.fit(_tf_data(x, y, batch_size, seed), epochs=epochs, verbose=0, callbacks=[callback])
    return model


def _copy(model):
    import tf_keras as keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _training_subset(dataset: Dataset, train_samples: Optional[int], seed: int):
    x, y = dataset.x_train, dataset.y_train
    if train_samples is None or train_samples >= len(x):
        return x, y
    order = np.sort(np.random.default_rng(seed).permutation(len(x))[:train_samples])
    return x[order], None if y is None else y[order]


def parity(out: Path, manifest: dict, x_eval: np.ndarray, keras_outputs: np.ndarray,
           labels: Optional[np.ndarray], keras_name: str = KERAS_ROW) -> dict[str, Any]:
    """Accuracies and pairwise top-1 agreement of the Keras model and every int8 artifact.

    Each artifact is run again in its runtime on the same held-out samples.

    Args:
        out: the folder holding the artifacts.
        manifest: the convert manifest (artifact rows).
        x_eval: the held-out inputs.
        keras_outputs: the Keras model's outputs on the held-out samples.
        labels: their labels, or None.
        keras_name: the Keras row's name ("keras-fake-quant" for QAT).

    Returns:
        ``{"samples", "accuracy": {name: acc}, "agreement": {"a vs b": fraction}}``.

    >>> parity(Path("."), {"artifacts": []}, np.eye(2), np.eye(2), np.array([0, 1]))["accuracy"]
    {'keras': 1.0}
    """
    from edgeqd.runtimes import PREDICTORS

    top1 = {keras_name: keras_outputs.argmax(1)}
    for row in manifest["artifacts"]:
        if row["status"] == Status.OK.value and row["dtype"] == "int8":
            predictions = PREDICTORS[row["runtime"]](out / row["file"], x_eval)
            top1[row["format"]] = predictions.argmax(1)
    names = list(top1)
    accuracy = {n: (None if labels is None else float((top1[n] == labels).mean())) for n in names}
    agreement = {f"{a} vs {b}": float((top1[a] == top1[b]).mean())
                 for i, a in enumerate(names) for b in names[i + 1:]}
    return {"samples": int(len(keras_outputs)), "accuracy": accuracy, "agreement": agreement}


def quantize(model: str | Path | Any, data: str | Dataset, out: str | Path, mode: str | QuantMode = "qat",
             teacher: str | Path | Any | None = None, schedule: str = "joint", epochs: int = DEFAULT_EPOCHS,
             features: Sequence[str] = (), temperature: float = DEFAULT_QAT_TEMPERATURE,
             alpha: float = DEFAULT_QAT_ALPHA,
             learning_rate: float = DEFAULT_LEARNING_RATE, batch_size: int = DEFAULT_BATCH_SIZE,
             train_samples: Optional[int] = None, per_channel: bool = True, calibration: str = "minmax",
             calibration_samples: int = 200, strict: bool = False, max_drop: Optional[float] = None,
             formats: Sequence[str] = (), eval_samples: Optional[int] = None, force: bool = False,
             unsafe_deserialization: bool = False, seed: int = 0,
             progress: Optional[ProgressCallback] = None):
    """Quantize a Keras model (QAT with optional distillation, or PTQ) into verified int8 artifacts.

    Args:
        model: the float model to quantize (the student): a ``.keras``/``.h5``/SavedModel
            path or a loaded ``tf_keras`` model (not modified).
        data: ``fashion-mnist``, an ``.npz``, an image folder, or a loaded Dataset.
        out: the output folder (created atomically; artifacts + ``manifest.json``).
        mode: ``"qat"`` (quantization-aware training) or ``"ptq"`` (calibration only).
        teacher: a trained model to distil from during QAT (path or model), or None.
        schedule: ``"joint"`` (QAT with distillation from the start) or ``"two-phase"``
            (distil in float, then QAT on labels); used with a teacher.
        epochs: training epochs per phase (QAT only; must be > 0).
        features: ``"teacher_layer:student_layer"`` pairs for feature distillation.
        temperature: distillation temperature T > 0 (default 1: the teacher's plain
            probabilities; see ``DEFAULT_QAT_TEMPERATURE``).
        alpha: weight of the teacher term in [0, 1] (1 − α weighs the labels; default 0.3).
        learning_rate: Adam learning rate of the fine-tuning.
        batch_size: training batch size.
        train_samples: train on this many (seeded) training samples only (None = all).
        per_channel: per-channel weight scales (default) or one per tensor.
        calibration: ONNX Runtime calibrator for PTQ: ``minmax``, ``percentile`` or ``entropy``.
        calibration_samples: training samples used to calibrate PTQ ranges.
        strict: fail (exit 4) instead of leaving unquantizable layers in float.
        max_drop: largest allowed accuracy loss, in points, of an int8 TFLite/ONNX
            artifact against the float model given; more is a problem (exit 4).
        formats: converter names (default: ``tflite-int8`` and ``onnx-int8`` for QAT,
            the four defaults for PTQ).
        eval_samples: evaluate on the first N held-out samples only (None = all).
        force: replace an existing ``out``.
        unsafe_deserialization: allow Lambda layers in model files.
        seed: seed of the data order, the subsets and the initialisation of new weights.
        progress: called as ``progress(step, done, total)``.

    Returns:
        A :class:`edgeqd.pipeline.ConvertResult` whose manifest carries ``quantize``
        (settings, float accuracy, rewrites, layers left float, training history) and
        ``parity``; call ``raise_for_problems()`` to turn problems into exit 4.

    >>> quantize("student.keras", "fashion-mnist", "out/", teacher="teacher.keras")  # doctest: +SKIP
    """
    from edgeqd.atomic import atomic_dir, check_output_safe, check_writable
    from edgeqd.pipeline import ConvertResult, convert, load_for_model

    try:
        mode = QuantMode(mode)
    except ValueError:
        raise UsageError(f"--mode {mode!r}: choose one of {', '.join(m.value for m in QuantMode)}") from None
    features = tuple(features or ())
    _check_options(mode, teacher, schedule, epochs, calibration, calibration_samples, batch_size,
                   learning_rate, max_drop, train_samples, temperature, alpha, features)
    out = Path(out)
    check_output_safe(out, [model, data, teacher])
    check_writable(out, force)
    report = progress or (lambda step, done, total: None)
    started = time.perf_counter()

    student, student_path = _load(model, "model", unsafe_deserialization)
    dataset = load_for_model(student, data, seed=seed)
    if mode == QuantMode.QAT and not student.trainable_weights:
        raise ModelError(f"{student.name} has no trainable weights: there is nothing for quantization-aware "
                         "training to fine-tune (use --mode ptq)")
    if mode == QuantMode.QAT and teacher is None and dataset.y_train is None:
        raise DataError(f"{dataset.name} has no labels and no --teacher was given: quantization-aware "
                        "training needs labels or a teacher to learn from")
    x_eval = dataset.x_eval[:eval_samples]
    y_eval = None if dataset.y_eval is None else dataset.y_eval[:eval_samples]
    settings: dict[str, Any] = {"mode": mode.value, "per_channel": per_channel, "seed": seed}

    if mode == QuantMode.PTQ:
        settings.update(calibration=calibration, calibration_samples=calibration_samples)
        float_accuracy = _accuracy(student, x_eval, y_eval)
        target, reference_model, keras_name = student, student, "keras-float"
        names = list(formats) or None
        extra = {"quantize": {**settings, "float_accuracy": float_accuracy}}
        history: list = []
    else:
        import tf_keras as keras

        from edgeqd.distillation import logits_model, parse_layer_pairs
        from edgeqd.quantization.rewrite import prepare_qat

        parse_layer_pairs(features)  # malformed pairs fail now, before any training
        notes: list[str] = []
        student_logits, note = logits_model(student, "student")
        notes += [note] if note else []
        teacher_model = None
        if teacher is not None:
            raw_teacher, _ = _load(teacher, "teacher", unsafe_deserialization)
            teacher_model, note = _prepare_teacher(raw_teacher, student_logits, dataset)
            notes += [note] if note else []
        x_train, y_train = _training_subset(dataset, train_samples, seed)
        float_accuracy = _accuracy(student_logits, x_eval, y_eval)
        teacher_accuracy = None if teacher_model is None else _accuracy(teacher_model, x_eval, y_eval)
        keras.utils.set_random_seed(seed)
        effective = schedule if teacher_model is not None else "labels"
        phases = 2 if effective == "two-phase" else 1
        total = phases * epochs + 3
        history = []
        float_student = student_logits
        float_after_phase1 = None
        if effective == "two-phase":
            report("two-phase: distilling in float", 0, total)
            float_student = _fit_distiller(
                _copy(student_logits), teacher_model, x_train, y_train, epochs=epochs, batch_size=batch_size,
                learning_rate=learning_rate, temperature=temperature, alpha=alpha, features=features, seed=seed,
                callback=_epoch_callback("float distillation", report, 0, total, history))
            float_after_phase1 = _accuracy(float_student, x_eval, y_eval)
        report("rewriting for quantization", phases * epochs - epochs, total)
        prepared = prepare_qat(float_student, x_train, per_channel=per_channel, strict=strict)
        offset = (phases - 1) * epochs
        qat_callback = _epoch_callback("qat", report, offset, total, history)
        if effective == "joint":
            qat_model = _fit_distiller(
                prepared.qat_model, teacher_model, x_train, y_train, epochs=epochs, batch_size=batch_size,
                learning_rate=learning_rate, temperature=temperature, alpha=alpha, features=features, seed=seed,
                callback=qat_callback)
        elif y_train is not None:
            qat_model = _fit_labels(prepared.qat_model, x_train, y_train, epochs=epochs, batch_size=batch_size,
                                    learning_rate=learning_rate, seed=seed, callback=qat_callback)
        else:  # two-phase without labels: the teacher's targets are the only signal left
            notes.append("no labels: the QAT phase of two-phase learns from the teacher's targets")
            qat_model = _fit_distiller(
                prepared.qat_model, teacher_model, x_train, None, epochs=epochs, batch_size=batch_size,
                learning_rate=learning_rate, temperature=temperature, alpha=alpha, features=(), seed=seed,
                callback=qat_callback)
        settings.update(schedule=effective, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                        train_samples=int(len(x_train)), strict=strict)
        if teacher_model is not None:
            settings.update(teacher=str(teacher) if isinstance(teacher, (str, Path)) else teacher_model.name,
                            temperature=temperature, alpha=alpha, features=list(features))
        target, reference_model, keras_name = qat_model, qat_model, "keras-fake-quant"
        names = list(formats) or list(QAT_FORMATS)
        extra = {"quantize": {**settings, "float_accuracy": float_accuracy, "teacher_accuracy": teacher_accuracy,
                              "float_accuracy_after_distillation": float_after_phase1,
                              **prepared.to_dict(), "history": history, "notes": notes,
                              "training_seconds": round(time.perf_counter() - started, 1)}}

    report("converting and verifying", 0, 1)
    with atomic_dir(out, force=force) as tmp:
        stage = tmp / "stage"
        result = convert(target, dataset, stage, formats=names or (),
                         calibration_samples=min(calibration_samples, len(dataset.x_train)),
                         max_drop=None, eval_samples=eval_samples, per_channel=per_channel,
                         calibration_method=calibration, mode=mode, seed=seed, extra_manifest=extra)
        for item in stage.iterdir():
            shutil.move(str(item), str(tmp / item.name))
        stage.rmdir()
        manifest = result.manifest
        if student_path:
            manifest["input_model"]["path"] = student_path
        keras_outputs = reference_model.predict(x_eval, batch_size=256, verbose=0).astype(np.float32)
        manifest["parity"] = parity(tmp, manifest, x_eval, keras_outputs, y_eval, keras_name)
        problems = list(result.problems)
        problems += _drop_problems(manifest, float_accuracy, max_drop)
        manifest["max_drop"] = max_drop
        manifest["problems"] = problems
        from edgeqd.strict_json import dumps

        (tmp / "manifest.json").write_text(dumps(manifest, "manifest.json", indent=2) + "\n")
    report("done", 1, 1)
    return ConvertResult(out=out, manifest=manifest, artifacts=result.artifacts, problems=problems)


def _drop_problems(manifest: dict, float_accuracy: Optional[float], max_drop: Optional[float]) -> list[str]:
    """``--max-drop`` against the float model, for the int8 TFLite/ONNX artifacts only."""
    if max_drop is None or float_accuracy is None:
        return []
    problems = []
    for row in manifest["artifacts"]:
        evaluation = row.get("evaluation") or {}
        if row["status"] != Status.OK.value or row["dtype"] != "int8" or evaluation.get("accuracy") is None:
            continue
        drop = 100.0 * (float_accuracy - evaluation["accuracy"])
        if drop > max_drop:
            problems.append(f"{row['file']} top-1 {evaluation['accuracy']:.4f} vs float {float_accuracy:.4f}: "
                            f"drop {drop:.2f} pts > --max-drop {max_drop}")
    return problems
