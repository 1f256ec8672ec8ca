"""JSON text that is valid JSON: no ``NaN``, ``Infinity`` or ``-Infinity``, ever.

Python's :func:`json.dumps` writes ``NaN`` by default, which no strict JSON reader
(browsers, ``jq``, Go, Rust's serde) accepts. Every document edgeqd writes — the
``manifest.json`` of ``convert``/``quantize``, the ``bench --json`` document, the
distillation report, ``--json`` output — goes through :func:`dumps`, which refuses a
non-finite number with an error naming where it sits, instead of writing it silently.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from edgeqd.errors import EdgeqdError


class NonFiniteJSONError(EdgeqdError):
    """A document to be written holds NaN or ±inf, which JSON cannot represent."""


def _non_finite(value: Any, path: str = "") -> Optional[tuple[str, float]]:
    """The first non-finite float in ``value`` and where it is ("artifacts[1].max_abs_diff"), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "the document", value)
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = _non_finite(item, f"{path}[{key}]" if isinstance(key, int)
                            else f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def dumps(document: Any, what: str = "document", **kwargs: Any) -> str:
    """``json.dumps(document, allow_nan=False, **kwargs)``, with a readable error.

    Args:
        document: what to serialise.
        what: what it is, for the error message ("manifest.json").
        **kwargs: passed on to :func:`json.dumps` (``indent``, ``default``).

    Raises:
        NonFiniteJSONError: the document holds NaN or ±inf (exit 1: a figure edgeqd
            computed is not a number; the message names where).

    >>> dumps({"max_drop": 1.0})
    '{"max_drop": 1.0}'
    >>> dumps({"max_drop": float("nan")}, "manifest.json")
    Traceback (most recent call last):
    edgeqd.strict_json.NonFiniteJSONError: refusing to write manifest.json: max_drop is nan, which JSON cannot hold
    """
    try:
        return json.dumps(document, allow_nan=False, **kwargs)
    except ValueError as exc:
        found = _non_finite(document)
        if found is None:  # numpy scalars and friends reach json through ``default``
            raise NonFiniteJSONError(f"refusing to write {what}: it holds a non-finite number ({exc})") from None
        raise NonFiniteJSONError(f"refusing to write {what}: {found[0]} is {found[1]}, "
                                 "which JSON cannot hold") from None
