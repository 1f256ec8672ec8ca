"""The files that pass between stages: schema ids, one writer, one reader.

Three documents cross stage boundaries:

* the **manifest** (``manifest.json``, schema ``edgeqd-manifest/1``) that ``convert``
  writes beside its artifacts; later stages (distillation, QAT, parity, the bundle)
  add their own sections through :func:`add_section`, never by editing keys by hand;
* the **bench document** (schema ``edgeqd-bench/1``) that ``bench --json`` writes;
* the **runner document** (schema ``edgeqd-runner/1``) printed by the on-device runner
  (defined in :mod:`edgeqd.devices.runner`, which imports nothing from edgeqd).

:func:`write_document` is the only writer (atomic, strict JSON: a NaN can never be
written: :func:`to_json` names where a NaN sits); :func:`read_document` is the only reader: it says what a file is by its
schema id, loads files edgeqd wrote before schema ids existed (they are recognised
by their keys and upgraded in memory), and refuses anything else with a message
naming what it expected.

>>> doc = new_bench_document([], {"runs": 5})
>>> doc["schema"], doc["ok_rows"]
('edgeqd-bench/1', 0)
>>> document_kind(doc)
'bench'
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any, Optional, Sequence

from edgeqd.errors import DataError, EdgeqdError, UsageError

MANIFEST_SCHEMA = "edgeqd-manifest/1"
BENCH_SCHEMA = "edgeqd-bench/1"
MANIFEST_FILE = "manifest.json"
SCHEMAS = {MANIFEST_SCHEMA: "manifest", BENCH_SCHEMA: "bench"}

# What every manifest holds; any other top-level key is a section added by a stage.
MANIFEST_CORE = ("schema", "edgeqd_version", "created", "libraries", "input_model", "data", "calibration",
                 "keras", "artifacts", "max_drop", "problems")
# The libraries that shape an artifact or a measurement, recorded in every document.
LIBRARIES = ("tensorflow", "tensorflow-cpu", "tf-keras", "keras", "tensorflow-model-optimization", "onnx",
             "onnxruntime", "tf2onnx", "ai-edge-litert", "numpy")


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


def to_json(document: Any, what: str = "document", **kwargs: Any) -> str:
    """``json.dumps(document, allow_nan=False, indent=2, default=str)``, with a readable error.

    Args:
        document: what to serialise.
        what: what it is, for the error message ("manifest.json").
        **kwargs: passed on to :func:`json.dumps` (they replace ``indent=2, default=str``).

    Raises:
        NonFiniteJSONError: the document holds NaN or ±inf (exit 1: a figure edgeqd
            computed is not a number; the message names where).

    >>> to_json({"max_drop": 1.0}, indent=None)
    '{"max_drop": 1.0}'
    >>> to_json({"max_drop": float("nan")}, "manifest.json")
    Traceback (most recent call last):
    edgeqd.documents.NonFiniteJSONError: refusing to write manifest.json: max_drop is nan, which JSON cannot hold
    """
    try:
        return json.dumps(document, allow_nan=False, **{"indent": 2, "default": str, **kwargs})
    except ValueError as exc:
        found = _non_finite(document)
        if found is None:  # numpy scalars and friends reach json through ``default``
            raise NonFiniteJSONError(f"refusing to write {what}: it holds a non-finite number ({exc})") from None
        raise NonFiniteJSONError(f"refusing to write {what}: {found[0]} is {found[1]}, "
                                 "which JSON cannot hold") from None


def library_versions() -> dict[str, Optional[str]]:
    """Installed versions of :data:`LIBRARIES` (None where one is not installed).

    >>> "numpy" in library_versions()
    True
    """
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_manifest(*, input_model: dict, data: dict, calibration: dict, keras: dict, artifacts: list[dict],
                 max_drop: Optional[float], problems: list[str]) -> dict[str, Any]:
    """A manifest with its schema id, versions and creation time.

    Args:
        input_model: path, sha256 and description of the model the user brought.
        data: where the data came from and how it was split.
        calibration: the calibration settings and what they drew.
        keras: the reference model's figures on the held-out samples.
        artifacts: one row per requested format (``ArtifactResult.to_dict``).
        max_drop: the accuracy budget in points, or None.
        problems: one sentence per failed artifact or budget violation.
    """
    from edgeqd import __version__

    return {"schema": MANIFEST_SCHEMA, "edgeqd_version": __version__, "created": _now(),
            "libraries": library_versions(), "input_model": input_model, "data": data,
            "calibration": calibration, "keras": keras, "artifacts": artifacts, "max_drop": max_drop,
            "problems": problems}


def add_section(manifest: dict[str, Any], name: str, content: Any) -> None:
    """Add a stage's section (``distillation``, ``quantize``, ``parity``, ``bundle`` …) to a manifest.

    Args:
        manifest: the manifest being built.
        name: the section's key.
        content: JSON-ready content.

    >>> m = {}; add_section(m, "parity", {"samples": 3}); m
    {'parity': {'samples': 3}}
    >>> add_section(m, "artifacts", [])
    Traceback (most recent call last):
    ValueError: 'artifacts' is a core manifest key, not a section
    """
    if name in MANIFEST_CORE:
        raise ValueError(f"{name!r} is a core manifest key, not a section")
    manifest[name] = content


def reference_label(manifest: dict[str, Any]) -> str:
    """Name of the model every artifact was compared with: the float model the stages started from.

    Args:
        manifest: the content of ``manifest.json``.
    """
    return "Keras (float student)" if manifest.get("distillation") else "Keras (float)"


def new_bench_document(rows: Sequence[dict], settings: dict[str, Any]) -> dict[str, Any]:
    """The bench document: settings, the emulation label and every row.

    Args:
        rows: ``BenchResult.to_dict()`` rows.
        settings: the options the run used.
    """
    from edgeqd import __version__
    from edgeqd.types import EMULATED_LATENCY_NOTE

    rows = list(rows)
    return {"schema": BENCH_SCHEMA, "edgeqd": __version__, "created": _now(), "command": "bench",
            "settings": settings, "libraries": library_versions(), "emulated_latency_note": EMULATED_LATENCY_NOTE,
            "rows": rows, "ok_rows": sum(1 for r in rows if r.get("status") == "ok"),
            "failed_rows": sum(1 for r in rows if r.get("status") != "ok")}


def document_kind(document: Any) -> Optional[str]:
    """``"manifest"``, ``"bench"`` or None: by schema id, else by the keys of files written before ids.

    Args:
        document: a decoded JSON document.
    """
    if not isinstance(document, dict):
        return None
    if "schema" in document:
        return SCHEMAS.get(document["schema"])
    if isinstance(document.get("artifacts"), list) and "data" in document:
        return "manifest"  # edgeqd 0.1 manifests carry no schema id
    if isinstance(document.get("rows"), list) and document.get("command") == "bench":
        return "bench"
    return None


def _upgrade(document: dict, kind: str) -> dict:
    """Give a schema-less document of an earlier edgeqd its schema id (in memory)."""
    if "schema" not in document:
        document = {"schema": MANIFEST_SCHEMA if kind == "manifest" else BENCH_SCHEMA, **document}
    return document


def read_document(path: str | Path, expect: Optional[str] = None) -> tuple[str, dict[str, Any]]:
    """Read a manifest or bench document; a folder means its ``manifest.json``.

    Args:
        path: a JSON file, or a ``convert`` output folder.
        expect: ``"manifest"`` or ``"bench"`` to refuse the other kind.

    Returns:
        ``(kind, document)`` with the schema id set.

    Raises:
        DataError: unreadable, not JSON, or not an edgeqd document of the expected kind (exit 3).
        UsageError: the path does not exist (exit 2).
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    kind = document_kind(document)
    wanted = f"an edgeqd {expect}" if expect else "an edgeqd manifest or bench document"
    if kind is None:
        found = document.get("schema") if isinstance(document, dict) and "schema" in document else None
        what = f"schema {found!r}" if found else f"a JSON {type(document).__name__}"
        raise DataError(f"{path}: {what} is not {wanted} (schemas: {', '.join(SCHEMAS)})")
    if expect and kind != expect:
        raise DataError(f"{path}: an edgeqd {kind} document, not {wanted}")
    return kind, _upgrade(document, kind)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read a manifest (a ``manifest.json`` or the folder holding it).

    Args:
        path: the file or folder.
    """
    return read_document(path, expect="manifest")[1]


def write_document(path: str | Path, document: dict[str, Any], force: bool = False) -> Path:
    """Write a document atomically as strict JSON (NaN and infinity refused).

    Args:
        path: the file to write.
        document: a manifest or bench document with its schema id.
        force: replace an existing file.
    """
    from edgeqd.atomic import atomic_file

    if document.get("schema") not in SCHEMAS:
        raise ValueError(f"refusing to write a document without a known schema id: {document.get('schema')!r}")
    text = to_json(document, Path(path).name) + "\n"
    path = Path(path)
    with atomic_file(path, force=force) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
