"""Training on more than one device or machine: the ``tf.distribute`` strategy asked for,
and which process writes the outputs."""

from __future__ import annotations

import json
import os
from typing import Optional

import tensorflow as tf

from edgeqd.errors import UsageError
from edgeqd.types import DistributionStrategy


def make_strategy(strategy: Optional[str]):
    """The ``tf.distribute`` strategy asked for, or None for plain single-device training.

    A multi-worker strategy reads the cluster from ``TF_CONFIG`` and must be created
    before TensorFlow runs anything else in the process.

    Args:
        strategy: None, ``"mirrored"`` or ``"multiworker"``.

    Raises:
        UsageError: an unknown strategy, or ``TF_CONFIG`` missing or malformed.

    >>> make_strategy(None) is None
    True
    """
    if strategy is None:
        return None
    try:
        kind = DistributionStrategy(strategy)
    except ValueError:
        raise UsageError(f"--strategy {strategy!r}: choose one of "
                         f"{', '.join(s.value for s in DistributionStrategy)}") from None
    if kind is DistributionStrategy.MIRRORED:
        return tf.distribute.MirroredStrategy()
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise UsageError("--strategy multiworker needs TF_CONFIG describing the cluster, e.g. "
                         '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}')
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError):
        raise UsageError("TF_CONFIG must be JSON with cluster.worker (a list of host:port) and "
                         f"task.type/task.index; got {raw[:200]!r}") from None
    if not isinstance(workers, list) or not workers:
        raise UsageError(f"TF_CONFIG cluster.worker must be a non-empty list of host:port, got {workers!r}")
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"cannot start MultiWorkerMirroredStrategy ({str(exc).splitlines()[0]}); it must be "
                         "created before TensorFlow runs anything else in the process: call distill() with "
                         "model paths first thing, or use the edgeqd command") from None


def is_chief(strategy) -> bool:
    """Whether this process writes outputs (the chief, or worker 0 when there is no chief).

    Args:
        strategy: the strategy from :func:`make_strategy`, or None.

    >>> is_chief(None)
    True
    """
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    cluster = resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and int(resolver.task_id) == 0 and "chief" not in cluster
