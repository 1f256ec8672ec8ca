"""Reading a ``.tflite`` flatbuffer with LiteRT's generated schema, after LiteRT's own verifier.

Every length and index read from the file is checked against the file's size before it
is used: a corrupt length field would otherwise make the reader loop over billions of
entries, and an out-of-range index would read another table's bytes.

>>> tflite_schema().TensorType.INT8
9
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from edgeqd.artifact_info.metadata import (TFLITE_METADATA_NAME, appended_files, decode_tflite_metadata,
                                           enum_names, listed_files)
from edgeqd.artifact_info.lowbit import weight_bits
from edgeqd.artifact_info.summary import BOUNDARY_OPS, FLOAT_DTYPES, summarise
from edgeqd.artifact_info.weights import blockwise_details
from edgeqd.errors import ArtifactError

TFLITE_IDENTIFIER = b"TFL3"


def tflite_schema():
    """LiteRT's generated flatbuffer schema module (the TFLite ``schema.fbs`` in Python).

    >>> tflite_schema().BuiltinOperator.CONV_2D
    3
    """
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # older boards: TensorFlow's copy of the same generated file
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _check_length(n: int, data: bytes, what: str) -> int:
    # A corrupt length field would otherwise make us loop over billions of entries.
    if n < 0 or n > len(data):
        raise ArtifactError(f"{what}: {n} entries in a {len(data)}-byte file")
    return n


def _litert_verify(path: Path, data: bytes) -> Optional[str]:
    """Load the bytes in LiteRT (which runs the flatbuffer verifier); return a note or raise."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return "LiteRT is not installed: the flatbuffer was not verified by the runtime"
    try:
        Interpreter(model_content=data)
    except Exception as exc:  # LiteRT raises ValueError/RuntimeError with its own wording
        message = " ".join(str(exc).split())[:300]
        if "op" in message.lower() and ("not supported" in message.lower() or "custom" in message.lower()):
            return f"LiteRT cannot run it as is ({message})"
        raise ArtifactError(f"{path}: LiteRT rejects the flatbuffer ({message}); {len(data)} bytes: "
                            "truncated or corrupt") from None
    return None


def inspect_tflite(path: Path, data: bytes) -> dict[str, Any]:
    """The inspect answer for a TFLite file (without ``file``, ``format`` and ``bytes``).

    Args:
        path: the file, for messages.
        data: its bytes.

    Raises:
        ArtifactError: LiteRT rejects the flatbuffer, or an offset, length or index is out of range (exit 3).

    >>> inspect_tflite(Path("m.tflite"), Path("m.tflite").read_bytes())["quantization"]  # doctest: +SKIP
    'full-int8'
    """
    note = _litert_verify(path, data)
    try:
        info = _read_tflite(data)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: corrupt TFLite flatbuffer ({exc})") from None
    except Exception as exc:  # out-of-range offsets surface as struct/index/value errors
        raise ArtifactError(f"{path}: truncated or corrupt TFLite flatbuffer ({type(exc).__name__}: "
                            f"{str(exc)[:200]}; {len(data)} bytes)") from None
    if note:
        info["notes"].append(note)
    return info


def _tflite_quant(tensor) -> dict[str, Any]:
    q = tensor.Quantization()
    blockwise = blockwise_details(q)
    if blockwise is not None:  # int4/int2 blocks with a scale tensor of their own (a quantization parameter)
        return {"scale": [], "zero_point": [], "granularity": "blockwise", "quantized_dimension": None,
                "block_size": int(blockwise.BlockSize()), "block_scales": int(blockwise.Scales())}
    if q is None or q.ScaleLength() == 0:
        return {"scale": [], "zero_point": [], "granularity": None, "quantized_dimension": None}
    scale = [float(s) for s in q.ScaleAsNumpy()]
    zero = [int(z) for z in q.ZeroPointAsNumpy()] if q.ZeroPointLength() else [0] * len(scale)
    per_channel = len(scale) > 1
    return {"scale": scale, "zero_point": zero, "granularity": "per-channel" if per_channel else "per-tensor",
            "quantized_dimension": int(q.QuantizedDimension()) if per_channel else None}


