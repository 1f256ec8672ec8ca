"""Weights below 8 bits in the inspect answer: each weighted op's stored bits, and the scheme's name.

The readers (:mod:`~edgeqd.artifact_info.tflite`, :mod:`~edgeqd.artifact_info.onnx`) list
tensors and operators; here the weight of every convolution / fully connected / MatMul op
is found — a constant input, or the constant behind a ``DEQUANTIZE``/``DequantizeLinear``
(weight-only and QDQ files) — and its stored type named: ``int4`` (TFLite type 17, two per
byte), ``int2`` (type 19, four per byte), ``int8``, ``float32``. The scheme then reads
"full-integer (int4 weights)" for a w4a8 file, "int4 weights, float activations" for a
dynamic-range or weight-only one, "int8 (QDQ), int4 weights" for ONNX.

>>> lowbit_scheme("tflite", ["int4"], {"integer": 5})
'full-integer (int4 weights)'
>>> lowbit_scheme("tflite", ["int2", "int4"], {"hybrid": 3, "boundary": 1})
'int2/int4 weights, float activations'
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

__all__ = ["LOW_BIT_DTYPES", "WEIGHT_OPS", "weight_bits", "lowbit_scheme", "low_bit_dtypes"]

# Stored types below 8 bits (the LiteRT schema's INT4 = 17, INT2 = 19, UINT4 = 20; ONNX INT4/UINT4).
LOW_BIT_DTYPES = ("int2", "int4", "uint4")
# Ops whose second input is a weight, in both formats.
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "BATCH_MATMUL",
              "EMBEDDING_LOOKUP", "Conv", "MatMul", "Gemm", "ConvTranspose")
_BITS = {"int2": 2, "int4": 4, "uint4": 4, "int8": 8, "uint8": 8, "int16": 16, "float16": 16, "float32": 32}
_DEQUANTIZE = ("DEQUANTIZE", "DequantizeLinear")


def weight_bits(tensors: Sequence[Mapping[str, Any]], operators: Sequence[Mapping[str, Any]]) -> list[dict]:
    """One row per weighted op: its weight tensor's name, stored type and bits, granularity and elements.

    Args:
        tensors: the reader's tensors (name, dtype, constant, shape, granularity, ...).
        operators: the reader's operators (type, inputs, outputs as tensor indices).
    """
    producers = {i: op for op in operators for i in op["outputs"]}
    rows = []
    for op in operators:
        if op["type"] not in WEIGHT_OPS or len(op["inputs"]) < 2:
            continue
        index = op["inputs"][1] if op["type"] != "EMBEDDING_LOOKUP" else op["inputs"][-1]
        producer = producers.get(index)
        through = producer is not None and producer["type"] in _DEQUANTIZE and producer["inputs"]
        if through:
            index = producer["inputs"][0]
        tensor = tensors[index]
        if not tensor["constant"]:
            continue
        elements = 1
        for d in tensor["shape"]:
            elements *= max(int(d), 1)
        rows.append({"op": op["type"], "index": op["index"], "weight": tensor["name"], "dtype": tensor["dtype"],
                     "bits": _BITS.get(tensor["dtype"]), "granularity": tensor.get("granularity"),
                     "block_size": tensor.get("block_size"), "elements": elements,
                     "through_dequantize": bool(through)})
    return rows


def low_bit_dtypes(tensors: Sequence[Mapping[str, Any]]) -> list[str]:
    """The sub-8-bit types of the constant tensors (weights), sorted; quantization parameters left out.

    Args:
        tensors: the reader's tensors.
    """
    return sorted({t["dtype"] for t in tensors if t["constant"] and not t.get("qparam")
                   and t["dtype"] in LOW_BIT_DTYPES})


def lowbit_scheme(kind: str, low: Sequence[str], modes: Mapping[str, int]) -> Optional[str]:
    """The scheme's name for a file with sub-8-bit weights (None when it has none).

    Args:
        kind: "tflite" or "onnx".
        low: :func:`low_bit_dtypes` of the file.
        modes: how many ops compute each way ("integer", "hybrid", "float", "boundary").
    """
    if not low:
        return None
    weights = "/".join(low)
    if kind == "onnx":
        return f"int8 (QDQ), {weights} weights"
    if modes.get("integer") and not modes.get("hybrid") and not modes.get("float"):
        return f"full-integer ({weights} weights)"
    if not modes.get("integer"):
        return f"{weights} weights, float activations"
    return f"{weights} weights, int8 with float fallback"
