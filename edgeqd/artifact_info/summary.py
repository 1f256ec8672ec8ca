"""The ``inspect`` answer built from a graph's tensors and operators, the same for TFLite and ONNX.

Each format's reader lists its tensors (name, shape, dtype, whether constant, bytes,
quantization parameters) and its operators (type, input and output tensor indices, and
how each computes: ``integer``, ``float``, ``hybrid`` or ``boundary``); :func:`summarise`
names the quantization scheme, builds the operator table, flags ops that compute in float
in a quantized model and splits the file's size into weights, graph and metadata.

>>> elements([-1, 28, 28, 1]), itemsize("int8")
(784, 1)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from edgeqd.artifact_info.lowbit import low_bit_dtypes, lowbit_scheme

# Ops that move or reshape data without arithmetic: a float one costs a copy, not accuracy.
LAYOUT_OPS = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "CONCATENATION", "PACK", "UNPACK",
              "GATHER", "SLICE", "STRIDED_SLICE", "SPLIT", "PAD", "SHAPE", "Reshape", "Transpose",
              "Squeeze", "Unsqueeze", "Flatten", "Identity", "Concat", "Gather", "Slice", "Split",
              "Pad", "Shape", "Cast"}
# Ops that convert between float and integer at the model's edges.
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
FLOAT_DTYPES = {"float32", "float16", "float64", "bfloat16"}


def elements(shape: list[int]) -> int:
    """Number of elements of a shape; unknown (negative) dimensions count as 1.

    Args:
        shape: the dimensions.

    >>> elements([]), elements([-1, 10])
    (1, 10)
    """
    return int(np.prod([d if d > 0 else 1 for d in shape])) if shape else 1


def itemsize(dtype: str) -> int:
    """Bytes per element of a dtype name (1 for names numpy does not know).

    Args:
        dtype: e.g. "float32", "int8".

    >>> itemsize("float32"), itemsize("int4")
    (4, 1)
    """
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 1


_QUANTIZED_DTYPES = ("int8", "uint8", "int16", "int4", "uint4", "int2")


def _scheme(kind: str, tensors: list[dict], operators: list[dict], quantized: bool) -> str:
    """The quantization scheme's name: float32, float16 weights, dynamic-range, full-int8, …"""
    modes = Counter(op["mode"] for op in operators)
    compute_float = [op for op in operators if op["mode"] == "float" and op["type"] not in LAYOUT_OPS]
    if not quantized:
        return "float16 weights" if any(t["constant"] and t["dtype"] == "float16" for t in tensors) else "float32"
    low = low_bit_dtypes(tensors)
    if low:  # int4/int2 weights: full-integer (int4 weights), int4 weights + float activations, ...
        return lowbit_scheme(kind, low, Counter(op["mode"] for op in operators
                                                if op["mode"] != "float" or op["type"] not in LAYOUT_OPS))
    if modes["hybrid"] and not modes["integer"]:
        return "dynamic-range"
    if kind == "onnx":
        return "int8 (QDQ)" if not compute_float else "int8 (QDQ) with float fallback"
    if any(t["dtype"] == "int16" and not t["constant"] for t in tensors) and not modes["float"]:
        return "int16x8"  # int16 activations, int8 weights
    if not modes["float"] and not modes["hybrid"]:
        return "full-int8"
    return "int8 with float fallback"


def _operator_table(tensors: list[dict], operators: list[dict], quantized: bool) -> list[dict[str, Any]]:
    """One row per operator type: count, input/output dtypes, modes, and whether it runs in float."""
    table: dict[str, dict] = defaultdict(lambda: {"count": 0, "input_dtypes": set(), "output_dtypes": set(),
                                                  "modes": set()})
    for op in operators:
        row = table[op["type"]]
        row["count"] += 1
        row["input_dtypes"].update(tensors[i]["dtype"] for i in op["inputs"])
        row["output_dtypes"].update(tensors[i]["dtype"] for i in op["outputs"])
        row["modes"].add(op["mode"])
    return [{"type": name, "count": row["count"], "input_dtypes": sorted(row["input_dtypes"]),
             "output_dtypes": sorted(row["output_dtypes"]), "modes": sorted(row["modes"]),
             "float": quantized and bool(row["modes"] & {"float", "hybrid"})}
            for name, row in sorted(table.items(), key=lambda item: (-item[1]["count"], item[0]))]


def _float_ops(tensors: list[dict], operators: list[dict], graph_io: list[int]) -> tuple[list[dict], list[str]]:
    """The ops computing in float (or hybrid) in a quantized model, and the activations they pass in float."""
    float_ops = []
    for op in operators:
        if op["mode"] in ("float", "hybrid"):
            outs = [tensors[i]["name"] for i in op["outputs"]]
            float_ops.append({"index": op["index"], "type": op["type"], "mode": op["mode"],
                              "layout_only": op["type"] in LAYOUT_OPS, "outputs": outs})
    # Activations that really flow in float: what float/hybrid ops read and write (in a QDQ graph
    # every tensor is typed float, but between DequantizeLinear and QuantizeLinear it is int8 data).
    float_activations = sorted({tensors[i]["name"] for op in operators if op["mode"] in ("float", "hybrid")
                                for i in op["inputs"] + op["outputs"]
                                if not tensors[i]["constant"] and tensors[i]["dtype"] in FLOAT_DTYPES
                                and i not in graph_io})
    return float_ops, float_activations


