"""One distillation run, ``edgeqd distill``'s public function :func:`distill`: settings checked,
models and data materialised, ``fit`` with checkpoints and early stopping, the student and
its JSON report written."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import tf_keras as keras

from edgeqd.distillation.checkpoints import BestEpochKeeper, Checkpoints, checkpoint_folder
from edgeqd.distillation.checks import check_distillable, check_teacher_outputs_logits
from edgeqd.distillation.distiller import Distiller
from edgeqd.distillation.layers import logits_model, parse_layer_pairs
from edgeqd.distillation.dkd import DecoupledKD
from edgeqd.distillation.losses import DistillationLoss, standard_losses
from edgeqd.distillation.recipes import RECIPES, ResolvedRecipe, resolve
from edgeqd.distillation.schedules import learning_rate
from edgeqd.distillation.progress import EpochProgress
from edgeqd.distillation.strategy import is_chief, make_strategy
from edgeqd.errors import DataError, DistillationError, ModelError, UsageError
from edgeqd.models import brought_flavour
from edgeqd.settings import DistillSettings
from edgeqd.types import Dataset, DistillResult, FeatureLoss

REPORT_SUFFIX = ".distill.json"
ModelSpec = Union[str, "os.PathLike[str]", keras.Model]
DataSpec = Union[str, "os.PathLike[str]", Dataset]


def report_path(out: Union[str, Path]) -> Path:
    """The JSON written next to the student: ``student.keras`` → ``student.distill.json``.

    Args:
        out: the student's output path.

    >>> report_path("models/student.keras").name
    'student.distill.json'
    """
    out = Path(out)
    return out.with_name(out.stem + REPORT_SUFFIX)


def split_validation(dataset: Dataset, validation_fraction: float, seed: int):
    """Training and validation arrays: a seeded hold-out of the training split (the evaluation split stays unseen).

    Args:
        dataset: the data.
        validation_fraction: share of the training split held out; 0 validates on the evaluation split.
        seed: seed of the permutation.

    Returns:
        (x_train, y_train, x_val, y_val); labels are None for unlabelled data.

    >>> import numpy as np
    >>> d = Dataset("d", np.zeros((10, 2), "f4"), np.arange(10), np.zeros((4, 2), "f4"), np.arange(4))
    >>> [len(a) for a in split_validation(d, 0.2, seed=0)]
    [8, 8, 2, 2]
    """
    x, y = dataset.x_train, dataset.y_train
    if validation_fraction <= 0:
        return x, y, dataset.x_eval, dataset.y_eval
    n_val = max(1, int(round(len(x) * validation_fraction)))
    if len(x) - n_val < 1:
        raise DataError(f"{dataset.name}: {len(x)} training samples leave none after holding out "
                        f"{n_val} for validation; lower --validation-fraction or add data")
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = order[:n_val], order[n_val:]
    pick = (lambda a, idx: None if a is None else a[idx])
    return x[train], pick(y, train), x[val], pick(y, val)


# --------------------------------------------------------------------------- settings

def _losses(settings: DistillSettings) -> tuple[list[DistillationLoss], list[float]]:
    """The run's terms: the standard recipe, its teacher term DKD when ``--loss`` (or the recipe) says so."""
    losses, weights = standard_losses(settings.temperature, settings.alpha, settings.features, settings.attention,
                                      settings.feature_weight, settings.attention_weight, settings.feature_loss)
    if (settings.loss or RECIPES[settings.recipe].loss) == "dkd":
        losses[1] = DecoupledKD(settings.temperature, settings.tckd_weight, settings.nckd_weight)
    return losses, weights


def _check_student_spec(settings: DistillSettings, student) -> None:
    from edgeqd.distillation.students import STUDENTS

    spec = settings.student
    if student is None and spec not in STUDENTS and not Path(spec).exists() \
            and Path(spec).suffix not in (".keras", ".h5", ".hdf5"):
        raise UsageError(f"unknown student {spec!r}: give a Keras model path or one of {', '.join(sorted(STUDENTS))}")


