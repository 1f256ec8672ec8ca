"""``edgeqd inspect``: what is inside a ``.tflite`` or ``.onnx`` artifact.

The file is read with the runtimes' own parsers: LiteRT's flatbuffer schema
(``schema_py_generated``, verified by LiteRT's loader) for TFLite, and the ``onnx``
protobuf + checker for ONNX. The kind of file is taken from its content (the TFLite
file identifier ``TFL3``), never guessed from its name. The answer is a JSON-ready
dict: inputs and outputs with quantization parameters, an operator table, the ops
that still compute in float in a quantized model, per-tensor vs per-channel weight
scales, parameter count and size breakdown, and the embedded metadata.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgeqd.errors import ArtifactError

TFLITE_IDENTIFIER = b"TFL3"
TFLITE_METADATA_NAME = "TFLITE_METADATA"  # the TFLite Metadata spec's buffer name
EDGEQD_METADATA_NAME = "edgeqd"  # edgeqd's own JSON copy of the metadata

# Ops that move or reshape data without arithmetic: a float one costs a copy, not accuracy.
LAYOUT_OPS = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "CONCATENATION", "PACK", "UNPACK",
              "GATHER", "SLICE", "STRIDED_SLICE", "SPLIT", "PAD", "SHAPE", "Reshape", "Transpose",
              "Squeeze", "Unsqueeze", "Flatten", "Identity", "Concat", "Gather", "Slice", "Split",
              "Pad", "Shape", "Cast"}
# Ops that convert between float and integer at the model's edges.
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
FLOAT_DTYPES = {"float32", "float16", "float64", "bfloat16"}


def tflite_schema():
    """LiteRT's generated flatbuffer schema module (the TFLite ``schema.fbs`` in Python).

    >>> tflite_schema().TensorType.INT8
    9
    """
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # older boards: TensorFlow's copy of the same generated file
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _enum_names(enum_class) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items()
            if not name.startswith("_") and isinstance(value, int)}


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
    kind = artifact_kind(path, data)
    info = _inspect_tflite(path, data) if kind == "tflite" else _inspect_onnx(path, data)
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


# --------------------------------------------------------------------------- TFLite

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


def _inspect_tflite(path: Path, data: bytes) -> dict[str, Any]:
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
    if q is None or q.ScaleLength() == 0:
        return {"scale": [], "zero_point": [], "granularity": None, "quantized_dimension": None}
    scale = [float(s) for s in q.ScaleAsNumpy()]
    zero = [int(z) for z in q.ZeroPointAsNumpy()] if q.ZeroPointLength() else [0] * len(scale)
    per_channel = len(scale) > 1
    return {"scale": scale, "zero_point": zero, "granularity": "per-channel" if per_channel else "per-tensor",
            "quantized_dimension": int(q.QuantizedDimension()) if per_channel else None}


def _read_tflite(data: bytes) -> dict[str, Any]:
    schema = tflite_schema()
    type_names = {k: v.lower() for k, v in _enum_names(schema.TensorType).items()}
    op_names = _enum_names(schema.BuiltinOperator)
    model = schema.Model.GetRootAs(data, 0)
    n_buffers = _check_length(model.BuffersLength(), data, "buffers")
    buffer_sizes = []
    for b in range(n_buffers):
        buffer = model.Buffers(b)
        if buffer.Offset() > 1:  # data stored outside the flatbuffer (models > 2 GB)
            if buffer.Offset() + buffer.Size() > len(data):
                raise ArtifactError(f"buffer {b} ends at byte {buffer.Offset() + buffer.Size()} "
                                    f"of a {len(data)}-byte file")
            buffer_sizes.append(int(buffer.Size()))
        else:
            length = _check_length(buffer.DataLength(), data, f"buffer {b}")
            if length:
                buffer.DataAsNumpy()  # raises when the bytes run past the end of the file
            buffer_sizes.append(length)

    metadata_buffers: dict[str, int] = {}
    metadata: dict[str, Any] = {}
    for m in range(_check_length(model.MetadataLength(), data, "metadata")):
        entry = model.Metadata(m)
        name = entry.Name().decode("utf-8", "replace")
        index = entry.Buffer()
        if not 0 <= index < n_buffers:
            raise ArtifactError(f"metadata {name!r} points at buffer {index} of {n_buffers}")
        raw = model.Buffers(index).DataAsNumpy()
        raw = b"" if isinstance(raw, int) else raw.tobytes()
        metadata_buffers[name] = index
        metadata[name] = _decode_tflite_metadata(name, raw)
    associated = _appended_files(data)
    if associated:
        metadata["associated_files"] = associated
    listed = _listed_files(metadata.get(TFLITE_METADATA_NAME))
    missing = sorted(listed - {f["name"] for f in associated})
    if missing:  # the zip after the flatbuffer was cut off or damaged
        raise ArtifactError(f"TFLite Metadata lists {', '.join(missing)} but the file does not contain "
                            f"{'it' if len(missing) == 1 else 'them'} ({len(data)} bytes): truncated")

    codes = []
    for c in range(_check_length(model.OperatorCodesLength(), data, "operator codes")):
        code = model.OperatorCodes(c)
        # Builtin codes above 127 live in BuiltinCode; older files only fill the deprecated int8 field.
        value = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        name = op_names.get(value, f"BUILTIN_{value}")
        if name == "CUSTOM" and code.CustomCode():
            name = f"CUSTOM:{code.CustomCode().decode('utf-8', 'replace')}"
        codes.append(name)

    if model.SubgraphsLength() < 1:
        raise ArtifactError("the model has no subgraph")
    graph = model.Subgraphs(0)
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

    def tensor_list(indices) -> list[int]:
        return [int(i) for i in indices if 0 <= int(i) < len(tensors)]

    graph_inputs = tensor_list(graph.InputsAsNumpy()) if graph.InputsLength() else []
    graph_outputs = tensor_list(graph.OutputsAsNumpy()) if graph.OutputsLength() else []

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
        op["mode"] = _op_mode(op["type"], float_compute, weights)

    return _summarise("tflite", tensors, operators, graph_inputs, graph_outputs, metadata,
                      extra={"schema_version": int(model.Version()),
                             "description": (model.Description() or b"").decode("utf-8", "replace"),
                             "subgraphs": int(model.SubgraphsLength()), "file_bytes": len(data),
                             "metadata_bytes": sum(buffer_sizes[i] for i in metadata_buffers.values())
                             + sum(f["bytes"] for f in associated)})


def _op_mode(op_type: str, float_compute: bool, weights: list[dict]) -> str:
    """How an operator computes: integer, float, hybrid (float activations, int8 weights), boundary."""
    if op_type in BOUNDARY_OPS:
        return "boundary"
    if not float_compute:
        return "integer"
    if any(w["dtype"] in ("int8", "uint8", "int4") for w in weights):
        return "hybrid"
    return "float"


def _summarise(kind: str, tensors: list[dict], operators: list[dict], graph_inputs: list[int],
               graph_outputs: list[int], metadata: dict, extra: dict) -> dict[str, Any]:
    """Turn tensors + operators (with a ``mode`` each) into the inspect answer."""
    quantized = any(t["scale"] for t in tensors) or any(op["mode"] in ("integer", "hybrid") for op in operators)
    modes = Counter(op["mode"] for op in operators)
    compute_float = [op for op in operators if op["mode"] == "float" and op["type"] not in LAYOUT_OPS]
    if not quantized:
        scheme = "float16 weights" if any(t["constant"] and t["dtype"] == "float16" for t in tensors) else "float32"
    elif modes["hybrid"] and not modes["integer"]:
        scheme = "dynamic-range"
    elif kind == "onnx":
        scheme = "int8 (QDQ)" if not compute_float else "int8 (QDQ) with float fallback"
    elif any(t["dtype"] == "int16" and not t["constant"] for t in tensors) and not modes["float"]:
        scheme = "int16x8"  # int16 activations, int8 weights
    elif not modes["float"] and not modes["hybrid"]:
        scheme = "full-int8"
    else:
        scheme = "int8 with float fallback"

    table: dict[str, dict] = defaultdict(lambda: {"count": 0, "input_dtypes": set(), "output_dtypes": set(),
                                                  "modes": set()})
    for op in operators:
        row = table[op["type"]]
        row["count"] += 1
        row["input_dtypes"].update(tensors[i]["dtype"] for i in op["inputs"])
        row["output_dtypes"].update(tensors[i]["dtype"] for i in op["outputs"])
        row["modes"].add(op["mode"])
    operator_table = [{"type": name, "count": row["count"], "input_dtypes": sorted(row["input_dtypes"]),
                       "output_dtypes": sorted(row["output_dtypes"]), "modes": sorted(row["modes"]),
                       "float": quantized and bool(row["modes"] & {"float", "hybrid"})}
                      for name, row in sorted(table.items(), key=lambda item: (-item[1]["count"], item[0]))]

    float_ops = []
    if quantized:  # in a float model every op is float by design: nothing to flag
        for op in operators:
            if op["mode"] in ("float", "hybrid"):
                outs = [tensors[i]["name"] for i in op["outputs"]]
                float_ops.append({"index": op["index"], "type": op["type"], "mode": op["mode"],
                                  "layout_only": op["type"] in LAYOUT_OPS, "outputs": outs})
    constants = {i for op in operators for i in op["inputs"] if tensors[i]["constant"]}
    # Activations that really flow in float: what float/hybrid ops read and write (in a QDQ graph
    # every tensor is typed float, but between DequantizeLinear and QuantizeLinear it is int8 data).
    float_activations = sorted({tensors[i]["name"] for op in operators if op["mode"] in ("float", "hybrid")
                                for i in op["inputs"] + op["outputs"]
                                if not tensors[i]["constant"] and tensors[i]["dtype"] in FLOAT_DTYPES
                                and i not in graph_inputs + graph_outputs})

    by_dtype: dict[str, dict[str, int]] = defaultdict(lambda: {"tensors": 0, "elements": 0, "bytes": 0})
    weight_scales = Counter()
    activation_bytes, qparam_bytes = 0, 0
    used = {i for op in operators for i in op["inputs"] + op["outputs"]}
    for i, t in enumerate(tensors):
        if not t["constant"]:
            if i in used:
                activation_bytes += _elements(t["shape"]) * _itemsize(t["dtype"])
            continue
        if t.get("qparam"):  # ONNX Q/DQ scales and zero points: quantization parameters, not weights
            qparam_bytes += t["bytes"]
            continue
        elements = _elements(t["shape"])
        by_dtype[t["dtype"]]["tensors"] += 1
        by_dtype[t["dtype"]]["elements"] += elements
        by_dtype[t["dtype"]]["bytes"] += t["bytes"]
        if t["granularity"] and i in constants:
            weight_scales[t["granularity"]] += 1
    weights_bytes = sum(row["bytes"] for row in by_dtype.values())
    # Parameters: learnt values (float or quantized weights, int32 biases), not shape/index constants.
    parameters = sum(row["elements"] for dtype, row in by_dtype.items() if dtype != "int64")
    file_bytes = extra.pop("file_bytes", None)
    metadata_bytes = extra.pop("metadata_bytes", 0)

    def io_entry(i: int) -> dict[str, Any]:
        t = tensors[i]
        return {key: t[key] for key in ("name", "shape", "dtype", "scale", "zero_point", "granularity",
                                        "quantized_dimension")}

    result = {
        "quantization": scheme,
        "inputs": [io_entry(i) for i in graph_inputs],
        "outputs": [io_entry(i) for i in graph_outputs],
        "operators": operator_table,
        "operator_count": len(operators),
        "float_ops": float_ops,
        "float_fallback": [f"{op['type']} #{op['index']}" for op in compute_float] if quantized else [],
        "float_activations": float_activations if quantized else [],
        "weight_scales": {"per_channel": weight_scales["per-channel"], "per_tensor": weight_scales["per-tensor"]},
        "parameters": {"count": parameters, "weights_bytes": weights_bytes, "metadata_bytes": metadata_bytes,
                       "quantization_params_bytes": qparam_bytes,
                       "by_dtype": {k: dict(v) for k, v in sorted(by_dtype.items())}},
        # Every activation tensor at once: an upper bound for an arena (runtimes reuse memory).
        "activations": {"tensors": sum(1 for i in used if not tensors[i]["constant"]), "bytes": activation_bytes},
        "metadata": metadata,
        "notes": [],
        **extra,
    }
    if file_bytes is not None:
        result["parameters"]["graph_bytes"] = max(file_bytes - weights_bytes - metadata_bytes - qparam_bytes, 0)
    if scheme == "dynamic-range":
        result["notes"].append(f"dynamic-range (weights-only) model: {len(float_activations)} activation "
                               "tensors stay float32; inputs and outputs are float")
    elif float_ops:
        layout = sum(op["layout_only"] for op in float_ops)
        result["notes"].append(f"{len(float_ops)} op(s) compute in float in a quantized model "
                               f"({len(float_ops) - layout} arithmetic, {layout} layout-only)")
    return result


def _elements(shape: list[int]) -> int:
    return int(np.prod([d if d > 0 else 1 for d in shape])) if shape else 1


def _itemsize(dtype: str) -> int:
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 1


def _decode_tflite_metadata(name: str, raw: bytes) -> Any:
    """Readable form of one entry of the model's ``metadata`` table."""
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


