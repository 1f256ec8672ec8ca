"""Can TensorFlow Lite Micro run this ``.tflite``? Per op: its resolver method, kernel, and what TFLM lacks.

Read from the flatbuffer (LiteRT's schema) and TFLM's own op table, vendored as data from a
named tflite-micro commit (``edgeqd/_vendor/tflm_ops.json``, written by
``scripts/vendor_tflm_ops.py``; never parsed from headers at run time). For each operator type:

- the ``MicroMutableOpResolver::Add…()`` method that registers it, or none: TFLM has no kernel
  and ``MicroInterpreter::AllocateTensors()`` fails naming the op (checked: not at ``Invoke()``);
- the kernel a Cortex-M build gets: an optimized CMSIS-NN kernel, or TFLM's portable
  reference kernel only;
- what the kernel refuses although the op exists: INT2 tensors (no INT2 in TFLM), INT4 filters
  outside CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED, per-channel INT4 FULLY_CONNECTED
  (``fully_connected_common.cc``: "only Int8/Int16 are supported for per channel quantization"),
  and hybrid (float activations, integer weights) FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D.

Two facts of the file matter too: buffers stored after the flatbuffer (``Buffer.offset``,
written by ai-edge-quantizer once the weights reach 256 KiB) are **silently ignored by TFLM**,
which then runs with empty weights — :func:`inline_buffers` puts them back inside; and TFLM
unpacks every INT4 filter into an int8 scratch buffer in the arena, so int4 weights halve the
flash and add the largest unpacked filter to the RAM (``int4_unpack_bytes``).

These rules are what TFLM's source says at the vendored commit; the ``tflm`` device and the
bundle also run the model in TFLM itself, which has the last word.

>>> tflm_table()["methods"]["FULLY_CONNECTED"]
'AddFullyConnected'
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from edgeqd.artifact_info.metadata import enum_names
from edgeqd.artifact_info.tflite import tflite_schema

__all__ = ["inline_buffers", "offset_buffers", "resolver_calls", "tflm_compatibility", "tflm_table"]

# Kernels whose integer form needs integer weights: with a float input and integer filter they are
# "hybrid" (dynamic-range) models, which TFLM's kernels refuse ("Input type: FLOAT32 with filter type: INT8").
_WEIGHTED_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")
_LOW_BIT = {"INT4", "UINT4", "INT2"}


@functools.lru_cache(maxsize=1)
def tflm_table() -> dict[str, Any]:
    """The vendored TFLM op table: ``methods`` (op → ``Add…`` method), ``python_wheel``, ``cmsis_nn``,
    ``int4_filter_ops``, and the ``commit``/``date`` of tflite-micro it was read from.

    >>> len(tflm_table()["commit"])
    40
    """
    text = resources.files("edgeqd._vendor").joinpath("tflm_ops.json").read_text(encoding="utf-8")
    return json.loads(text)


def resolver_calls(op_types: list[str]) -> list[str]:
    """The ``MicroMutableOpResolver`` calls for these op types, in order, each once; ops TFLM lacks are left out.

    Args:
        op_types: TFLite op names ("CONV_2D", "CUSTOM:name").

    >>> resolver_calls(["CONV_2D", "UNIDIRECTIONAL_SEQUENCE_LSTM", "CONV_2D", "GELU"])
    ['AddConv2D()', 'AddUnidirectionalSequenceLSTM()']
    """
    methods = tflm_table()["methods"]
    return list(dict.fromkeys(methods[op] + "()" for op in op_types if op in methods))


def _model(data: bytes):
    return tflite_schema().Model.GetRootAs(data, 0)


def offset_buffers(data: bytes) -> int:
    """How many buffers of the flatbuffer are stored after it (``Buffer.offset``), which TFLM ignores.

    Args:
        data: the ``.tflite`` bytes.
    """
    model = _model(data)
    return sum(1 for b in range(model.BuffersLength()) if model.Buffers(b).Offset() > 1)


def inline_buffers(data: bytes) -> bytes:
    """``data`` with every buffer stored after the flatbuffer moved inside it (unchanged when there is none).

    TFLM does not read ``Buffer.offset``: it would treat those weights as empty tensors and run
    with whatever the arena holds. LiteRT's own flatbuffer tools read them in and write them back
    inline (LiteRT gives identical outputs before and after; checked on ai-edge-quantizer's w8a8 and
    w4a8 files). Only for files under 2 GiB, which every MCU model is.

    Args:
        data: the ``.tflite`` bytes.
    """
    if not offset_buffers(data):
        return data
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(
        flatbuffer_utils.read_model_from_bytearray(bytearray(data))))


def _tensor_facts(schema, model, graph) -> list[dict[str, Any]]:
    types = enum_names(schema.TensorType)
    facts = []
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        buffer = tensor.Buffer()
        stored = model.Buffers(buffer) if 0 < buffer < model.BuffersLength() else None
        quantization = tensor.Quantization()
        facts.append({"type": types.get(tensor.Type(), str(tensor.Type())),
                      "constant": stored is not None and (stored.DataLength() > 0 or stored.Offset() > 1),
                      "scales": quantization.ScaleLength() if quantization is not None else 0,
                      "elements": int(abs(functools.reduce(lambda a, b: a * b, tensor.ShapeAsNumpy(), 1)))
                      if tensor.ShapeLength() else 1})
    return facts


def _op_problems(op_type: str, inputs: list[dict], table: dict) -> list[str]:
    """What TFLM's kernel for this op refuses in this instance (empty when nothing)."""
    found = []
    low_bit = [t for t in inputs if t["type"] in _LOW_BIT]
    if any(t["type"] == "INT2" for t in inputs):
        found.append("INT2 tensor: TFLM has no INT2 type (allocation fails: \"Failed to populate a temp "
                     "TfLiteTensor struct from flatbuffer data\")")
    elif low_bit and op_type not in table["int4_filter_ops"]:
        found.append(f"{low_bit[0]['type']} weights: TFLM's {op_type} kernel takes none (INT4 filters only "
                     f"in {', '.join(table['int4_filter_ops'])})")
    elif op_type == "FULLY_CONNECTED" and any(t["type"] == "INT4" and t["scales"] > 1 for t in inputs):
        found.append("INT4 weights per channel: TFLM's FULLY_CONNECTED takes INT4 per-tensor only "
                     "(fully_connected_common.cc); quantize this layer's weights per tensor")
    activations = [t for t in inputs if not t["constant"]]
    weights = [t for t in inputs if t["constant"]]
    if (op_type in _WEIGHTED_OPS and activations and activations[0]["type"] == "FLOAT32"
            and weights and weights[0]["type"] != "FLOAT32"):
        found.append(f"hybrid op (float activations, {weights[0]['type']} weights, i.e. dynamic-range): "
                     "TFLM's kernels refuse it (\"Input type: FLOAT32 with filter type: "
                     f"{weights[0]['type']} not supported\"); use a full-integer model")
    return found


