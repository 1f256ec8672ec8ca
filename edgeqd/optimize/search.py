"""``optimize``: from a teacher and a budget to the best student on the real device.

One Optuna study (:mod:`edgeqd.optimize.study`) proposes candidates
(:mod:`edgeqd.optimize.space`); each is measured cheaply first — exact size and device
latency of the untrained artifact (:mod:`edgeqd.optimize.measure`) — and pruned without
training when it cannot meet a size or latency budget; survivors are distilled, [QAT-ed,]
converted and verified by the pipeline (:mod:`edgeqd.optimize.train`). The main process
then writes ``DIR/best/`` (the chosen candidate's convert output), ``DIR/candidates.json``
and ``DIR/report.html``; ``worker=True`` processes only add trials to the study.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from edgeqd.errors import ConversionError, EdgeqdError, UsageError
from edgeqd.optimize import results
from edgeqd.optimize.settings import OptimizeSettings

SCHEMA = "edgeqd-optimize/1"
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class OptimizeResult:
    """What a search produced.

    Attributes:
        out: the output folder.
        document: the content of ``candidates.json`` (for a worker: its trial rows only).
        chosen: the chosen trial's row, or None.
        problem: why nothing was chosen (exit 4), or None.
    """

    out: Path
    document: dict[str, Any]
    chosen: Optional[dict] = None
    problem: Optional[str] = None

    def raise_for_problems(self) -> None:
        """Raise :class:`ConversionError` (exit 4) when no candidate met the budget."""
        if self.problem:
            raise ConversionError(self.problem)


@dataclass
class _Search:
    """The state the objective needs in every trial."""

    settings: OptimizeSettings
    out: Path
    teacher: Any
    teacher_accuracy: float
    selection: Any
    space: Any
    devices: Any
    student_file: Optional[str]
    unsafe: bool
    worker: str
    scratch: Path
    report: ProgressCallback
    best: str = "none yet"
    objectives: tuple = field(default_factory=tuple)


def _duplicate(trial, study) -> Optional[int]:
    """The number of another trial (finished or running) with the same candidate."""
    from optuna.trial import TrialState

    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                           TrialState.RUNNING)):
        if other.number != trial.number and other.params == trial.params:
            return other.number
    return None


def _prune(trial, status: str, reason: str) -> None:
    import optuna

    trial.set_user_attr("status", status)
    trial.set_user_attr("reason", reason)
    raise optuna.TrialPruned(reason)


def _objective(search: _Search, trial) -> list[float]:
    """One candidate: cheap figures, pruning against the budgets, then training and verification."""
    from edgeqd.optimize.measure import build_untrained, write_artifact
    from edgeqd.optimize.space import suggest
    from edgeqd.optimize.study import set_constraints
    from edgeqd.optimize.train import train_candidate

    settings, started = search.settings, time.monotonic()
    candidate = suggest(trial, search.space)
    trial.set_user_attr("worker", search.worker)
    step = f"trial {trial.number}: {candidate.label}"
    done = sum(t.state.name == "COMPLETE" for t in trial.study.get_trials(deepcopy=False))
    search.report(f"{step} · measuring · best so far: {search.best}", done, settings.trials)
    twin = _duplicate(trial, trial.study)
    if twin is not None:
        trial.set_user_attr("duplicate_of", twin)
        _prune(trial, "duplicate", f"same candidate as trial {twin}")
    try:
        workdir = search.scratch / f"trial-{trial.number}"
        model = build_untrained(candidate, search.selection.input_shape, len(search.selection.class_names),
                                search.student_file, search.unsafe)
        trial.set_user_attr("params", int(model.count_params()))
        artifact = workdir / "untrained.tflite"
        size = write_artifact(model, candidate.untrained_format, search.selection, artifact, workdir / "convert")
        trial.set_user_attr("size_bytes", size)
        trial.set_user_attr("size_untrained_bytes", size)
        trial.set_user_attr("size_kb", round(size / 1024, 3))
        mixed = candidate.precision == "mixed"
        if settings.max_size_kb is not None and size / 1024 > settings.max_size_kb:
            _prune(trial, "pruned", f"{size:,} B > --max-size-kb {settings.max_size_kb:g} "
                                    f"({settings.max_size_kb * 1024:,.0f} B; "
                                    f"{'all-int4 lower bound' if mixed else 'exact'}, untrained)")
        # A mixed candidate's latency depends on the bits its search picks: measured on the shipped file.
        latency = None if mixed else search.devices.latency_ms(artifact)
        if latency is not None:
            trial.set_user_attr("latency_ms", round(latency, 4))
            if settings.max_latency_ms is not None and latency > settings.max_latency_ms:
                _prune(trial, "pruned", f"{latency:.3g} ms > --max-latency-ms {settings.max_latency_ms:g} "
                                        f"(measured untrained on {search.devices.spec})")
        out = search.out / "trials" / f"trial-{trial.number:04d}"
        figures = train_candidate(candidate, settings, search.teacher, search.selection, out, search.student_file,
                                  search.unsafe, lambda s, d, t: search.report(f"{step} · {s} · best so far: "
                                                                               f"{search.best}", done,
                                                                               settings.trials))
        if mixed:
            latency = search.devices.latency_ms(out / Path(figures["file"]).name)
            if latency is not None:
                trial.set_user_attr("latency_ms", round(latency, 4))
    except EdgeqdError as exc:
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("reason", str(exc)[:500])
        raise
    drop = round(100.0 * (search.teacher_accuracy - figures["accuracy"]), 3)
    for key, value in {**figures, "drop_pts": drop, "size_bytes": figures["size_bytes"],
                       "size_kb": round(figures["size_bytes"] / 1024, 3), "trial_dir": str(out.resolve()),
                       "host": socket.gethostname(), "seconds": round(time.monotonic() - started, 1),
                       "status": "trained"}.items():
        trial.set_user_attr(key, value)
    values = {"drop_pts": drop, "size_kb": round(figures["size_bytes"] / 1024, 3), "latency_ms": latency}
    set_constraints(trial, values, settings.budgets())
    return [float(values[name]) for name in search.objectives]


def _best_so_far(search: _Search, study) -> None:
    """Update the progress line's best feasible candidate (an Optuna callback)."""
    rows = results.trial_rows(study)
    marked = results.mark(rows, search.settings.budgets(), search.objectives)
    row = results.chosen_row(rows, marked["chosen"])
    if row is not None:
        search.best = f"trial {row['number']} {row['candidate']['label']} " + ", ".join(
            results._fmt(n, row[n]) for n in search.objectives)