def read_tflite_model_metadata(raw: bytes) -> dict[str, Any]:
    """Decode a TFLite Metadata (``ModelMetadata``, identifier ``M001``) buffer into a dict.

    Args:
        raw: the bytes of the model's ``TFLITE_METADATA`` buffer.

    >>> from edgeqd.bundle import build_tflite_model_metadata
    >>> read_tflite_model_metadata(build_tflite_model_metadata({"model_name": "m"}, [], []))["name"]
    'm'
    """
    from edgeqd._vendor import tflite_metadata_schema as meta

    if len(raw) < 8 or raw[4:8] != b"M001":
        raise ArtifactError(f"TFLite Metadata buffer has identifier {raw[4:8]!r}, expected b'M001'")
    model = meta.ModelMetadataT.InitFromObj(meta.ModelMetadata.GetRootAsModelMetadata(raw, 0))
    color_spaces = _enum_names(meta.ColorSpaceType)
    file_types = _enum_names(meta.AssociatedFileType)

    def text(value) -> Optional[str]:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

    def files(items) -> list[dict]:
        return [{"name": text(f.name), "description": text(f.description),
                 "type": file_types.get(f.type, f.type)} for f in items or []]

    def tensor(t) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": text(t.name), "description": text(t.description)}
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
            entry["stats"] = {"min": [float(v) for v in t.stats.min if t.stats.min is not None] if t.stats.min is not None else [],
                              "max": [float(v) for v in t.stats.max] if t.stats.max is not None else []}
        if t.associatedFiles:
            entry["associated_files"] = files(t.associatedFiles)
        return entry

    subgraphs = model.subgraphMetadata or []
    return {"name": text(model.name), "description": text(model.description), "version": text(model.version),
            "author": text(model.author), "license": text(model.license),
            "min_parser_version": text(model.minParserVersion),
            "inputs": [tensor(t) for s in subgraphs for t in s.inputTensorMetadata or []],
            "outputs": [tensor(t) for s in subgraphs for t in s.outputTensorMetadata or []],
            "associated_files": files(model.associatedFiles)}