def _check_outputs(out: Path, inputs: Sequence, force: bool, resume: bool) -> None:
    """Refuse an output that would overwrite an input or an existing file (without force), before any work."""
    from edgeqd.atomic import check_output_safe, check_writable

    if out.suffix not in (".keras", ".h5"):
        raise UsageError(f"{out}: save the student as .keras or .h5")
    check_output_safe(out, inputs, file=True)
    check_output_safe(report_path(out), inputs, file=True, option="--out's report")
    check_output_safe(checkpoint_folder(out), inputs, option="--out's checkpoint folder")
    check_writable(out, force)
    check_writable(report_path(out), force)
    if resume and not (checkpoint_folder(out) / "state.json").is_file():
        raise UsageError(f"nothing to resume: no checkpoint in {checkpoint_folder(out)}")


# --------------------------------------------------------------------------- models and data

def _materialize(spec: ModelSpec, role: str, unsafe_deserialization: bool, strategy) -> tuple[Any, str]:
    """A model from a path or a model object; under a strategy a model object is cloned into its scope."""
    from edgeqd.models import load_model

    if isinstance(spec, keras.Model):
        if strategy is None:
            return spec, spec.name
        try:
            clone = keras.models.clone_model(spec)
            clone.set_weights(spec.get_weights())
        except Exception as exc:
            raise ModelError(f"cannot copy the {role} {spec.name!r} into the distribution strategy "
                             f"({type(exc).__name__}); pass its file path instead") from None
        return clone, spec.name
    return load_model(spec, unsafe_deserialization=unsafe_deserialization), str(spec)


@dataclass
class _Models:
    """Teacher, student and data of a run, ready to train."""

    distiller: Distiller
    dataset: Dataset
    teacher_name: str
    student_settings: dict
    recipe: ResolvedRecipe


def _student(settings: DistillSettings, student, teacher_model, teacher_logits, dataset: Dataset,
             unsafe_deserialization: bool, strategy) -> tuple[Any, dict]:
    """The student model and what the report records of it (name, and width/depth of a built-in family)."""
    from edgeqd.distillation.students import STUDENTS, build_student, size_to_teacher
    from edgeqd.models import model_signature

    if student is not None or settings.student not in STUDENTS:
        model, name = _materialize(student if student is not None else settings.student, "student",
                                   unsafe_deserialization, strategy)
        return model, {"student": name}
    teacher_input, num_classes = model_signature(teacher_logits)
    sample_shape = tuple(d if d is not None else s for d, s in zip(teacher_input, dataset.input_shape)) \
        if len(teacher_input) == len(dataset.input_shape) else dataset.input_shape
    width = settings.width if settings.width is not None else size_to_teacher(
        settings.student, sample_shape, num_classes, teacher_model.count_params(), settings.depth)
    model = build_student(settings.student, sample_shape, num_classes, width, settings.depth)
    return model, {"student": settings.student, "width": width, "depth": settings.depth}


def _models(teacher: ModelSpec, data: DataSpec, settings: DistillSettings, student, losses: list,
            weights: list, seed: int, unsafe_deserialization: bool, strategy) -> _Models:
    """Load (or copy) the models, load the data as the teacher reads it, resolve the recipe, build the Distiller."""
    from edgeqd.data import load_for_model
    from edgeqd.distillation.students import STUDENTS
    from edgeqd.models import prove_on_data

    teacher_model, teacher_name = _materialize(teacher, "teacher", unsafe_deserialization, strategy)
    teacher_logits, _ = logits_model(teacher_model, "teacher")
    dataset = load_for_model(teacher_logits, data, seed=seed)
    check_distillable(teacher_logits, dataset, builtin_student=student is None and settings.student in STUDENTS)
    student_model, student_settings = _student(settings, student, teacher_model, teacher_logits, dataset,
                                               unsafe_deserialization, strategy)
    # Keras 3 translations proven again, on the real data
    proofs = {role: prove_on_data(model, dataset.x_train) for role, model in (("teacher", teacher_model),
                                                                              ("student", student_model))}
    recipe = resolve(settings, dataset.input_shape)
    distiller = Distiller(student_model, teacher_model, losses, weights, augmentation=recipe.augmentation)
    if not any(note.startswith("teacher") for note in distiller.notes):
        check_teacher_outputs_logits(distiller.teacher, dataset.x_train[:256])
    distiller.notes = (*distiller.notes, *recipe.notes, *(
        f"{role}: a Keras 3 model translated to tf_keras, proven on {proof['samples']} training samples "
        f"(max |Δ| {proof['max_abs_diff']:.2g}, {proof['relative_diff']:.2g} of the output scale)"
        for role, proof in proofs.items() if proof))
    return _Models(distiller, dataset, teacher_name, student_settings, recipe)


