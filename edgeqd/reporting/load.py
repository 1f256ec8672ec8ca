"""Gather what a report shows: convert runs and bench rows, read through :mod:`edgeqd.documents`.

Every file is read by :func:`edgeqd.documents.read_document`, which says from its schema id
(or, for files edgeqd wrote before schema ids, from its keys) whether it is a manifest or
a bench document. Each bench row is tied to the folder its artifact came from, so two
``model_int8.tflite`` from two runs stay two rows, labelled by their run or folder.

>>> data = ReportData("t")
>>> data.runs, data.bench_rows
([], [])
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from edgeqd.documents import MANIFEST_FILE, read_document
from edgeqd.errors import DataError, UsageError


@dataclass
class Run:
    """One ``edgeqd convert`` output folder.

    Attributes:
        name: a short label (the folder's name; ``parent/name`` when two runs share a name).
        path: the folder.
        manifest: its ``manifest.json`` (with its schema id).
    """

    name: str
    path: Path
    manifest: dict[str, Any]


@dataclass
class ReportData:
    """Everything a report shows, gathered from the inputs.

    Attributes:
        title: the page title.
        runs: convert runs.
        bench_rows: bench rows (dicts as ``BenchResult.to_dict``), each with ``run`` (the run
            its artifact belongs to, or ""), ``folder`` (the folder the artifact was in) and
            ``label`` (unique per artifact: ``run/file`` or ``folder/file`` where names repeat).
        sources: the files read.
    """

    title: str
    runs: list[Run] = field(default_factory=list)
    bench_rows: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading files

_UNREADABLE = object()


def _decoded(file: Path) -> Any:
    """The JSON in a file :func:`read_document` refused, only to word the error (or _UNREADABLE)."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return _UNREADABLE


def _describe_json(document: Any) -> str:
    """A few words on what a JSON document is, for errors about unexpected documents."""
    if isinstance(document, dict):
        keys = sorted(map(str, document))
        return (f"an object with keys {', '.join(keys[:6])}{', …' if len(keys) > 6 else ''}" if keys
                else "an empty object {}")
    if isinstance(document, list):
        return f"a list of {len(document)} item(s)"
    return f"a {type(document).__name__} ({json.dumps(document)[:40]})"


def _check_manifest(file: Path, document: Any) -> None:
    """Raise DataError (exit 3) unless ``document`` has the shape of an edgeqd manifest."""
    fields = {"artifacts": list, "data": dict}
    wrong = [] if isinstance(document, dict) else list(fields)
    if not wrong:
        wrong = [k for k, kind in fields.items() if not isinstance(document.get(k), kind)]
        if not wrong and not all(isinstance(a, dict) for a in document["artifacts"]):
            wrong = ["artifacts (entries must be objects)"]
    if wrong:
        raise DataError(f"{file}: not an edgeqd manifest (found {_describe_json(document)}; expected an object "
                        f"with {', '.join(wrong)}); give a folder written by edgeqd convert or quantize")


def _read(file: Path, named: bool) -> Optional[tuple[str, dict[str, Any]]]:
    """``(kind, document)`` of one file; None for another tool's JSON found in a folder.

    Args:
        file: a JSON file.
        named: the user named this file (rather than a folder holding it).
    """
    try:
        kind, document = read_document(file)
    except DataError as error:
        content = _decoded(file)
        if content is _UNREADABLE:
            raise  # not readable JSON: say so, wherever the file came from
        if file.name == MANIFEST_FILE:
            _check_manifest(file, content)  # the detailed "what is wrong with it" message
            raise
        if named:  # the user asked for this file: it must be an edgeqd document
            raise UsageError(str(error)) from None
        return None  # some other JSON beside a run: not ours
    if file.name == MANIFEST_FILE or kind == "manifest":
        _check_manifest(file, document)
    if kind == "bench" and not all(isinstance(row, dict) for row in document.get("rows") or []):
        raise DataError(f"{file}: a bench document whose rows are not all objects")
    return kind, document


def _files(paths: Sequence[str | Path]) -> list[tuple[Path, bool]]:
    """Every JSON file to read, once each, with whether the user named it."""
    seen, files = set(), []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        for file in [path] if path.is_file() else sorted(path.glob("*.json")):
            if file.resolve() not in seen:
                seen.add(file.resolve())
                files.append((file, path.is_file()))
    return files


def load_report_data(paths: Sequence[str | Path], title: Optional[str] = None) -> ReportData:
    """Read manifests and bench documents from run folders and files.

    Args:
        paths: run folders (``manifest.json`` and/or ``*.json`` bench files inside) or JSON files.
        title: the page title (default: derived from the model names).

    Raises:
        UsageError: a path does not exist, a named file is no edgeqd document, or nothing usable
            was found (exit 2).
        DataError: a JSON file cannot be read, or a ``manifest.json`` is not a manifest (exit 3).

    >>> load_report_data(["demo_out"]).runs[0].name  # doctest: +SKIP
    'demo_out'
    """
    data = ReportData(title=title or "")
    bench_docs: list[tuple[Path, dict]] = []
    for file, named in _files(paths):
        found = _read(file, named)
        if found is None:
            continue
        kind, document = found
        if kind == "manifest":
            folder = file.parent
            data.runs.append(Run(folder.name or str(folder), folder, document))
        else:
            bench_docs.append((file, document))
        data.sources.append(str(file))
    if not data.runs and not bench_docs:
        raise UsageError(f"no manifest.json or bench JSON found in {', '.join(str(p) for p in paths)}; "
                         "give edgeqd convert output folders or edgeqd bench --json files")
    # Folder names may repeat (two runs called "out"): make labels unique with their parent.
    names = [r.name for r in data.runs]
    for run in data.runs:
        if names.count(run.name) > 1:
            run.name = f"{run.path.parent.name}/{run.name}"
    for file, document in bench_docs:
        for row in document["rows"]:
            data.bench_rows.append(_attach_row(dict(row), file, document, data.runs))
    _label_rows(data.bench_rows, data.runs)
    if not data.title:
        models = sorted({r.manifest.get("input_model", {}).get("name", "model") for r in data.runs})
        data.title = "edgeqd report — " + (", ".join(models) if models else "bench")
    return data


# --------------------------------------------------------------------------- bench rows → artifacts

def _listed_locations(artifact: str, file: Path, document: dict) -> list[Path]:
    """Where the bench run's settings say a row's artifact was (paths are relative to where bench
    ran: the bench file's folder, or the current folder).

    ``artifact`` is the row's name for it: the file name, or ``folder/name`` where bench told
    same-named files apart; a listed path matches when it ends with those parts.
    """
    settings = document.get("settings") if isinstance(document.get("settings"), dict) else {}
    listed = settings.get("artifacts") if isinstance(settings.get("artifacts"), list) else []
    wanted = Path(artifact).parts
    locations: list[Path] = []
    for candidate in (Path(str(a)) for a in listed):
        if not wanted or candidate.parts[-len(wanted):] != wanted:
            continue
        for base in (file.parent, Path.cwd()):
            full = (candidate if candidate.is_absolute() else base / candidate).resolve()
            if full not in locations:
                locations.append(full)
    return locations


def _same_size(row: dict, options: list, size_of) -> list:
    """Of several same-named candidates, those whose size is the row's ``artifact_bytes``."""
    if len(options) < 2 or not row.get("artifact_bytes"):
        return options
    sized = [o for o in options if size_of(o) == row["artifact_bytes"]]
    return sized or options


def _manifest_bytes(run: Run, name: str) -> Optional[int]:
    return next((a.get("bytes") for a in run.manifest.get("artifacts", []) if a.get("file") == name), None)


def _file_bytes(path: Path) -> Optional[int]:
    return path.stat().st_size if path.is_file() else None


def _owner(row: dict, name: str, file: Path, locations: list[Path], runs: list[Run]) -> Optional[Run]:
    """The run a bench row's artifact belongs to: by path, else by a unique file name in a manifest."""
    by_path: list[Run] = []
    for location in locations:
        for run in runs:
            if (run.path / name).resolve() == location and all(run is not r for r in by_path):
                by_path.append(run)
    by_path = _same_size(row, by_path, lambda r: _manifest_bytes(r, name))
    if by_path:
        return by_path[0]
    owners = [r for r in runs if any(a.get("file") == name for a in r.manifest.get("artifacts", []))]
    same_folder = [r for r in owners if r.path.resolve() == file.parent.resolve()]
    if same_folder:
        return same_folder[0]
    owners = _same_size(row, owners, lambda r: _manifest_bytes(r, name))
    return owners[0] if len(owners) == 1 else None


def _attach_row(row: dict, file: Path, document: dict, runs: list[Run]) -> dict:
    """Tie a bench row to its run and folder (``run``, ``folder``, ``emulated`` set; ``label`` later)."""
    name = Path(str(row.get("artifact", ""))).name
    locations = _listed_locations(str(row.get("artifact", "")), file, document)
    run = _owner(row, name, file, locations, runs)
    if run is not None:
        folder = run.path.resolve()
    else:
        existing = _same_size(row, [p for p in locations if p.is_file()], _file_bytes)
        folder = (existing or locations or [file.parent / name])[0].resolve().parent
    row["run"] = run.name if run else ""
    row["folder"] = str(folder)
    row["emulated"] = bool(row.get("emulated"))
    return row


def _folder_labels(folders: set[str]) -> dict[str, str]:
    """Short names of folders: the base name, with its parent where two base names repeat."""
    base = {f: Path(f).name or f for f in folders}
    counts = defaultdict(int)
    for short in base.values():
        counts[short] += 1
    return {f: (f"{Path(f).parent.name}/{short}" if counts[short] > 1 else short) for f, short in base.items()}


def _label_rows(rows: list[dict], runs: list[Run]) -> None:
    """Give each row a ``label`` unique per artifact: the file name, prefixed by its run or folder
    when several runs are shown or the same name comes from more than one folder."""
    folders_of: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        folders_of[Path(str(row.get("artifact", ""))).name].add(row["folder"])
    short = _folder_labels({row["folder"] for row in rows})
    for row in rows:
        name = Path(str(row.get("artifact", ""))).name
        if len(folders_of[name]) > 1:
            row["label"] = f"{row['run'] or short[row['folder']]}/{name}"
        elif row["run"] and len(runs) > 1:
            row["label"] = f"{row['run']}/{name}"
        else:
            row["label"] = name
