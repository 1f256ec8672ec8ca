"""The Optuna side: storage, sampler, budgets as constraints, when to stop.

Every figure of a trial is stored in the study itself (``trial.user_attrs``), so any
process that opens the study — a ``--worker`` on another machine, a ``--resume`` after an
interruption — sees every candidate. Storage is SQLite (``DIR/study.db``) by default or any
SQLAlchemy URL (``postgresql://…``) shared by workers; a heartbeat marks trials of a
worker that died as failed, so nobody waits for them forever.
"""

from __future__ import annotations

import json
import time
import warnings
import zlib
from typing import Any, Callable, Optional

from edgeqd.errors import UsageError
from edgeqd.optimize.settings import OptimizeSettings

OBJECTIVES = ("drop_pts", "size_kb", "latency_ms")
MAX_PROPOSALS_PER_TRIAL = 5  # candidates proposed per one trained: pruned ones are cheap, not free
HEARTBEAT_S = 20
GRACE_S = 90


def objectives(measures_latency: bool) -> tuple:
    """The objectives minimised: drop and size, and latency where a real device measures it.

    Args:
        measures_latency: whether a real device measures latency.
    """
    return OBJECTIVES if measures_latency else OBJECTIVES[:2]


def open_storage(url: str):
    """An Optuna RDB storage for ``url`` (``sqlite:///DIR/study.db``, ``postgresql://…``).

    Args:
        url: a SQLAlchemy database URL.

    Raises:
        UsageError: the URL is malformed or its database driver is missing (exit 2).
    """
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several worker processes write one SQLite file: wait for its lock instead of failing.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    # Optuna logs every trial at INFO and flags heartbeats as experimental: edgeqd's progress and
    # candidates.json say what happened; its own warnings (a failed trial) still show.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, **kwargs)
    except ImportError as exc:
        raise UsageError(f"--storage {redact(url)}: its database driver is not installed ({exc}); e.g. "
                         "`pip install 'edgeqd[postgresql]'` (psycopg) for postgresql://") from None
    except Exception as exc:  # SQLAlchemy's ArgumentError, OperationalError: one line, not a traceback
        raise UsageError(f"--storage {redact(url)}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None


def redact(url: str) -> str:
    """``url`` without its password, for messages and documents.

    Args:
        url: a database URL.

    >>> redact("postgresql://ann:secret@db:5432/edgeqd")
    'postgresql://ann:***@db:5432/edgeqd'
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, at, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def constraint_values(figures: dict, budgets: dict) -> dict[str, float]:
    """One value per budget, feasible when every value is <= 0 (Optuna's convention).

    Args:
        figures: the trial's figures (``size_kb``, ``drop_pts``, ``latency_ms``).
        budgets: ``{"drop_pts": 1.0, "size_kb": 16.0, …}`` (:meth:`OptimizeSettings.budgets`).

    >>> constraint_values({"size_kb": 20.0, "drop_pts": 0.5}, {"size_kb": 16.0, "drop_pts": 1.0})
    {'drop_pts': -0.5, 'size_kb': 4.0}
    """
    return {name: float(figures[name]) - budgets[name] if figures.get(name) is not None else 0.0
            for name in sorted(budgets)}


def set_constraints(trial, figures: dict, budgets: dict) -> None:
    """Record the budgets as constraints on ``trial`` (Optuna >= 5: ``Trial.set_constraint``).

    Args:
        trial: the running ``optuna.Trial``.
        figures: its figures.
        budgets: the budgets that are set.
    """
    values = constraint_values(figures, budgets)
    if hasattr(trial, "set_constraint"):
        for name, value in values.items():
            trial.set_constraint(name, value)
    else:  # Optuna 4: read back by the sampler's constraints_func
        trial.set_user_attr("constraints", [values[n] for n in sorted(values)])


def constraints_for(budgets: dict) -> Optional[Callable]:
    """The ``constraints_func`` samplers take on Optuna 4 (None on Optuna >= 5, or without budgets).

    Args:
        budgets: the budgets that are set.
    """
    import optuna

    if not budgets or hasattr(optuna.trial.Trial, "set_constraint"):
        return None
    return lambda trial: trial.user_attrs.get("constraints", [0.0] * len(budgets))


def make_sampler(settings: OptimizeSettings, constraints: Optional[Callable], worker: Optional[str]):
    """The sampler of this process; workers get their own seed so that they do not propose the same candidates.

    Args:
        settings: the search settings (sampler, seed, trials).
        constraints: the constraints function, or None.
        worker: this worker's name (None for the main process).
    """
    import optuna

    seed = settings.seed if worker is None else (settings.seed * 7919 + zlib.crc32(worker.encode())) % 2 ** 31
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if settings.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if settings.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=max(4, min(50, settings.trials)), seed=seed,
                                                 constraints_func=constraints)
        # Few trials: random start-up for a third of them, then TPE on the rest.
        return optuna.samplers.TPESampler(n_startup_trials=max(2, min(10, settings.trials // 3)), seed=seed,
                                          multivariate=True, group=True, constraints_func=constraints)


def open_study(storage, settings: OptimizeSettings, config: dict, sampler, create: bool, join: bool):
    """Create or load the study and check it was started with the same search.

    Args:
        storage: the Optuna storage.
        settings: the search settings.
        config: what must agree across processes of one study (objectives, budgets, space, data, teacher).
        sampler: this process's sampler.
        create: start a new study (refused when one of that name exists).
        join: load it, creating it when missing (``--worker``, ``--resume``).
    """
    import optuna

    names = config["objectives"]
    existing = {s.study_name for s in storage.get_all_studies()}
    name = settings.study_name
    if create and name in existing:
        raise UsageError(f"study {name!r} exists already in the storage: --resume to continue it, --worker to join "
                         "it, --force to start over (DIR only) or another --study-name")
    if not create and not join and name not in existing:
        raise UsageError(f"no study {name!r} in the storage")
    study = optuna.create_study(storage=storage, study_name=name, directions=["minimize"] * len(names),
                                sampler=sampler, load_if_exists=True)
    config = json.loads(json.dumps(config))  # as the storage gives it back: tuples are lists
    started = study.user_attrs.get("config")
    if started is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(names))
        study.set_user_attr("config", config)
    else:
        differ = sorted(k for k in set(config) | set(started) if config.get(k) != started.get(k))
        if differ:
            raise UsageError(f"study {name!r} was started with other settings ({', '.join(differ)}: "
                             f"{', '.join(f'{started.get(k)!r}' for k in differ)}); give the same ones, or "
                             "another --study-name")
    return study


def counts(study) -> dict:
    """How many trials the study holds, by state (``complete``, ``pruned``, ``fail``, ``running``, ``all``).

    Args:
        study: the Optuna study.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    out = {state.name.lower(): 0 for state in TrialState}
    for trial in trials:
        out[trial.state.name.lower()] += 1
    out["all"] = len(trials)
    return out


def finished(study, settings: OptimizeSettings) -> bool:
    """Whether the study has trained enough candidates (trials running elsewhere count) or proposed too many.

    Args:
        study: the Optuna study.
        settings: the search settings.
    """
    n = counts(study)
    return (n["complete"] + n["running"] >= settings.trials
            or n["all"] >= MAX_PROPOSALS_PER_TRIAL * settings.trials)


def wait_for_running(study, timeout_s: float = 6 * 3600, poll_s: float = 2.0) -> None:
    """Wait until no trial of the study runs (other workers'); those of dead workers fail by heartbeat.

    Args:
        study: the Optuna study.
        timeout_s: give up waiting after this long.
        poll_s: seconds between looks.
    """
    import optuna

    deadline = time.monotonic() + timeout_s
    while counts(study)["running"] and time.monotonic() < deadline:
        optuna.storages.fail_stale_trials(study)
        time.sleep(poll_s)