def _compile(models: _Models, settings: DistillSettings, steps_per_epoch: int) -> None:
    """Adam with the recipe's learning-rate schedule over the run's steps."""
    recipe = models.recipe
    rate = learning_rate(recipe.schedule, settings.learning_rate, recipe.epochs, steps_per_epoch,
                         recipe.warmup_epochs)
    models.distiller.compile(optimizer=keras.optimizers.Adam(rate))


def _tf_dataset(x: np.ndarray, y: Optional[np.ndarray], batch_size: int, shuffle: bool, seed: int,
                drop_remainder: bool):
    ds = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y.astype(np.int32)))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # In-memory data has no files to split: each worker takes every n-th element.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


@dataclass
class _Batches:
    """The batched splits of a run."""

    train: Any
    validation: Any
    evaluation: Any
    steps: int
    labelled: bool
    train_samples: int
    validation_samples: int


def _batches(dataset: Dataset, settings: DistillSettings, seed: int, strategy) -> _Batches:
    """Hold out the validation share and batch the splits; without labels the teacher term alone trains."""
    x_train, y_train, x_val, y_val = split_validation(dataset, settings.validation_fraction, seed)
    labelled = y_train is not None and y_val is not None
    if not labelled:
        y_train = y_val = None
    batch_size = settings.batch_size
    drop = strategy is not None and strategy.num_replicas_in_sync > 1
    if drop and len(x_train) < batch_size:
        raise DataError(f"{dataset.name}: {len(x_train)} training samples are fewer than one global batch "
                        f"({batch_size}) across {strategy.num_replicas_in_sync} replicas; lower --batch-size")
    eval_y = dataset.y_eval if labelled else None
    steps = len(x_train) // batch_size if drop else math.ceil(len(x_train) / batch_size)
    return _Batches(
        train=_tf_dataset(x_train, y_train, batch_size, True, seed, drop),
        validation=_tf_dataset(x_val, y_val, batch_size, False, seed, drop and len(x_val) >= batch_size),
        evaluation=_tf_dataset(dataset.x_eval, eval_y, batch_size, False, seed,
                               drop and len(dataset.x_eval) >= batch_size),
        steps=steps, labelled=labelled, train_samples=int(len(x_train)), validation_samples=int(len(x_val)))


