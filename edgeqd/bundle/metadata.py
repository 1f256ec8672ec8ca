"""Metadata inside the artifacts: TFLite Metadata (+ an ``edgeqd`` JSON entry) and ONNX ``metadata_props``.

Inside a ``.tflite`` the metadata follows the TFLite Metadata spec that Android Studio's
ML binding, the LiteRT support library and ``tflite_support``'s ``MetadataDisplayer``
read: a ``ModelMetadata`` flatbuffer (identifier ``M001``) in a buffer named
``TFLITE_METADATA``, with ``labels.txt`` packed after the model as a zip (the spec's
"associated files"). edgeqd adds a JSON copy of everything (``edgeqd`` entry). Inside an
``.onnx`` the same keys go into ``metadata_props``.

This module writes; the readers it pairs with (:func:`read_tflite_model_metadata`,
:func:`read_metadata_props`) live with the rest of the artifact reader in
:mod:`edgeqd.artifact_info.metadata` and are re-exported here, so one import gives both.

>>> read_tflite_model_metadata(build_tflite_model_metadata({"model_name": "m"}, [], []))["name"]
'm'
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from edgeqd import __version__
from edgeqd.artifact_info import inspect_artifact
from edgeqd.artifact_info.metadata import (EDGEQD_METADATA_NAME, TFLITE_METADATA_IDENTIFIER, TFLITE_METADATA_NAME,
                                           read_metadata_props, read_tflite_model_metadata)
from edgeqd.artifact_info.tflite import TFLITE_IDENTIFIER, tflite_schema
from edgeqd.errors import ArtifactError

__all__ = ["LABELS_FILE", "METADATA_PARSER_VERSION", "build_tflite_model_metadata", "embed_metadata",
           "embed_onnx_metadata", "embed_tflite_metadata", "normalization_mean_std", "read_metadata_props",
           "read_tflite_model_metadata"]

LABELS_FILE = "labels.txt"
METADATA_PARSER_VERSION = "1.0.0"  # every field written here exists since Metadata 1.0.0


def embed_metadata(path: Path, runtime: str, metadata: dict[str, Any]) -> None:
    """Store ``metadata`` (labels, normalization, task, version, I/O quantization) inside an artifact.

    Args:
        path: the artifact, rewritten in place.
        runtime: "tflite" or "onnx".
        metadata: JSON-ready key/values from :func:`edgeqd.pipeline.artifact_metadata`.

    >>> embed_metadata(Path("out/model_int8.tflite"), "tflite", {"labels": ["cat", "dog"]})  # doctest: +SKIP
    """
    path = Path(path)
    if runtime == "onnx":
        embed_onnx_metadata(path, metadata)
    elif runtime == "tflite":
        embed_tflite_metadata(path, metadata)


def _io_summary(tensor: dict[str, Any]) -> dict[str, Any]:
    return {key: tensor[key] for key in ("name", "shape", "dtype", "scale", "zero_point")}


def embed_onnx_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Write ``metadata`` (plus the I/O tensors) into an ONNX model's ``metadata_props``.

    Args:
        path: the ``.onnx`` file, rewritten in place.
        metadata: JSON-ready key/values; non-strings are stored as JSON.

    >>> embed_onnx_metadata(Path("out/model_int8.onnx"), {"task": "image_classification"})  # doctest: +SKIP
    """
    import onnx

    described = inspect_artifact(path)
    values = {**metadata, "inputs": [_io_summary(t) for t in described["inputs"]],
              "outputs": [_io_summary(t) for t in described["outputs"]]}
    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if key in existing:
            existing[key].value = text
        else:
            model.metadata_props.add(key=key, value=text)
    onnx.save(model, str(path))


def normalization_mean_std(normalization: dict[str, float]) -> tuple[float, float]:
    """TFLite Metadata's (mean, std) for edgeqd's ``x = raw * scale + offset``.

    The spec normalizes as ``x = (raw - mean) / std``, so mean = -offset / scale and std = 1 / scale.

    Args:
        normalization: ``{"scale": s, "offset": o}``.

    >>> normalization_mean_std({"scale": 1 / 255, "offset": 0.0})
    (0.0, 255.0)
    """
    scale = float(normalization.get("scale", 1.0)) or 1.0
    offset = float(normalization.get("offset", 0.0))
    return (-offset / scale + 0.0, round(1.0 / scale, 6))


def _text(value: Any) -> str:
    # The generated object API yields bytes or str depending on the flatbuffers version.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else (value or "")