def _prepare_out(out: Path, inputs: list, force: bool, resume: bool, worker: bool, storage: Optional[str]) -> None:
    """Refuse to overwrite a previous search unless asked (``--force``, ``--resume``, ``--worker``)."""
    from edgeqd.atomic import check_output_safe

    check_output_safe(out, inputs)
    if resume and worker:
        raise UsageError("give --resume or --worker, not both (a worker always joins the study as it is)")
    if resume and storage is None and not (out / "study.db").is_file():
        raise UsageError(f"--resume: no study to continue in {out} (no study.db)")
    if not (resume or worker) and out.exists() and any(out.iterdir()):
        if not force:
            raise UsageError(f"{out} exists: --resume to continue its search, --force to start over")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _study_config(settings: OptimizeSettings, space, objectives: tuple, teacher, dataset, devices) -> dict:
    """What every process of one study must agree on (checked when joining)."""
    return {"objectives": list(objectives), "budgets": settings.budgets(), "space": dataclasses.asdict(space),
            "epochs": settings.epochs, "qat_epochs": settings.qat_epochs, "seed": settings.seed,
            "test_fraction": settings.test_fraction, "train_samples": settings.train_samples,
            "teacher_params": int(teacher.count_params()), "device": devices.spec,
            "data": {"train": int(len(dataset.x_train)), "eval": int(len(dataset.x_eval)),
                     "input_shape": [int(d) for d in dataset.input_shape]}}


def _run_trials(search: _Search, study, worker: bool) -> None:
    """Ask Optuna for trials until the study has trained enough candidates (all workers together)."""
    import optuna

    from edgeqd.optimize.study import MAX_PROPOSALS_PER_TRIAL, counts, finished, wait_for_running

    settings = search.settings
    with warnings.catch_warnings():  # experimental in Optuna's eyes since 2.9; edgeqd relies on it for --resume
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a killed run's trial, silent past the heartbeat's grace: failed

    def stop(study, trial) -> None:
        _best_so_far(search, study)
        if finished(study, settings):
            study.stop()

    for _ in range(3):  # again when another worker's trial failed and left the count short
        if not finished(study, settings):
            left = MAX_PROPOSALS_PER_TRIAL * settings.trials - counts(study)["all"]
            study.optimize(lambda trial: _objective(search, trial), n_trials=max(left, 0), callbacks=[stop],
                           catch=(EdgeqdError,), gc_after_trial=True)
        if worker:
            return
        wait_for_running(study)
        if finished(study, settings):
            return


