"""The weights a ``.tflite`` file really stores: bit widths read back, values unpacked and dequantized.

An int4 or int2 weight is not what a runtime says it runs; it is what the file holds. This
module reads it with LiteRT's flatbuffer schema only (no runtime): the tensor type
(``INT4`` = 17, ``INT2`` = 19), the packing (two int4 or four int2 values per byte, **low
bits first**, sign-extended — TFLite's and ai-edge-quantizer's convention), the scales
(per tensor, per channel on ``quantized_dimension``, or blockwise with a FLOAT16/FLOAT32
scale tensor of shape (out, in/block)), and buffers stored after the flatbuffer
(``Buffer.offset``/``size``, which ai-edge-quantizer writes once the weights reach 256 KiB).

:func:`weighted_ops` lists every convolution and fully connected op with its weight's
stored type (a weight-only model feeds the op from ``DEQUANTIZE(const)``: the constant
behind it is the weight); :func:`dequantized` turns a stored weight back into floats — the
independent reading the low-bit verification compares each runtime with.

>>> unpack(np.array([0x7F, 0x18], np.uint8), 4, 4).tolist()
[-1, 7, -8, 1]
>>> unpack(np.array([0b11100100], np.uint8), 2, 4).tolist()
[0, 1, -2, -1]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from edgeqd.errors import ArtifactError

__all__ = ["STORED_BITS", "WEIGHTED_OPS", "StoredWeight", "weighted_ops", "dequantized", "unpack", "buffer_bytes",
           "blockwise_details"]

# Bits per stored element of each TFLite tensor type name (lower case, as inspect names them).
STORED_BITS = {"int2": 2, "int4": 4, "uint4": 4, "int8": 8, "uint8": 8, "int16": 16, "float16": 16,
               "int32": 32, "float32": 32, "int64": 64}
# The ops whose second input is a weight matrix or filter (and the ones low-bit formats quantize below 8 bits).
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D")


@dataclass(frozen=True)
class StoredWeight:
    """One weighted op of a ``.tflite`` and how its weight is stored.

    Attributes:
        op_index: the operator's index in the first subgraph.
        op: its builtin name ("FULLY_CONNECTED").
        tensor: the weight tensor's index (the constant behind a ``DEQUANTIZE`` for weight-only files).
        name: the weight tensor's name.
        layer: the layer the weight belongs to: its name without the last path segment
            ("model/fc1/MatMul" → "model/fc1"); the key that ties a TFLite op to its ONNX node.
        output: the op's first output tensor's name (ai-edge-quantizer's scope of the op).
        dtype: the stored type ("int4", "int2", "int8", "float32", …).
        bits: bits per stored element.
        shape: the weight's shape.
        elements: its number of values.
        bytes: the bytes its buffer holds.
        granularity: "per-channel", "per-tensor", "blockwise" or None (a float weight).
        block_size: the block size of a blockwise weight, else None.
        weight_only: the op reads the weight through a ``DEQUANTIZE`` (float compute).
    """

    op_index: int
    op: str
    tensor: int
    name: str
    layer: str
    output: str
    dtype: str
    bits: int
    shape: tuple
    elements: int
    bytes: int
    granularity: Optional[str]
    block_size: Optional[int] = None
    weight_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out


def layer_of(name: str) -> str:
    """The layer a weight tensor belongs to: its name's first ``;`` part without the last path segment.

    The converter names a weight it folded into its op's output after that output, ``;``-joined
    ("model/conv/Relu;model/conv/BiasAdd;model/conv/Conv2D;…", e.g. the first convolution of a
    1-channel model); its first part still names the layer, the same key as the ONNX node's.

    Args:
        name: the weight tensor's name ("model/fc1/MatMul" → "model/fc1").
    """
    first = name.split(";", 1)[0]
    return first.rsplit("/", 1)[0] if "/" in first else first


def _schema():
    from edgeqd.artifact_info.tflite import tflite_schema

    return tflite_schema()


def buffer_bytes(model, data: bytes, index: int) -> np.ndarray:
    """The bytes of buffer ``index`` (uint8), inside the flatbuffer or after it (``offset``/``size``).

    Args:
        model: the schema's ``Model`` root.
        data: the file's bytes.
        index: the buffer's index.
    """
    buffer = model.Buffers(index)
    if buffer.Offset() > 1:  # stored after the flatbuffer (ai-edge-quantizer, weights >= 256 KiB)
        if buffer.Offset() + buffer.Size() > len(data):
            raise ArtifactError(f"buffer {index} ends at byte {buffer.Offset() + buffer.Size()} of a "
                                f"{len(data)}-byte file")
        return np.frombuffer(data, np.uint8, count=int(buffer.Size()), offset=int(buffer.Offset()))
    if not buffer.DataLength():
        return np.zeros(0, np.uint8)
    return buffer.DataAsNumpy()


def unpack(raw: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Signed ``bits``-bit values packed ``8 // bits`` per byte, low bits first, as int8.

    Args:
        raw: the packed bytes (uint8).
        bits: 2 or 4.
        count: how many values (the last byte may be half used).
    """
    per_byte = 8 // bits
    raw = np.asarray(raw, np.uint8)
    values = np.stack([(raw >> (bits * k)) & ((1 << bits) - 1) for k in range(per_byte)], axis=1).reshape(-1)[:count]
    if len(values) < count:
        raise ArtifactError(f"{len(raw)} bytes hold {len(values)} {bits}-bit values, the tensor needs {count}")
    values = values.astype(np.int16)
    return np.where(values >= 1 << (bits - 1), values - (1 << bits), values).astype(np.int8)


def _type_names() -> dict[int, str]:
    schema = _schema()
    return {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


def blockwise_details(quantization) -> Optional[Any]:
    """The ``BlockwiseQuantization`` table of a tensor's quantization, or None (per tensor / per channel / none).

    Args:
        quantization: ``Tensor.Quantization()`` (may be None).
    """
    schema = _schema()
    if quantization is None or quantization.DetailsType() != schema.QuantizationDetails.BlockwiseQuantization:
        return None
    details = schema.BlockwiseQuantization()
    table = quantization.Details()
    details.Init(table.Bytes, table.Pos)
    return details


def _granularity(tensor) -> tuple[Optional[str], Optional[int]]:
    quantization = tensor.Quantization()
    blockwise = blockwise_details(quantization)
    if blockwise is not None:
        return "blockwise", int(blockwise.BlockSize())
    if quantization is None or quantization.ScaleLength() == 0:
        return None, None
    return ("per-channel" if quantization.ScaleLength() > 1 else "per-tensor"), None


def weighted_ops(data: bytes) -> list[StoredWeight]:
    """Every convolution / fully connected op of the first subgraph and its stored weight, in graph order.

    Args:
        data: a ``.tflite`` file's bytes.

    >>> [w.dtype for w in weighted_ops(open("model_w4a8.tflite", "rb").read())]  # doctest: +SKIP
    ['int4', 'int8', 'int4', 'int4']
    """
    schema = _schema()
    model = schema.Model.GetRootAs(data, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [names.get(max(int(c.BuiltinCode()), int(c.DeprecatedBuiltinCode())), "?")
             for c in (model.OperatorCodes(i) for i in range(model.OperatorCodesLength()))]
    types = _type_names()
    graph = model.Subgraphs(0)
    producers: dict[int, tuple[str, Any]] = {}
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        for t in (op.OutputsAsNumpy() if op.OutputsLength() else []):
            producers[int(t)] = (codes[op.OpcodeIndex()], op)
    found = []
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        kind = codes[op.OpcodeIndex()]
        if kind not in WEIGHTED_OPS or op.InputsLength() < 2:
            continue
        index = int(op.InputsAsNumpy()[1])  # the filter (TRANSPOSE_CONV: after the output shape)
        weight_only = index in producers and producers[index][0] == "DEQUANTIZE"
        if weight_only:
            index = int(producers[index][1].InputsAsNumpy()[0])
        tensor = graph.Tensors(index)
        buffer = model.Buffers(tensor.Buffer())
        stored = int(buffer.Size()) if buffer.Offset() > 1 else int(buffer.DataLength())
        if stored == 0:
            continue  # not a constant (a weight computed at run time)
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        name = (tensor.Name() or b"").decode("utf-8", "replace")
        dtype = types.get(int(tensor.Type()), f"type_{tensor.Type()}")
        granularity, block = _granularity(tensor)
        output = graph.Tensors(int(op.OutputsAsNumpy()[0])) if op.OutputsLength() else None
        found.append(StoredWeight(o, kind, index, name, layer_of(name),
                                  (output.Name() or b"").decode("utf-8", "replace") if output is not None else "",
                                  dtype, STORED_BITS.get(dtype, 0), shape, int(np.prod(shape)) if shape else 1,
                                  stored, granularity, block, weight_only))
    return found


def dequantized(data: bytes, tensor_index: int) -> np.ndarray:
    """The float values a stored constant tensor means: unpacked, minus its zero point, times its scale.

    Args:
        data: a ``.tflite`` file's bytes.
        tensor_index: the tensor (e.g. :attr:`StoredWeight.tensor`).

    Raises:
        ArtifactError: a type this reader does not decode, or bytes that do not fit the shape.
    """
    schema = _schema()
    model = schema.Model.GetRootAs(data, 0)
    graph = model.Subgraphs(0)
    tensor = graph.Tensors(tensor_index)
    raw = buffer_bytes(model, data, tensor.Buffer())
    shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    count = int(np.prod(shape)) if shape else 1
    dtype = _type_names().get(int(tensor.Type()), "?")
    if dtype in ("float32", "float16"):
        return np.frombuffer(raw.tobytes(), dtype).astype(np.float32).reshape(shape)
    if dtype in ("int2", "int4"):
        values = unpack(raw, STORED_BITS[dtype], count)
    elif dtype in ("int8", "uint8", "int16", "int32"):
        values = np.frombuffer(raw.tobytes(), dtype)[:count]
    else:
        raise ArtifactError(f"tensor {tensor_index} ({dtype}): no decoder for this type")
    values = values.astype(np.float32).reshape(shape)
    quantization = tensor.Quantization()
    blockwise = blockwise_details(quantization)
    if blockwise is not None:
        scales_tensor = graph.Tensors(int(blockwise.Scales()))
        scale_type = _type_names().get(int(scales_tensor.Type()), "float32")
        scales = np.frombuffer(buffer_bytes(model, data, scales_tensor.Buffer()).tobytes(),
                               np.float16 if scale_type == "float16" else np.float32).astype(np.float32)
        block = int(blockwise.BlockSize())
        scales = scales.reshape(shape[0], -1)  # (out, in / block)
        return (values.reshape(shape[0], -1, block) * scales[..., None]).reshape(shape)
    if quantization is None or quantization.ScaleLength() == 0:
        return values
    scale = quantization.ScaleAsNumpy().astype(np.float32)
    zero = quantization.ZeroPointAsNumpy().astype(np.float32) if quantization.ZeroPointLength() else \
        np.zeros_like(scale)
    broadcast = [1] * len(shape)
    if scale.size > 1:
        broadcast[int(quantization.QuantizedDimension())] = -1
    return (values - zero.reshape(broadcast)) * scale.reshape(broadcast)