def _kernel_note(op_type: str, table: dict) -> tuple[str, str, str]:
    """(status, kernel, note) of an op type from the vendored table."""
    method = table["methods"].get(op_type)
    if method is None:
        return ("missing", "", f"TFLM has no kernel for {op_type}: MicroInterpreter::AllocateTensors() fails "
                f"(\"Didn't find op for builtin opcode '{op_type}'\"); no MicroMutableOpResolver method exists")
    if method not in table["python_wheel"]:
        return ("board-only", "", f"{method}() registers a kernel only in a build for that hardware "
                "(e.g. an Ethos-U NPU); the host interpreter cannot run it")
    if op_type in table["cmsis_nn"]:
        return ("ok", "cmsis-nn", "optimized CMSIS-NN kernel on Arm Cortex-M (int8/int16); "
                "reference kernel elsewhere")
    return "ok", "reference", "reference kernel only: TFLM has no optimized (CMSIS-NN) kernel for it"


def tflm_compatibility(data: bytes) -> dict[str, Any]:
    """Whether TFLM can run this ``.tflite``, per op type, with the resolver calls it needs.

    Args:
        data: the ``.tflite`` bytes.

    Returns:
        ``{"runnable", "problems", "ops": [{"op", "count", "method", "status", "kernel", "note",
        "problems"}], "resolver_calls", "offset_buffers", "int4_unpack_bytes", "tflm_commit"}``:
        ``status`` is ok, missing (no kernel in TFLM), board-only (a vendor NPU build) or
        unsupported (the kernel exists but refuses this instance: ``problems`` says why).
        ``offset_buffers`` > 0 is not a problem here: run :func:`inline_buffers` first (the
        ``tflm`` device and the bundle do), and it is listed so that nobody ships the raw file.

    >>> tflm_compatibility(open("model_int8.tflite", "rb").read())["runnable"]  # doctest: +SKIP
    True
    """
    schema, table = tflite_schema(), tflm_table()
    model = _model(data)
    ops_names = enum_names(schema.BuiltinOperator)
    codes = []
    for c in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(c)
        name = ops_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "UNKNOWN")
        codes.append(f"CUSTOM:{code.CustomCode().decode('utf-8', 'replace')}" if name == "CUSTOM" else name)
    rows: dict[str, dict[str, Any]] = {}
    int4_unpack = 0
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        tensors = _tensor_facts(schema, model, graph)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            op_type = codes[op.OpcodeIndex()] if op.OpcodeIndex() < len(codes) else "UNKNOWN"
            inputs = [tensors[i] for i in (op.InputsAsNumpy() if op.InputsLength() else []) if 0 <= i < len(tensors)]
            if op_type not in rows:
                status, kernel, note = _kernel_note(op_type, table)
                rows[op_type] = {"op": op_type, "count": 0, "method": table["methods"].get(op_type, ""),
                                 "status": status, "kernel": kernel, "note": note, "problems": []}
            row = rows[op_type]
            row["count"] += 1
            for problem in _op_problems(op_type, inputs, table):
                text = f"{op_type} #{o}{f' (subgraph {g})' if g else ''}: {problem}"
                if problem not in (p.split(": ", 1)[1] for p in row["problems"]):
                    row["problems"].append(text)
            if op_type in table["int4_filter_ops"]:
                int4_unpack = max([int4_unpack] + [t["elements"] for t in inputs if t["type"] == "INT4" and t["constant"]])
    for row in rows.values():
        if row["problems"] and row["status"] == "ok":
            row["status"] = "unsupported"
    problems = [row["note"] for row in rows.values() if row["status"] in ("missing", "board-only")]
    problems += [p for row in rows.values() for p in row["problems"]]
    return {"runnable": not problems, "problems": problems, "ops": list(rows.values()),
            "resolver_calls": resolver_calls(list(rows)), "offset_buffers": offset_buffers(data),
            "int4_unpack_bytes": int4_unpack, "tflm_commit": table["commit"], "tflm_date": table["date"]}
