"""Reading the metadata embedded in an artifact: TFLite Metadata, edgeqd's JSON entry, ONNX ``metadata_props``.

The writer is :mod:`edgeqd.bundle.metadata`; it imports the names and readers here so
that what is written and what is read back cannot drift apart. A damaged or foreign
metadata entry is reported in the answer, never fatal: only labels that TFLite Metadata
lists but the file lacks (a cut-off zip after the flatbuffer) make the file corrupt.

>>> decode_tflite_metadata("min_runtime_version", b"1.14.0\\x00\\x00")
'1.14.0'
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any, Optional

from edgeqd.errors import ArtifactError

TFLITE_METADATA_NAME = "TFLITE_METADATA"  # the TFLite Metadata spec's buffer name
TFLITE_METADATA_IDENTIFIER = b"M001"  # the spec's flatbuffer file identifier
EDGEQD_METADATA_NAME = "edgeqd"  # edgeqd's own JSON copy of the metadata


def enum_names(enum_class) -> dict[int, str]:
    """Value → name of a generated flatbuffer enum class.

    Args:
        enum_class: e.g. ``schema.TensorType``.

    >>> class Colour:
    ...     RED = 0
    ...     GREEN = 1
    >>> enum_names(Colour)
    {0: 'RED', 1: 'GREEN'}
    """
    return {value: name for name, value in vars(enum_class).items()
            if not name.startswith("_") and isinstance(value, int)}


def decode_tflite_metadata(name: str, raw: bytes) -> Any:
    """Readable form of one entry of a TFLite model's ``metadata`` table.

    Args:
        name: the entry's name (``TFLITE_METADATA``, ``edgeqd``, ``min_runtime_version``, …).
        raw: the bytes of the buffer it points at.

    >>> decode_tflite_metadata("edgeqd", b'{"task": "x"}')
    {'task': 'x'}
    """
    if name == TFLITE_METADATA_NAME:
        try:
            return read_tflite_model_metadata(raw)
        except Exception as exc:  # a foreign or damaged metadata buffer is reported, not fatal
            return {"error": f"unreadable TFLite Metadata ({type(exc).__name__}: {str(exc)[:100]})",
                    "bytes": len(raw)}
    if name == EDGEQD_METADATA_NAME:
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {"error": "not JSON", "bytes": len(raw)}
    if name == "min_runtime_version":
        return raw.split(b"\0")[0].decode("ascii", "replace")
    return {"bytes": len(raw)}


def _text(value) -> Optional[str]:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _files(items, file_types: dict[int, str]) -> list[dict]:
    return [{"name": _text(f.name), "description": _text(f.description),
             "type": file_types.get(f.type, f.type)} for f in items or []]


def _tensor(meta, t, color_spaces: dict[int, str], file_types: dict[int, str]) -> dict[str, Any]:
    """One ``TensorMetadataT`` as a dict: name, description, content, normalization, stats, files."""
    entry: dict[str, Any] = {"name": _text(t.name), "description": _text(t.description)}
    content = t.content
    if content is not None:
        if content.contentPropertiesType == meta.ContentProperties.ImageProperties:
            props = content.contentProperties
            entry["content"] = "image"
            entry["color_space"] = color_spaces.get(props.colorSpace, props.colorSpace)
            if props.defaultSize is not None:
                entry["image_size"] = [props.defaultSize.width, props.defaultSize.height]
        elif content.contentPropertiesType == meta.ContentProperties.FeatureProperties:
            entry["content"] = "feature"
    for unit in t.processUnits or []:
        if unit.optionsType == meta.ProcessUnitOptions.NormalizationOptions:
            entry["normalization"] = {"mean": [float(v) for v in unit.options.mean],
                                      "std": [float(v) for v in unit.options.std]}
    if t.stats is not None:
        entry["stats"] = {"min": [float(v) for v in t.stats.min] if t.stats.min is not None else [],
                          "max": [float(v) for v in t.stats.max] if t.stats.max is not None else []}
    if t.associatedFiles:
        entry["associated_files"] = _files(t.associatedFiles, file_types)
    return entry


def read_tflite_model_metadata(raw: bytes) -> dict[str, Any]:
    """Decode a TFLite Metadata (``ModelMetadata``, identifier ``M001``) buffer into a dict.

    Args:
        raw: the bytes of the model's ``TFLITE_METADATA`` buffer.

    Raises:
        ArtifactError: the buffer does not carry the ``M001`` identifier.

    >>> read_tflite_model_metadata(b"12345678")
    Traceback (most recent call last):
    edgeqd.errors.ArtifactError: TFLite Metadata buffer has identifier b'5678', expected b'M001'
    """
    from edgeqd._vendor import tflite_metadata_schema as meta

    if len(raw) < 8 or raw[4:8] != TFLITE_METADATA_IDENTIFIER:
        raise ArtifactError(f"TFLite Metadata buffer has identifier {raw[4:8]!r}, expected b'M001'")
    model = meta.ModelMetadataT.InitFromObj(meta.ModelMetadata.GetRootAsModelMetadata(raw, 0))
    color_spaces = enum_names(meta.ColorSpaceType)
    file_types = enum_names(meta.AssociatedFileType)
    subgraphs = model.subgraphMetadata or []
    return {"name": _text(model.name), "description": _text(model.description), "version": _text(model.version),
            "author": _text(model.author), "license": _text(model.license),
            "min_parser_version": _text(model.minParserVersion),
            "inputs": [_tensor(meta, t, color_spaces, file_types) for s in subgraphs for t in s.inputTensorMetadata or []],
            "outputs": [_tensor(meta, t, color_spaces, file_types)
                        for s in subgraphs for t in s.outputTensorMetadata or []],
            "associated_files": _files(model.associatedFiles, file_types)}


def listed_files(model_metadata: Any) -> set[str]:
    """Names of the associated files a decoded TFLite Metadata refers to.

    Args:
        model_metadata: the answer of :func:`read_tflite_model_metadata` (or an error dict, or None).

    >>> sorted(listed_files({"outputs": [{"associated_files": [{"name": "labels.txt"}]}]}))
    ['labels.txt']
    """
    if not isinstance(model_metadata, dict) or "error" in model_metadata:
        return set()
    entries = list(model_metadata.get("associated_files", []))
    for tensor in model_metadata.get("inputs", []) + model_metadata.get("outputs", []):
        entries += tensor.get("associated_files", [])
    return {e["name"] for e in entries if e.get("name")}


def appended_files(data: bytes) -> list[dict[str, Any]]:
    """Files packed after the flatbuffer as a zip (how the TFLite Metadata spec ships labels).

    Args:
        data: the whole ``.tflite`` file.

    >>> appended_files(b"no zip here")
    []
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [{"name": i.filename, "bytes": i.file_size} for i in archive.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError):
        return []


def read_metadata_props(model) -> dict[str, Any]:
    """An ONNX model's ``metadata_props``, with values that are JSON decoded.

    Args:
        model: an ``onnx.ModelProto``.

    >>> import onnx
    >>> model = onnx.ModelProto()
    >>> _ = model.metadata_props.add(key="labels", value='["a", "b"]')
    >>> read_metadata_props(model)
    {'labels': ['a', 'b']}
    """
    metadata: dict[str, Any] = {}
    for prop in model.metadata_props:
        try:
            metadata[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            metadata[prop.key] = prop.value
    return metadata
