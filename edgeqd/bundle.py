"""The integration bundle an app consumes: metadata inside the artifacts and files beside them.

``embed_metadata`` runs on each artifact right after it is converted (before it is
verified and hashed); ``write_bundle`` runs once all artifacts are in the output folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def embed_metadata(path: Path, runtime: str, metadata: dict[str, Any]) -> None:
    """Store ``metadata`` (labels, normalization, task, version) inside an artifact.

    Args:
        path: the artifact, rewritten in place.
        runtime: "tflite" or "onnx".
        metadata: JSON-ready key/values.
    """
    if runtime == "onnx":
        import json

        import onnx

        model = onnx.load(str(path))
        existing = {p.key: p for p in model.metadata_props}
        for key, value in metadata.items():
            text = value if isinstance(value, str) else json.dumps(value)
            if key in existing:
                existing[key].value = text
            else:
                model.metadata_props.add(key=key, value=text)
        onnx.save(model, str(path))


def write_bundle(out_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Write the files beside the artifacts that an app needs; return their names.

    Args:
        out_dir: the (temporary) output folder holding the artifacts.
        manifest: the run's manifest, already filled in.
    """
    written = []
    labels = manifest["data"].get("class_names") or []
    if labels:
        (out_dir / "labels.txt").write_text("\n".join(labels) + "\n")
        written.append("labels.txt")
    return written