def _buffer_sizes(model, data: bytes) -> list[int]:
    """The size of every buffer, each checked to lie inside the file."""
    sizes = []
    for b in range(_check_length(model.BuffersLength(), data, "buffers")):
        buffer = model.Buffers(b)
        if buffer.Offset() > 1:  # data stored outside the flatbuffer (models > 2 GB)
            if buffer.Offset() + buffer.Size() > len(data):
                raise ArtifactError(f"buffer {b} ends at byte {buffer.Offset() + buffer.Size()} "
                                    f"of a {len(data)}-byte file")
            sizes.append(int(buffer.Size()))
        else:
            length = _check_length(buffer.DataLength(), data, f"buffer {b}")
            if length:
                buffer.DataAsNumpy()  # raises when the bytes run past the end of the file
            sizes.append(length)
    return sizes


def _metadata(model, data: bytes, n_buffers: int) -> tuple[dict[str, Any], dict[str, int], list[dict]]:
    """Decoded metadata entries, the buffer each uses, and the files zipped after the flatbuffer."""
    buffers: dict[str, int] = {}
    metadata: dict[str, Any] = {}
    for m in range(_check_length(model.MetadataLength(), data, "metadata")):
        entry = model.Metadata(m)
        name = entry.Name().decode("utf-8", "replace")
        index = entry.Buffer()
        if not 0 <= index < n_buffers:
            raise ArtifactError(f"metadata {name!r} points at buffer {index} of {n_buffers}")
        raw = model.Buffers(index).DataAsNumpy()
        raw = b"" if isinstance(raw, int) else raw.tobytes()
        buffers[name] = index
        metadata[name] = decode_tflite_metadata(name, raw)
    associated = appended_files(data)
    if associated:
        metadata["associated_files"] = associated
    missing = sorted(listed_files(metadata.get(TFLITE_METADATA_NAME)) - {f["name"] for f in associated})
    if missing:  # the zip after the flatbuffer was cut off or damaged
        raise ArtifactError(f"TFLite Metadata lists {', '.join(missing)} but the file does not contain "
                            f"{'it' if len(missing) == 1 else 'them'} ({len(data)} bytes): truncated")
    return metadata, buffers, associated


def _operator_codes(schema, model, data: bytes) -> list[str]:
    op_names = enum_names(schema.BuiltinOperator)
    codes = []
    for c in range(_check_length(model.OperatorCodesLength(), data, "operator codes")):
        code = model.OperatorCodes(c)
        # Builtin codes above 127 live in BuiltinCode; older files only fill the deprecated int8 field.
        value = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        name = op_names.get(value, f"BUILTIN_{value}")
        if name == "CUSTOM" and code.CustomCode():
            name = f"CUSTOM:{code.CustomCode().decode('utf-8', 'replace')}"
        codes.append(name)
    return codes


