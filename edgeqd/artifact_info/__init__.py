"""``edgeqd inspect``: what is inside a ``.tflite`` or ``.onnx`` artifact.

The file is read with the runtimes' own parsers: LiteRT's flatbuffer schema
(``schema_py_generated``, verified by LiteRT's loader) for TFLite
(:mod:`~edgeqd.artifact_info.tflite`), and the ``onnx`` protobuf + checker for ONNX
(:mod:`~edgeqd.artifact_info.onnx`). The kind of file is taken from its content (the
TFLite file identifier ``TFL3``), never guessed from its name. The answer
(:mod:`~edgeqd.artifact_info.summary`) is a JSON-ready dict: inputs and outputs with
quantization parameters, an operator table, the ops that still compute in float in a
quantized model, per-tensor vs per-channel weight scales, parameter count and size
breakdown, and the embedded metadata (:mod:`~edgeqd.artifact_info.metadata`).

>>> artifact_kind(Path("m.onnx"), b"\\x08\\x07")
'onnx'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeqd.artifact_info.metadata import (EDGEQD_METADATA_NAME, TFLITE_METADATA_NAME, read_metadata_props,
                                           read_tflite_model_metadata)
from edgeqd.artifact_info.onnx import inspect_onnx
from edgeqd.artifact_info.summary import BOUNDARY_OPS, FLOAT_DTYPES, LAYOUT_OPS
from edgeqd.artifact_info.tflite import TFLITE_IDENTIFIER, inspect_tflite, tflite_schema
from edgeqd.errors import ArtifactError

__all__ = ["BOUNDARY_OPS", "EDGEQD_METADATA_NAME", "FLOAT_DTYPES", "LAYOUT_OPS", "TFLITE_IDENTIFIER",
           "TFLITE_METADATA_NAME", "artifact_kind", "inspect_artifact", "read_metadata_props",
           "read_tflite_model_metadata", "tflite_schema"]


def artifact_kind(path: Path, data: bytes) -> str:
    """"tflite" or "onnx", decided from the content (file identifier or protobuf parse).

    Args:
        path: the file (its suffix only refines the error message).
        data: its bytes.

    >>> artifact_kind(Path("m.bin"), b"\\x1c\\x00\\x00\\x00TFL3" + bytes(8))
    'tflite'
    """
    if len(data) >= 8 and data[4:8] == TFLITE_IDENTIFIER:
        return "tflite"
    if path.suffix.lower() == ".tflite":
        raise ArtifactError(f"{path}: not a TFLite flatbuffer (file identifier {data[4:8]!r}, expected "
                            f"{TFLITE_IDENTIFIER!r}; {len(data)} bytes): corrupt or not a .tflite")
    return "onnx"


def _read(path: Path) -> bytes:
    """The artifact's bytes; a folder, a missing, unreadable or empty file is an ArtifactError."""
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (".tflite", ".onnx") and p.is_file())
        hint = (f"inspect one of the artifacts in it: {', '.join(inside[:6])}{', …' if len(inside) > 6 else ''}"
                if inside else "it holds no .tflite or .onnx file")
        raise ArtifactError(f"{path}: is a folder, not an artifact; {hint}")
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    if not data:
        raise ArtifactError(f"{path}: empty file (0 bytes)")
    return data


def inspect_artifact(path: str | Path) -> dict[str, Any]:
    """Describe a ``.tflite`` or ``.onnx`` artifact: I/O, operators, quantization, sizes, metadata.

    Args:
        path: the artifact file.

    Returns:
        A JSON-ready dict with keys ``file``, ``format``, ``bytes``, ``quantization``
        (``full-int8``, ``dynamic-range``, ``int8 (QDQ)``, ``float32``, ``int8 with float
        fallback`` …), ``inputs``, ``outputs``, ``operators``, ``float_ops``,
        ``float_activations``, ``weight_scales``, ``parameters``, ``metadata`` and ``notes``.

    Raises:
        ArtifactError: the file is missing, truncated, corrupt or neither TFLite nor ONNX (exit 3).

    >>> inspect_artifact("demo_out/model_int8.tflite")["quantization"]  # doctest: +SKIP
    'full-int8'
    """
    path = Path(path)
    data = _read(path)
    kind = artifact_kind(path, data)
    info = inspect_tflite(path, data) if kind == "tflite" else inspect_onnx(path, data)
    return {"file": str(path), "format": kind, "bytes": len(data), **_as_text(info)}


def _as_text(value: Any) -> Any:
    """``value`` with every ``bytes`` turned into text: protobuf hands back strings that are not
    valid UTF-8 as bytes, which neither JSON nor the terminal tables can show."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {_as_text(k): _as_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_text(v) for v in value]
    return value