def _listed_files(model_metadata: Any) -> set[str]:
    """Names of the associated files a decoded TFLite Metadata refers to."""
    if not isinstance(model_metadata, dict) or "error" in model_metadata:
        return set()
    entries = list(model_metadata.get("associated_files", []))
    for tensor in model_metadata.get("inputs", []) + model_metadata.get("outputs", []):
        entries += tensor.get("associated_files", [])
    return {e["name"] for e in entries if e.get("name")}


def _appended_files(data: bytes) -> list[dict[str, Any]]:
    """Files packed after the flatbuffer as a zip (how the TFLite Metadata spec ships labels)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [{"name": i.filename, "bytes": i.file_size} for i in archive.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError):
        return []


# --------------------------------------------------------------------------- ONNX

def _inspect_onnx(path: Path, data: bytes) -> dict[str, Any]:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not a readable ONNX protobuf ({type(exc).__name__}: {str(exc)[:200]}; "
                            f"{len(data)} bytes): truncated or corrupt") from None
    if not model.graph.node:
        raise ArtifactError(f"{path}: no ONNX graph in {len(data)} bytes (neither a TFLite flatbuffer nor "
                            "an ONNX model)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError and C++-side errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ArtifactError(f"{path}: invalid ONNX model ({first[:200]}); {len(data)} bytes") from None
    try:
        return _read_onnx(model, len(data))
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"{path}: inconsistent ONNX graph ({type(exc).__name__}: {str(exc)[:200]})") from None


def _onnx_dtype(elem_type: int) -> str:
    import onnx

    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:  # types numpy has no name for (e.g. float8)
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _read_onnx(model, file_bytes: int) -> dict[str, Any]:
    import onnx
    from onnx import numpy_helper

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # custom domains inference does not know: keep declared types only
        inferred = model
    graph = inferred.graph
    index: dict[str, int] = {}
    tensors: list[dict] = []

    def add(name: str, dtype: str, shape: list[int], constant: bool = False, nbytes: int = 0) -> int:
        if name in index:
            return index[name]
        index[name] = len(tensors)
        tensors.append({"name": name, "shape": shape, "dtype": dtype, "constant": constant, "bytes": nbytes,
                        "scale": [], "zero_point": [], "granularity": None, "quantized_dimension": None,
                        "variable": False})
        return index[name]

    constants: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        array = numpy_helper.to_array(init) if init.data_location != onnx.TensorProto.EXTERNAL else None
        if array is not None:
            constants[init.name] = array
        nbytes = int(array.nbytes) if array is not None else 0
        add(init.name, _onnx_dtype(init.data_type), list(init.dims), True, nbytes)
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            array = numpy_helper.to_array(node.attribute[0].t)
            constants[node.output[0]] = array
            add(node.output[0], array.dtype.name, list(array.shape), True, int(array.nbytes))
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            continue
        tt = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        add(value.name, _onnx_dtype(tt.elem_type), shape)

    def tensor_index(name: str) -> int:
        return index[name] if name in index else add(name, "unknown", [])

    dq_outputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    # Scale / zero point of a Q/DQ pair, attached to the float tensor it (de)quantizes.
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 2:
            continue
        scale = constants.get(node.input[1])
        zero = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if scale is None:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        scales = [float(s) for s in np.ravel(scale)]
        zeros = [int(z) for z in np.ravel(zero)] if zero is not None else [0] * len(scales)
        quant = {"scale": scales, "zero_point": zeros,
                 "granularity": "per-channel" if len(scales) > 1 else "per-tensor",
                 "quantized_dimension": int(axis) if len(scales) > 1 else None}
        for name in node.input[1:]:
            if name in index:
                tensors[index[name]]["qparam"] = True
        # The integer tensor (input of DQ / output of Q) carries the parameters, as in TFLite.
        target = node.input[0] if node.op_type == "DequantizeLinear" else node.output[0]
        tensors[tensor_index(target)].update(quant)

    graph_inputs = [tensor_index(v.name) for v in model.graph.input if v.name not in constants]
    graph_outputs = [tensor_index(v.name) for v in model.graph.output]
    operators = []
    for o, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue
        inputs = [tensor_index(n) for n in node.input if n]
        outputs = [tensor_index(n) for n in node.output if n]
        op_type = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
        activations = [tensors[i] for i in inputs if not tensors[i]["constant"]]
        if node.op_type in BOUNDARY_OPS:
            mode = "boundary"
        elif node.op_type.startswith("QLinear") or node.op_type in ("ConvInteger", "MatMulInteger"):
            mode = "integer"
        elif any(t["dtype"] in FLOAT_DTYPES for t in activations) or not activations:
            float_in = [t["name"] for t in activations if t["dtype"] in FLOAT_DTYPES]
            # In QDQ form an op "runs int8" when its float inputs all come out of DequantizeLinear
            # and its float outputs all go into QuantizeLinear: runtimes fuse that into an int8 kernel.
            from_dq = all(name in dq_outputs for name in float_in)
            to_q = all(consumers[n] and all(c.op_type == "QuantizeLinear" for c in consumers[n])
                       for n in node.output if tensors[index[n]]["dtype"] in FLOAT_DTYPES)
            mode = "integer" if float_in and from_dq and to_q else "float"
        else:
            mode = "integer"
        operators.append({"index": o, "type": op_type, "inputs": inputs, "outputs": outputs, "mode": mode})

    metadata: dict[str, Any] = {}
    for prop in model.metadata_props:
        try:
            metadata[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            metadata[prop.key] = prop.value
    extra = {"ir_version": int(model.ir_version), "producer": f"{model.producer_name} {model.producer_version}".strip(),
             "opsets": {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import
                        if o.domain in ("", "ai.onnx", "com.microsoft")},
             "file_bytes": file_bytes,
             "metadata_bytes": sum(len(p.key) + len(p.value) for p in model.metadata_props)}
    return _summarise("onnx", tensors, operators, graph_inputs, graph_outputs, metadata, extra)
