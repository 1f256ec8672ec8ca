"""``edgeqd optimize``: search students of a teacher for the best artifact within a budget.

Multi-objective (accuracy drop, size, latency on a real device) with the budgets as
constraints, in an Optuna study that several workers can share; candidates that cannot
meet a size or latency budget are pruned before any training. The modules, in the order
a trial meets them:

* :mod:`~edgeqd.optimize.settings` — :class:`OptimizeSettings` (budgets, space, trials);
* :mod:`~edgeqd.optimize.space` — the candidates (family × width × depth × precision × recipe);
* :mod:`~edgeqd.optimize.measure` — exact size and device latency of the untrained artifact;
* :mod:`~edgeqd.optimize.train` — distil, [QAT,] convert and verify through the pipeline;
* :mod:`~edgeqd.optimize.study` — Optuna: storage, sampler, constraints, stopping;
* :mod:`~edgeqd.optimize.results` — rows, Pareto front, the choice, what to relax;
* :mod:`~edgeqd.optimize.report` — ``report.html``;
* :mod:`~edgeqd.optimize.search` — :func:`optimize`, the whole search.
"""

from edgeqd.optimize.settings import OptimizeSettings
from edgeqd.optimize.search import OptimizeResult, optimize

__all__ = ["optimize", "OptimizeSettings", "OptimizeResult"]