def _tensors(schema, graph, data: bytes, buffer_sizes: list[int]) -> list[dict[str, Any]]:
    type_names = {k: v.lower() for k, v in enum_names(schema.TensorType).items()}
    n_buffers = len(buffer_sizes)
    tensors = []
    for t in range(_check_length(graph.TensorsLength(), data, "tensors")):
        tensor = graph.Tensors(t)
        shape = [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
        signature = [int(d) for d in tensor.ShapeSignatureAsNumpy()] if tensor.ShapeSignatureLength() else shape
        buffer = int(tensor.Buffer())
        if not 0 <= buffer < max(n_buffers, 1):
            raise ArtifactError(f"tensor {t} points at buffer {buffer} of {n_buffers}")
        tensors.append({"name": (tensor.Name() or b"").decode("utf-8", "replace"), "shape": signature,
                        "dtype": type_names.get(int(tensor.Type()), f"type_{tensor.Type()}"),
                        "constant": buffer > 0 and buffer < n_buffers and buffer_sizes[buffer] > 0,
                        "bytes": buffer_sizes[buffer] if 0 < buffer < n_buffers else 0,
                        "variable": bool(tensor.IsVariable()), **_tflite_quant(tensor)})
    return tensors


def _operators(graph, data: bytes, codes: list[str], tensors: list[dict], tensor_list) -> list[dict[str, Any]]:
    operators = []
    for o in range(_check_length(graph.OperatorsLength(), data, "operators")):
        op = graph.Operators(o)
        index = int(op.OpcodeIndex())
        if not 0 <= index < len(codes):
            raise ArtifactError(f"operator {o} uses opcode {index} of {len(codes)}")
        inputs = tensor_list(op.InputsAsNumpy()) if op.InputsLength() else []  # -1 = optional, absent
        outputs = tensor_list(op.OutputsAsNumpy()) if op.OutputsLength() else []
        operators.append({"index": o, "type": codes[index], "inputs": inputs, "outputs": outputs})
    for op in operators:
        activations = [tensors[i] for i in op["inputs"] if not tensors[i]["constant"]]
        weights = [tensors[i] for i in op["inputs"] if tensors[i]["constant"]]
        outs = [tensors[i] for i in op["outputs"]]
        float_compute = any(t["dtype"] in FLOAT_DTYPES for t in activations + outs)
        op["mode"] = op_mode(op["type"], float_compute, weights)
    return operators


def _read_tflite(data: bytes) -> dict[str, Any]:
    schema = tflite_schema()
    model = schema.Model.GetRootAs(data, 0)
    buffer_sizes = _buffer_sizes(model, data)
    metadata, metadata_buffers, associated = _metadata(model, data, len(buffer_sizes))
    codes = _operator_codes(schema, model, data)
    if model.SubgraphsLength() < 1:
        raise ArtifactError("the model has no subgraph")
    graph = model.Subgraphs(0)
    tensors = _tensors(schema, graph, data, buffer_sizes)

    def tensor_list(indices) -> list[int]:
        return [int(i) for i in indices if 0 <= int(i) < len(tensors)]

    graph_inputs = tensor_list(graph.InputsAsNumpy()) if graph.InputsLength() else []
    graph_outputs = tensor_list(graph.OutputsAsNumpy()) if graph.OutputsLength() else []
    for tensor in tensors:  # blockwise scale tensors are quantization parameters, not weights
        if 0 <= tensor.get("block_scales", -1) < len(tensors):
            tensors[tensor["block_scales"]]["qparam"] = True
    operators = _operators(graph, data, codes, tensors, tensor_list)
    return summarise("tflite", tensors, operators, graph_inputs, graph_outputs, metadata,
                     extra={"schema_version": int(model.Version()),
                            "description": (model.Description() or b"").decode("utf-8", "replace"),
                            "subgraphs": int(model.SubgraphsLength()), "file_bytes": len(data),
                            "weight_bits": weight_bits(tensors, operators),
                            "metadata_bytes": sum(buffer_sizes[i] for i in metadata_buffers.values())
                            + sum(f["bytes"] for f in associated)})


def op_mode(op_type: str, float_compute: bool, weights: list[dict]) -> str:
    """How an operator computes: integer, float, hybrid (float activations, int8 weights), boundary.

    Args:
        op_type: the builtin name.
        float_compute: whether any activation it reads or writes is float.
        weights: its constant inputs.

    >>> op_mode("FULLY_CONNECTED", True, [{"dtype": "int8"}])
    'hybrid'
    """
    if op_type in BOUNDARY_OPS:
        return "boundary"
    if not float_compute:
        return "integer"
    if any(w["dtype"] in ("int8", "uint8", "int4", "int2") for w in weights):
        return "hybrid"
    return "float"