def _report_settings(settings: DistillSettings, models: _Models, batches: _Batches, patience: Optional[int],
                     monitor: str, strategy, seed: int) -> dict:
    """The settings as the JSON report records them."""
    from edgeqd import __version__
    from edgeqd.documents import library_versions

    recipe = models.recipe
    return {
        "teacher": models.teacher_name, "data": models.dataset.name, **models.student_settings,
        "recipe": recipe.recipe, "resolved_recipe": recipe.to_dict(), "loss": recipe.loss,
        "tckd_weight": settings.tckd_weight if recipe.loss == "dkd" else None,
        "nckd_weight": settings.nckd_weight if recipe.loss == "dkd" else None,
        "temperature": float(settings.temperature), "alpha": float(settings.alpha) if batches.labelled else None,
        "labels": batches.labelled, "features": [str(p) for p in parse_layer_pairs(settings.features, "--feature")],
        "attention": [str(p) for p in parse_layer_pairs(settings.attention, "--attention")],
        "feature_weight": settings.feature_weight, "attention_weight": settings.attention_weight,
        "feature_loss": FeatureLoss(settings.feature_loss).value, "epochs": recipe.epochs,
        "batch_size": settings.batch_size, "learning_rate": settings.learning_rate, "optimizer": "adam",
        "schedule": recipe.schedule, "warmup_epochs": recipe.warmup_epochs if recipe.schedule == "cosine" else None,
        "patience": patience,
        "validation_fraction": settings.validation_fraction, "monitor": monitor, "strategy": settings.strategy,
        "replicas": strategy.num_replicas_in_sync if strategy is not None else 1, "seed": seed,
        "train_samples": batches.train_samples, "validation_samples": batches.validation_samples,
        "evaluation_samples": int(len(models.dataset.x_eval)), "edgeqd": __version__, "libraries": library_versions(),
    }


# --------------------------------------------------------------------------- training

@dataclass
class _Run:
    """How this process runs: where it writes, whether it is the chief, and the run's switches."""

    out: Optional[Path]
    chief: bool
    scope: Any  # a fresh context manager per call: a strategy's scope can be entered only once per object
    force: bool
    resume: bool
    progress: bool
    callbacks: Sequence
    patience: Optional[int]
    started: float


def _fit(distiller: Distiller, batches: _Batches, epochs: int, keeper: BestEpochKeeper,
         checkpoints: Optional[Checkpoints], run_callbacks: list, resume: bool) -> None:
    """Train from the keeper's epoch on; Ctrl-C keeps a checkpoint, a full disk keeps nothing of this run."""
    from edgeqd.atomic import NoRoomError

    if keeper.epochs_done >= epochs or keeper.patience_spent:
        return
    try:
        distiller.fit(batches.train, validation_data=batches.validation, epochs=epochs,
                      initial_epoch=keeper.epochs_done, callbacks=run_callbacks, verbose=0)
    except KeyboardInterrupt:
        if checkpoints is not None:
            checkpoints.save(keeper)
            if checkpoints.chief:
                from rich.console import Console

                Console(stderr=True).print(
                    f"interrupted after {keeper.epochs_done} epoch(s): checkpoint saved in "
                    f"{checkpoints.folder}; run the same command with --resume to go on", highlight=False)
        raise
    except NoRoomError:
        if checkpoints is not None and not resume:  # this run's checkpoint: give the space back
            checkpoints.remove()
        raise
    except tf.errors.OpError as exc:
        first = (exc.message or type(exc).__name__).strip().splitlines()[0][:300]
        raise DistillationError(f"training failed inside TensorFlow ({type(exc).__name__}: {first})") from None


def _result(models: _Models, batches: _Batches, keeper: BestEpochKeeper, report: dict, run: _Run,
            resumed_from: Optional[int]) -> DistillResult:
    """Evaluate the best epoch's student on the evaluation split and gather the figures."""
    distiller = models.distiller
    if keeper.best_weights is not None:
        distiller.student.set_weights(keeper.best_weights)
    figures = distiller.evaluate(batches.evaluation, verbose=0, return_dict=True)
    notes = list(distiller.notes)
    if keeper.stopped_early:
        notes.append(f"stopped early after epoch {keeper.epochs_done}: no better {keeper.monitor} "
                     f"for {keeper.patience} epochs")
    if resumed_from is not None:
        notes.append(f"resumed from epoch {resumed_from}")
    written = run.out is not None and run.chief
    return DistillResult(
        student_path=str(run.out) if written else None,
        report_path=str(report_path(run.out)) if written else None,
        student_params=int(distiller.student.count_params()), teacher_params=int(distiller.teacher.count_params()),
        student_accuracy=float(figures["accuracy"]) if batches.labelled else None,
        teacher_accuracy=float(figures["teacher_accuracy"]) if batches.labelled else None,
        agreement=float(figures["agreement"]), best_epoch=keeper.best_epoch, epochs_run=keeper.epochs_done,
        seconds=round(time.monotonic() - run.started, 2), history=tuple(keeper.history), settings=report,
        notes=tuple(notes), student=distiller.student)