def _sizes(tensors: list[dict], operators: list[dict]) -> dict[str, Any]:
    """Weights by dtype, weight scale granularity, activation and Q/DQ parameter bytes."""
    by_dtype: dict[str, dict[str, int]] = defaultdict(lambda: {"tensors": 0, "elements": 0, "bytes": 0})
    weight_scales: Counter = Counter()
    activation_bytes, qparam_bytes = 0, 0
    constants = {i for op in operators for i in op["inputs"] if tensors[i]["constant"]}
    used = {i for op in operators for i in op["inputs"] + op["outputs"]}
    for i, t in enumerate(tensors):
        if not t["constant"]:
            if i in used:
                activation_bytes += elements(t["shape"]) * itemsize(t["dtype"])
            continue
        if t.get("qparam"):  # ONNX Q/DQ scales and zero points: quantization parameters, not weights
            qparam_bytes += t["bytes"]
            continue
        by_dtype[t["dtype"]]["tensors"] += 1
        by_dtype[t["dtype"]]["elements"] += elements(t["shape"])
        by_dtype[t["dtype"]]["bytes"] += t["bytes"]
        if t["granularity"] and i in constants:
            weight_scales[t["granularity"]] += 1
    return {"by_dtype": by_dtype, "weight_scales": weight_scales, "activation_bytes": activation_bytes,
            "qparam_bytes": qparam_bytes, "activation_tensors": sum(1 for i in used if not tensors[i]["constant"])}


def _io_entry(tensor: dict) -> dict[str, Any]:
    return {key: tensor[key] for key in ("name", "shape", "dtype", "scale", "zero_point", "granularity",
                                         "quantized_dimension")}


def summarise(kind: str, tensors: list[dict], operators: list[dict], graph_inputs: list[int],
              graph_outputs: list[int], metadata: dict, extra: dict) -> dict[str, Any]:
    """Turn tensors + operators (with a ``mode`` each) into the inspect answer.

    Args:
        kind: "tflite" or "onnx".
        tensors: every tensor: name, shape, dtype, constant, bytes, scale, zero_point, granularity,
            quantized_dimension (and ``qparam`` for ONNX Q/DQ parameters).
        operators: every operator: index, type, inputs, outputs (tensor indices) and mode.
        graph_inputs: indices of the graph's inputs.
        graph_outputs: indices of the graph's outputs.
        metadata: the decoded embedded metadata.
        extra: format-specific keys for the answer; ``file_bytes`` and ``metadata_bytes`` are taken
            out of it for the size breakdown.

    >>> summarise("onnx", [], [], [], [], {}, {})["quantization"]
    'float32'
    """
    # Quantized: tensors with scales, hybrid ops, or int8/int16 data. An op that is "integer" only because it
    # reads and writes int32/int64 (token-id lookups, shape arithmetic in a float model) quantizes nothing.
    quantized = any(t["scale"] for t in tensors) or any(op["mode"] == "hybrid" for op in operators) or any(
        op["mode"] == "integer" and any(tensors[i]["dtype"] in _QUANTIZED_DTYPES for i in op["inputs"] + op["outputs"])
        for op in operators)
    scheme = _scheme(kind, tensors, operators, quantized)
    compute_float = [op for op in operators if op["mode"] == "float" and op["type"] not in LAYOUT_OPS]
    # In a float model every op is float by design: nothing to flag.
    float_ops, float_activations = (_float_ops(tensors, operators, graph_inputs + graph_outputs) if quantized
                                    else ([], []))
    sizes = _sizes(tensors, operators)
    by_dtype = sizes["by_dtype"]
    weights_bytes = sum(row["bytes"] for row in by_dtype.values())
    # Parameters: learnt values (float or quantized weights, int32 biases), not shape/index constants.
    parameters = sum(row["elements"] for dtype, row in by_dtype.items() if dtype != "int64")
    file_bytes = extra.pop("file_bytes", None)
    metadata_bytes = extra.pop("metadata_bytes", 0)
    result = {
        "quantization": scheme,
        "inputs": [_io_entry(tensors[i]) for i in graph_inputs],
        "outputs": [_io_entry(tensors[i]) for i in graph_outputs],
        "operators": _operator_table(tensors, operators, quantized),
        "operator_count": len(operators),
        "float_ops": float_ops,
        "float_fallback": [f"{op['type']} #{op['index']}" for op in compute_float] if quantized else [],
        "float_activations": float_activations,
        "weight_scales": {"per_channel": sizes["weight_scales"]["per-channel"],
                          "per_tensor": sizes["weight_scales"]["per-tensor"]},
        "parameters": {"count": parameters, "weights_bytes": weights_bytes, "metadata_bytes": metadata_bytes,
                       "quantization_params_bytes": sizes["qparam_bytes"],
                       "by_dtype": {k: dict(v) for k, v in sorted(by_dtype.items())}},
        # Every activation tensor at once: an upper bound for an arena (runtimes reuse memory).
        "activations": {"tensors": sizes["activation_tensors"], "bytes": sizes["activation_bytes"]},
        "metadata": metadata,
        "notes": [],
        **extra,
    }
    if file_bytes is not None:
        result["parameters"]["graph_bytes"] = max(file_bytes - weights_bytes - metadata_bytes - sizes["qparam_bytes"],
                                                  0)
    if scheme == "dynamic-range" or scheme.endswith("float activations"):
        result["notes"].append(f"dynamic-range (weights-only) model: {len(float_activations)} activation "
                               "tensors stay float32; inputs and outputs are float")
    elif float_ops:
        layout = sum(op["layout_only"] for op in float_ops)
        result["notes"].append(f"{len(float_ops)} op(s) compute in float in a quantized model "
                               f"({len(float_ops) - layout} arithmetic, {layout} layout-only)")
    return result