def _tflite_io(schema, model) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs of an unpacked ``ModelT`` with their quantization."""
    graph = model.subgraphs[0]
    names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}

    def entry(index: int) -> dict[str, Any]:
        tensor = graph.tensors[index]
        q = tensor.quantization
        scale = [float(s) for s in (q.scale if q is not None and q.scale is not None else [])]
        zero = [int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else [])]
        signature = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
        return {"name": _text(tensor.name),
                "shape": [int(d) for d in (signature if signature is not None else [])],
                "dtype": names.get(tensor.type, str(tensor.type)), "scale": scale, "zero_point": zero}

    return [entry(i) for i in graph.inputs], [entry(i) for i in graph.outputs]


def _input_metadata(meta, tensor: dict, task: str, normalization: dict) -> Any:
    """``TensorMetadataT`` of one input: description with the numbers, image or feature content,
    normalization (mean/std) and, for images, the value range the model sees."""
    mean, std = normalization_mean_std(normalization)
    t = meta.TensorMetadataT()
    t.name = tensor["name"]
    shape = tensor["shape"]
    if tensor["dtype"].startswith(("int", "uint")) and not tensor["scale"]:  # token ids, indices: as they are
        t.description = (f"{'x'.join(str(d) for d in shape[1:])} {tensor['dtype']} input (token ids / indices): "
                         "fed as they are, neither normalized nor quantized")
        content = meta.ContentT()
        content.contentPropertiesType = meta.ContentProperties.FeatureProperties
        content.contentProperties = meta.FeaturePropertiesT()
        t.content = content
        return t
    t.description = (f"{'x'.join(str(d) for d in shape[1:])} input; x = raw * {normalization['scale']:.8g} "
                     f"+ {normalization['offset']:.8g}" + (
                         f"; int8 q = round(x / {tensor['scale'][0]:.8g}) + ({tensor['zero_point'][0]})"
                         if tensor["scale"] else ""))
    content = meta.ContentT()
    if task == "image_classification" and len(shape) == 4 and shape[-1] in (1, 3):
        props = meta.ImagePropertiesT()
        props.colorSpace = meta.ColorSpaceType.GRAYSCALE if shape[-1] == 1 else meta.ColorSpaceType.RGB
        size = meta.ImageSizeT()
        size.height, size.width = int(shape[1]), int(shape[2])
        props.defaultSize = size
        content.contentPropertiesType = meta.ContentProperties.ImageProperties
        content.contentProperties = props
    else:
        content.contentPropertiesType = meta.ContentProperties.FeatureProperties
        content.contentProperties = meta.FeaturePropertiesT()
    t.content = content
    unit = meta.ProcessUnitT()
    unit.optionsType = meta.ProcessUnitOptions.NormalizationOptions
    unit.options = meta.NormalizationOptionsT()
    unit.options.mean = [mean]
    unit.options.std = [std]
    t.processUnits = [unit]
    if task == "image_classification":  # raw pixels are 0..255: the model sees this range
        stats = meta.StatsT()
        low = normalization.get("offset", 0.0)
        high = 255.0 * normalization.get("scale", 1.0) + low
        stats.min, stats.max = [float(low)], [float(high)]
        t.stats = stats
    return t


def output_description(metadata: dict[str, Any], count: int) -> str:
    """What the output holds, in words: probabilities (no softmax to apply), logits (apply one) or regression values.

    Args:
        metadata: edgeqd's metadata (``output``: "probabilities", "logits" or "regression";
            ``output_activation``: "softmax"/"sigmoid").
        count: classes (outputs for regression).

    >>> output_description({"output": "probabilities", "output_activation": "softmax"}, 3)
    'probabilities (softmax) for 3 classes: use them as they are'
    """
    kind = metadata.get("output", "logits")
    if kind == "probabilities":
        return (f"probabilities ({metadata.get('output_activation') or 'softmax'}) for {count} classes: "
                "use them as they are")
    if kind == "regression":
        return f"regression values, {count} per sample: no argmax, no softmax"
    return f"logits for {count} classes: softmax turns them into probabilities"


def _output_metadata(meta, tensor: dict, metadata: dict, labels: list[str]) -> Any:
    """``TensorMetadataT`` of one output, with ``labels.txt`` as its axis labels."""
    t = meta.TensorMetadataT()
    t.name = tensor["name"]
    t.description = (output_description(metadata, len(labels) or (tensor["shape"][-1] if tensor["shape"] else 0))
                     + (f"; float = (q - ({tensor['zero_point'][0]})) * {tensor['scale'][0]:.8g}"
                        if tensor["scale"] else ""))
    content = meta.ContentT()
    content.contentPropertiesType = meta.ContentProperties.FeatureProperties
    content.contentProperties = meta.FeaturePropertiesT()
    t.content = content
    if labels:
        label_file = meta.AssociatedFileT()
        label_file.name = LABELS_FILE
        label_file.description = "class names, one per line, in output order"
        label_file.type = meta.AssociatedFileType.TENSOR_AXIS_LABELS
        t.associatedFiles = [label_file]
    return t


def build_tflite_model_metadata(metadata: dict[str, Any], inputs: list[dict], outputs: list[dict]) -> bytes:
    """A TFLite Metadata ``ModelMetadata`` flatbuffer (identifier ``M001``) for a classifier.

    Args:
        metadata: edgeqd's metadata (task, model_name, labels, input_normalization, producer).
        inputs: the model's input tensors (name, shape, dtype, scale, zero_point).
        outputs: the model's output tensors.

    >>> raw = build_tflite_model_metadata({"labels": ["a"]}, [], [])
    >>> raw[4:8]
    b'M001'
    """
    import flatbuffers

    from edgeqd._vendor import tflite_metadata_schema as meta

    labels = list(metadata.get("labels") or [])
    normalization = metadata.get("input_normalization") or {"scale": 1.0, "offset": 0.0}
    task = metadata.get("task", "classification")
    subgraph = meta.SubGraphMetadataT()
    subgraph.name = task
    subgraph.inputTensorMetadata = [_input_metadata(meta, t, task, normalization) for t in inputs]
    subgraph.outputTensorMetadata = [_output_metadata(meta, t, metadata, labels) for t in outputs]
    model = meta.ModelMetadataT()
    model.name = metadata.get("model_name") or "model"
    model.description = (f"{task.replace('_', ' ')}, {len(labels)} {'outputs' if task == 'regression' else 'classes'}"
                         f"; output: {metadata.get('output', 'logits')}"
                         + (f" ({metadata['output_activation']})" if metadata.get("output_activation") else ""))
    model.version = metadata.get("producer", f"edgeqd {__version__}")
    model.author = metadata.get("producer", f"edgeqd {__version__}")
    model.minParserVersion = METADATA_PARSER_VERSION
    model.subgraphMetadata = [subgraph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), TFLITE_METADATA_IDENTIFIER)
    return bytes(builder.Output())


def _set_metadata_entry(schema, model, name: str, payload: bytes) -> None:
    """Put ``payload`` into the model's metadata entry ``name`` (replacing an older one)."""
    import numpy as np

    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8).copy()
    model.metadata = model.metadata or []
    model.buffers = model.buffers or []
    for entry in model.metadata:
        if _text(entry.name) == name:
            model.buffers[entry.buffer] = buffer
            return
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)