def _train(models: _Models, batches: _Batches, epochs: int, report: dict,
           run: _Run) -> tuple[DistillResult, Optional[Checkpoints]]:
    """Restore a checkpoint when resuming, fit with the keeper (and progress), and gather the result."""
    distiller = models.distiller
    checkpoints = Checkpoints(checkpoint_folder(run.out), distiller, run.chief, report) if run.out else None
    state, best_weights = None, None
    if run.resume:
        with run.scope():
            state, best_weights = checkpoints.restore()
    keeper = BestEpochKeeper(distiller.student, report["monitor"], run.patience, checkpoints, state)
    keeper.best_weights = best_weights
    run_callbacks: list = [keeper]
    if run.progress and run.chief:
        terms = [t for t in ("loss", "ce", "kd", "feature", "attention", "accuracy", "agreement")
                 if t != "ce" or batches.labelled]
        run_callbacks.append(EpochProgress(epochs, batches.steps, keeper, terms))
    run_callbacks.extend(run.callbacks)
    initial_epoch = keeper.epochs_done
    _fit(distiller, batches, epochs, keeper, checkpoints, run_callbacks, run.resume)
    return _result(models, batches, keeper, report, run, initial_epoch if run.resume else None), checkpoints


def _save(result: DistillResult, run: _Run, checkpoints: Checkpoints, flavour: str, samples) -> DistillResult:
    """Write the student (as Keras 3 for a Keras 3 user) and its report (the chief; other workers save to
    scratch), then drop the checkpoints. Returns the result, with a note on the Keras 3 check."""
    from edgeqd.atomic import NoRoomError, scratch_dir, write_bytes_atomic
    from edgeqd.documents import to_json
    from edgeqd.models import save_keras3, save_model

    out = run.out
    if not run.chief:  # every worker saves (collective reads); the others throw theirs away
        with scratch_dir() as scratch:
            result.student.save(scratch / out.name)
        checkpoints.remove()
        return result
    saved = False
    try:
        if flavour == "keras3":
            figures = save_keras3(result.student, out, force=run.force, samples=samples)
            result = dataclasses.replace(result, notes=(*result.notes, (
                f"student written for Keras 3 (like the model brought): keras.saving.load_model reloads it with "
                f"max |Δ| {figures['max_abs_diff']:.3g} from the trained student on {figures['samples']} samples")))
        else:
            save_model(result.student, out, force=run.force)
        saved = True
        write_bytes_atomic(report_path(out), to_json(result.to_dict(), "the distillation report").encode(),
                           force=run.force)
    except NoRoomError:  # a full disk: leave nothing of this run behind
        if saved:
            Path(out).unlink(missing_ok=True)
        if not run.resume:
            checkpoints.remove()
        raise
    checkpoints.remove()
    return result


