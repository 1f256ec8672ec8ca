"""Reading an ``.onnx`` model with the ``onnx`` protobuf parser and checker.

In QDQ form every tensor is typed float: an op "runs int8" when its float inputs all
come out of ``DequantizeLinear`` and its float outputs all go into ``QuantizeLinear``
(runtimes fuse that into an int8 kernel), and the scale and zero point of a Q/DQ pair
are attached to the integer tensor, as TFLite attaches them.

>>> onnx_dtype(1), onnx_dtype(3)
('float32', 'int8')
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from edgeqd.artifact_info.lowbit import weight_bits
from edgeqd.artifact_info.metadata import read_metadata_props
from edgeqd.artifact_info.summary import BOUNDARY_OPS, FLOAT_DTYPES, summarise
from edgeqd.errors import ArtifactError


def inspect_onnx(path: Path, data: bytes) -> dict[str, Any]:
    """The inspect answer for an ONNX file (without ``file``, ``format`` and ``bytes``).

    Args:
        path: the file, for messages.
        data: its bytes.

    Raises:
        ArtifactError: not a readable protobuf, no graph, or the checker or the reader rejects it (exit 3).

    >>> inspect_onnx(Path("m.onnx"), Path("m.onnx").read_bytes())["quantization"]  # doctest: +SKIP
    'int8 (QDQ)'
    """
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


def onnx_dtype(elem_type: int) -> str:
    """numpy's name of an ONNX element type (ONNX's own name, lower case, where numpy has none).

    Args:
        elem_type: a ``TensorProto.DataType`` value.

    >>> onnx_dtype(7)
    'int64'
    """
    import onnx

    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:  # types numpy has no name for (e.g. float8)
        return onnx.TensorProto.DataType.Name(elem_type).lower()


class _Tensors:
    """The graph's tensors, each added once, found by name."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.rows: list[dict] = []
        self.constants: dict[str, np.ndarray] = {}

    def add(self, name: str, dtype: str, shape: list[int], constant: bool = False, nbytes: int = 0) -> int:
        if name in self.index:
            return self.index[name]
        self.index[name] = len(self.rows)
        self.rows.append({"name": name, "shape": shape, "dtype": dtype, "constant": constant, "bytes": nbytes,
                          "scale": [], "zero_point": [], "granularity": None, "quantized_dimension": None,
                          "variable": False})
        return self.index[name]

    def of(self, name: str) -> int:
        return self.index[name] if name in self.index else self.add(name, "unknown", [])


def _collect_tensors(graph) -> _Tensors:
    """Initializers, Constant outputs and every typed value of the graph."""
    import onnx
    from onnx import numpy_helper

    tensors = _Tensors()
    for init in graph.initializer:
        array = numpy_helper.to_array(init) if init.data_location != onnx.TensorProto.EXTERNAL else None
        if array is not None:
            tensors.constants[init.name] = array
        nbytes = int(array.nbytes) if array is not None else 0
        if init.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4) and array is not None:
            nbytes = (int(array.size) + 1) // 2  # stored two per byte (numpy unpacks them to one each)
        tensors.add(init.name, onnx_dtype(init.data_type), list(init.dims), True, nbytes)
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            array = numpy_helper.to_array(node.attribute[0].t)
            tensors.constants[node.output[0]] = array
            tensors.add(node.output[0], array.dtype.name, list(array.shape), True, int(array.nbytes))
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            continue
        tt = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        tensors.add(value.name, onnx_dtype(tt.elem_type), shape)
    return tensors