def _ship_best(search: _Search, row: dict, test, teacher_test: float) -> dict:
    """Copy the chosen trial's convert output to ``DIR/best`` (rebuilt here when trained elsewhere); its held-out figure."""
    from edgeqd.atomic import atomic_dir
    from edgeqd.optimize.space import from_params
    from edgeqd.optimize.train import artifact_accuracy, train_candidate

    source = Path(row["trial_dir"] or "")
    rebuilt = not (source.is_dir() and (source / (row["file"] or "")).is_file())
    if rebuilt:  # trained by a worker on another machine: the same seed and settings rebuild it here
        candidate = from_params({**row["candidate"]})
        source = search.scratch / "rebuilt"
        train_candidate(candidate, search.settings, search.teacher, search.selection, source, search.student_file,
                        search.unsafe)
    with atomic_dir(search.out / "best", force=True) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
    accuracy = artifact_accuracy(search.out / "best" / row["file"], test.x_eval, test.y_eval)
    drop = round(100.0 * (teacher_test - accuracy), 3)
    limit = search.settings.max_drop
    return {"trial": row["number"], "samples": int(len(test.x_eval)), "accuracy": accuracy,
            "teacher_accuracy": teacher_test, "drop_pts": drop, "rebuilt_here": rebuilt,
            "within_max_drop": None if limit is None else drop <= limit}


def _summary(document: dict) -> str:
    chosen = results.chosen_row(document["candidates"], document["chosen"])
    counted = {s: sum(r["status"] == s for r in document["candidates"]) for s in ("trained", "pruned", "failed")}
    head = (f"{len(document['candidates'])} trials: {counted['trained']} trained, {counted['pruned']} pruned before "
            f"training, {counted['failed']} failed")
    if chosen is None:
        return head + "; no candidate meets the budget"
    held = document["held_out"]
    figures = ", ".join(results._fmt(n, chosen[n]) for n in document["objectives"])
    return (f"{head}; chosen trial {chosen['number']} ({chosen['candidate']['label']}, {chosen['quantization']}): "
            f"{figures} on the selection split; {held['drop_pts']:.3g} pts below the teacher on "
            f"{held['samples']} held-out samples the search never saw")


def _write_outputs(search: _Search, study, storage_url: str, teacher_figures, test) -> OptimizeResult:
    """``candidates.json``, ``report.html`` and ``best/`` in the main process."""
    from edgeqd.atomic import atomic_file
    from edgeqd.documents import to_json
    from edgeqd.optimize.report import render
    from edgeqd.optimize.study import redact

    budgets = search.settings.budgets()
    rows = results.trial_rows(study)
    marked = results.mark(rows, budgets, search.objectives)
    chosen = results.chosen_row(rows, marked["chosen"])
    note = ("measured on " + str(search.devices.spec)) if search.devices.measures_latency else \
        ("no --device given" if search.devices.spec is None else
         f"{', '.join(search.devices.emulated)} is emulated: its latency is not a device latency")
    document = {"schema": SCHEMA, "study": search.settings.study_name, "storage": redact(storage_url),
                "objectives": list(search.objectives), "budgets": budgets, "latency_note": note,
                "teacher": teacher_figures.to_dict(), "settings": search.settings.to_dict(),
                "chosen": marked["chosen"], "front": marked["front"], "held_out": None, "candidates": rows}
    problem = None
    if chosen is not None:
        document["held_out"] = _ship_best(search, chosen, test, teacher_figures.accuracy_test)
    else:
        problem = results.no_candidate_message(rows, budgets)
        document["relax"] = results.relax_advice(rows, budgets)
    document["summary"] = _summary(document)
    with atomic_file(search.out / "candidates.json", force=True) as tmp:
        tmp.write_text(to_json(document, "candidates.json") + "\n", encoding="utf-8")
    with atomic_file(search.out / "report.html", force=True) as tmp:
        tmp.write_text(render(document), encoding="utf-8")
    return OptimizeResult(search.out, document, chosen, problem)