def distill(teacher: ModelSpec, data: DataSpec, settings: Optional[DistillSettings] = None,
            out: Optional[Union[str, Path]] = None, *, student: Optional[keras.Model] = None, seed: int = 0,
            force: bool = False, unsafe_deserialization: bool = False, progress: bool = True,
            resume: bool = False, callbacks: Sequence[keras.callbacks.Callback] = ()) -> DistillResult:
    """Distil a student from ``teacher`` on ``data`` and save it to ``out`` with a JSON report beside it.

    Everything is checked before training starts (settings, shapes, layer names, the
    output path); nothing is written on an error. The recipe (``settings.recipe``, see
    :mod:`~edgeqd.distillation.recipes`) decides loss, augmentation, epochs and schedule
    unless the settings say otherwise; the report records both. While training, the last
    epoch is checkpointed in a hidden folder beside ``out`` (:func:`checkpoint_folder`) so
    that an interrupted run (Ctrl-C included) goes on with ``resume=True``; the folder is
    removed when the run completes. The student saved is the one with the best validation
    figure (accuracy with labels, else agreement with the teacher) on a seeded hold-out of
    the training split.

    Args:
        teacher: the trained teacher: a model path (``.keras``, ``.h5``, SavedModel) or a ``tf_keras`` model.
        data: ``"fashion-mnist"``, an ``.npz`` or image folder path, or a :class:`Dataset`.
            Unlabelled data distils with the teacher term alone.
        settings: the :class:`~edgeqd.settings.DistillSettings` (recipe, student family or path,
            T, α, feature/attention pairs, epochs, …); None for the defaults.
        out: where to save the student (``.keras`` or ``.h5``); None saves nothing and keeps no checkpoints.
        student: a ``tf_keras`` model to distil into, instead of ``settings.student``.
        seed: seed for weights, the hold-out split, shuffling, augmentation and dropout.
        force: replace an existing ``out`` and its report.
        unsafe_deserialization: allow Lambda layers in model files.
        progress: show a progress bar and one line per epoch on stderr.
        resume: go on from the checkpoint a previous, interrupted run left beside ``out``.
        callbacks: extra Keras callbacks for ``fit``.

    Returns:
        A :class:`DistillResult` with the figures, the settings and the trained student.

    >>> result = distill("teacher.keras", "fashion-mnist", DistillSettings(student="cnn"), "student.keras")  # doctest: +SKIP
    >>> result.student_accuracy, result.settings["recipe"]  # doctest: +SKIP
    (0.89, 'consistent')
    """
    started = time.monotonic()
    # Settings first: a typo fails in milliseconds, before any model is loaded.
    if settings is None:
        settings = DistillSettings()
    if not isinstance(settings, DistillSettings):
        raise UsageError(f"settings must be a DistillSettings, got {type(settings).__name__} "
                         f"(write DistillSettings(student={settings!r}) for a student spec)")
    if student is not None and not isinstance(student, keras.Model):
        raise UsageError("student= takes a tf_keras model; give a path or family as DistillSettings(student=...)")
    _check_student_spec(settings, student)
    losses, weights = _losses(settings)
    if resume and out is None:
        raise UsageError("--resume needs --out: checkpoints live beside the output")
    strategy = make_strategy(settings.strategy)  # must exist before TensorFlow runs anything else
    run = _Run(out=Path(out) if out is not None else None, chief=is_chief(strategy),
               scope=strategy.scope if strategy is not None else contextlib.nullcontext, force=force,
               resume=resume, progress=progress, callbacks=tuple(callbacks), patience=None, started=started)
    if run.out is not None and run.chief:
        _check_outputs(run.out, [teacher, data, student if student is not None else settings.student], force, resume)
    flavour = brought_flavour(teacher, student if student is not None else settings.student)
    if run.out is not None and flavour == "keras3" and run.out.suffix != ".keras":
        raise UsageError(f"{run.out}: the model brought is a Keras 3 model, so the student is written for Keras 3, "
                         "as .keras (Keras 3 cannot always read back the legacy .h5 it writes)")

    keras.utils.set_random_seed(seed)
    with run.scope():
        models = _models(teacher, data, settings, student, losses, weights, seed, unsafe_deserialization, strategy)
    batches = _batches(models.dataset, settings, seed, strategy)
    run.patience = models.recipe.patience or None  # patience 0: never stop early
    with run.scope():
        _compile(models, settings, batches.steps)
    monitor = "val_accuracy" if batches.labelled else "val_agreement"
    report = _report_settings(settings, models, batches, run.patience, monitor, strategy, seed)
    result, checkpoints = _train(models, batches, models.recipe.epochs, report, run)
    if run.out is not None:
        result = _save(result, run, checkpoints, flavour, models.dataset.x_eval)
    return result