def _attach_qdq_parameters(graph, tensors: _Tensors) -> None:
    """Scale / zero point of each Q/DQ pair, attached to the integer tensor it (de)quantizes."""
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 2:
            continue
        scale = tensors.constants.get(node.input[1])
        zero = tensors.constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if scale is None:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        scales = [float(s) for s in np.ravel(scale)]
        zeros = [int(z) for z in np.ravel(zero)] if zero is not None else [0] * len(scales)
        quant = {"scale": scales, "zero_point": zeros,
                 "granularity": "per-channel" if len(scales) > 1 else "per-tensor",
                 "quantized_dimension": int(axis) if len(scales) > 1 else None}
        for name in node.input[1:]:
            if name in tensors.index:
                tensors.rows[tensors.index[name]]["qparam"] = True
        # The integer tensor (input of DQ / output of Q) carries the parameters, as in TFLite.
        target = node.input[0] if node.op_type == "DequantizeLinear" else node.output[0]
        tensors.rows[tensors.of(target)].update(quant)


def _mode(node, inputs: list[int], tensors: _Tensors, dq_outputs: set[str], consumers: dict,
          low_bit_dq: set[str] = frozenset()) -> str:
    """How one node computes: boundary, integer (QLinear*, or fused between DQ and Q), hybrid, or float.

    ONNX Runtime's CPU provider has no integer kernel for int4 weights: an op reading a dequantized
    int4 initializer (``low_bit_dq``) runs in float on the dequantized weights — "hybrid", like
    TFLite's dynamic-range ops — even between DQ and Q.
    """
    rows = tensors.rows
    activations = [rows[i] for i in inputs if not rows[i]["constant"]]
    if node.op_type in BOUNDARY_OPS:
        return "boundary"
    if node.op_type.startswith("QLinear") or node.op_type in ("ConvInteger", "MatMulInteger"):
        return "integer"
    if any(t["dtype"] in FLOAT_DTYPES for t in activations) or not activations:
        float_in = [t["name"] for t in activations if t["dtype"] in FLOAT_DTYPES]
        # In QDQ form an op "runs int8" when its float inputs all come out of DequantizeLinear
        # and its float outputs all go into QuantizeLinear: runtimes fuse that into an int8 kernel.
        from_dq = all(name in dq_outputs for name in float_in)
        to_q = all(consumers[n] and all(c.op_type == "QuantizeLinear" for c in consumers[n])
                   for n in node.output if rows[tensors.index[n]]["dtype"] in FLOAT_DTYPES)
        if float_in and from_dq and to_q:
            return "hybrid" if any(name in low_bit_dq for name in float_in) else "integer"
        return "float"
    return "integer"


def _operators(graph, tensors: _Tensors) -> list[dict[str, Any]]:
    import onnx

    dq_outputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    low_bit = {init.name for init in graph.initializer
               if init.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)}
    low_bit_dq = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in low_bit}
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    operators = []
    for o, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue
        inputs = [tensors.of(n) for n in node.input if n]
        outputs = [tensors.of(n) for n in node.output if n]
        op_type = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
        operators.append({"index": o, "type": op_type, "inputs": inputs, "outputs": outputs,
                          "mode": _mode(node, inputs, tensors, dq_outputs, consumers, low_bit_dq)})
    return operators


def _read_onnx(model, file_bytes: int) -> dict[str, Any]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # custom domains inference does not know: keep declared types only
        inferred = model
    graph = inferred.graph
    tensors = _collect_tensors(graph)
    _attach_qdq_parameters(graph, tensors)
    graph_inputs = [tensors.of(v.name) for v in model.graph.input if v.name not in tensors.constants]
    graph_outputs = [tensors.of(v.name) for v in model.graph.output]
    operators = _operators(graph, tensors)
    extra = {"ir_version": int(model.ir_version), "producer": f"{model.producer_name} {model.producer_version}".strip(),
             "opsets": {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import
                        if o.domain in ("", "ai.onnx", "com.microsoft")},
             "file_bytes": file_bytes, "weight_bits": weight_bits(tensors.rows, operators),
             "metadata_bytes": sum(len(p.key) + len(p.value) for p in model.metadata_props)}
    return summarise("onnx", tensors.rows, operators, graph_inputs, graph_outputs, read_metadata_props(model), extra)