def embed_tflite_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Write TFLite Metadata (``TFLITE_METADATA`` + labels zip) and an ``edgeqd`` JSON entry.

    Mirrors ``tflite_support``'s ``MetadataPopulator``: unpack the model with the TFLite
    schema, add the metadata buffers, pack it again, then append the associated files as
    a zip after the flatbuffer (LiteRT ignores bytes after the flatbuffer).

    Args:
        path: the ``.tflite`` file, rewritten in place.
        metadata: JSON-ready key/values from :func:`edgeqd.pipeline.artifact_metadata`.

    Raises:
        ArtifactError: the file is not a TFLite flatbuffer (exit 3).

    >>> embed_tflite_metadata(Path("out/model_int8.tflite"), {"labels": ["cat", "dog"]})  # doctest: +SKIP
    """
    import flatbuffers

    schema = tflite_schema()
    data = Path(path).read_bytes()
    if data[4:8] != TFLITE_IDENTIFIER:
        raise ArtifactError(f"{path}: not a TFLite flatbuffer (identifier {data[4:8]!r}); cannot embed metadata")
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    inputs, outputs = _tflite_io(schema, model)
    _set_metadata_entry(schema, model, TFLITE_METADATA_NAME,
                        build_tflite_model_metadata(metadata, inputs, outputs))
    _set_metadata_entry(schema, model, EDGEQD_METADATA_NAME,
                        json.dumps({**metadata, "inputs": inputs, "outputs": outputs}).encode("utf-8"))
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), TFLITE_IDENTIFIER)
    stream = io.BytesIO(bytes(builder.Output()))
    labels = list(metadata.get("labels") or [])
    if labels:
        stream.seek(0, io.SEEK_END)
        # Same packing as MetadataPopulator: a zip appended after the model, read by the support library.
        with zipfile.ZipFile(stream, "a") as archive:
            archive.writestr(LABELS_FILE, "\n".join(labels) + "\n")
    Path(path).write_bytes(stream.getvalue())