def optimize(teacher: str | Path | Any, data: Any, out: str | Path, settings: Optional[OptimizeSettings] = None, *,
             device: Optional[str] = None, student: Optional[str | Path] = None, storage: Optional[str] = None,
             resume: bool = False, worker: bool = False, force: bool = False, unsafe_deserialization: bool = False,
             progress: Optional[ProgressCallback] = None) -> OptimizeResult:
    """Search students of ``teacher`` for the best artifact within the budgets, measured on ``device``.

    Args:
        teacher: the trained teacher (a model path or a ``tf_keras`` model).
        data: ``fashion-mnist``, an ``.npz``, an image folder, or a loaded Dataset (labelled).
        out: the output folder: ``study.db``, ``trials/``, ``best/``, ``candidates.json``, ``report.html``.
        settings: budgets, the search space and the trial budget (:class:`OptimizeSettings`).
        device: where latency is measured: a device spec (``local``, ``ssh://pi@host``, ``adb:SERIAL``) or a
            devices file; an emulated device (qemu) gives no latency and refuses a latency budget.
        student: the user's own student file, tried as one more (fixed) candidate.
        storage: an Optuna storage URL shared by workers (default ``sqlite:///DIR/study.db``).
        resume: continue the study in ``out`` / ``storage`` (up to ``settings.trials`` trained in all).
        worker: join the study (created if missing) and add trials; write no final outputs.
        force: start over, replacing an existing ``out``.
        unsafe_deserialization: allow model files whose layers carry code.
        progress: called as ``progress(step, done, total)``; ``done`` counts trained candidates.

    Returns:
        An :class:`OptimizeResult`; ``raise_for_problems()`` turns "no candidate meets the budget" into exit 4.

    >>> optimize("teacher.keras", "fashion-mnist", "opt/", OptimizeSettings(max_size_kb=64, max_drop=1),
    ...          device="local")  # doctest: +SKIP
    """
    from edgeqd.atomic import scratch_dir
    from edgeqd.data import load_for_model
    from edgeqd.optimize.measure import accuracy, check_classification, resolve_devices, teacher_figures
    from edgeqd.optimize.space import FILE_FAMILY, build_space
    from edgeqd.optimize.study import constraints_for, make_sampler, objectives, open_storage, open_study
    from edgeqd.optimize.train import split_held_out, subset_train
    from edgeqd.pipeline import load_keras

    settings = settings or OptimizeSettings()
    out = Path(out)
    devices = resolve_devices(device, settings.max_latency_ms, settings.bench_runs)
    _prepare_out(out, [teacher, data, student], force, resume, worker, storage)
    storage_url = storage or f"sqlite:///{out.resolve() / 'study.db'}"
    report = progress or (lambda step, done, total: None)
    report("loading the teacher and the data", 0, settings.trials)
    teacher_model, _ = load_keras(teacher, "teacher", unsafe_deserialization)
    dataset = load_for_model(teacher_model, data, seed=settings.seed)
    check_classification(dataset)
    dataset = subset_train(dataset, settings.train_samples, settings.seed)
    selection, test = split_held_out(dataset, settings.test_fraction, settings.seed)
    space = build_space(settings, dataset.input_shape, str(student) if student is not None else None)
    names = objectives(devices.measures_latency)
    name = None if not worker else f"{socket.gethostname()}-{os.getpid()}"
    sampler = make_sampler(settings, constraints_for(settings.budgets()), name)
    study = open_study(open_storage(storage_url), settings,
                       _study_config(settings, space, names, teacher_model, dataset, devices), sampler,
                       create=not (resume or worker), join=resume or worker)
    if student is not None and not study.get_trials(deepcopy=False):
        study.enqueue_trial({"family": FILE_FAMILY, "precision": space.precisions[0], "recipe": space.recipes[0]})
    with scratch_dir("edgeqd-optimize") as scratch:
        figures = None
        if not worker:  # measured first: an unreachable device fails here, before any trial
            report("measuring the teacher", 0, settings.trials)
            figures = teacher_figures(teacher_model, selection, test, devices, scratch)
        search = _Search(settings, out, teacher_model, accuracy(teacher_model, selection.x_eval, selection.y_eval),
                         selection, space, devices, str(student) if student is not None else None,
                         unsafe_deserialization, name or "main", scratch, report, objectives=names)
        _run_trials(search, study, worker)
        if worker:
            rows = results.trial_rows(study)
            return OptimizeResult(out, {"schema": SCHEMA, "study": settings.study_name, "worker": name,
                                        "candidates": rows, "summary": f"worker {name}: study has {len(rows)} trials"})
        report("writing best/, candidates.json and report.html", settings.trials, settings.trials)
        return _write_outputs(search, study, storage_url, figures, test)
