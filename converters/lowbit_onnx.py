"""ONNX below 8 bits: ``onnx-w4a8`` — int4 QDQ weights, int8 activations, through ONNX Runtime's static quantization.

The float ONNX (tf2onnx, opset 17) is lifted to **opset 21** with ``onnx.version_converter``:
below 21, ``quantize_static`` writes every Q/DQ (the int8 activations' too) as
``com.microsoft`` contrib ops only ONNX Runtime runs; at 21 they are standard and an int4
weight is a native ``INT4`` initializer, two values per byte. Shape inference runs without
its optimisation pass (which stamps ONNX Runtime's internal domains into the model) and
without symbolic shapes (they need SymPy, which nothing else here needs).

Weights are int4 per channel on every Conv, MatMul and Gemm — except depthwise (group)
convolutions, kept int8 through ``TensorQuantOverrides`` as ``tflite-w4a8`` keeps them
(LiteRT has no int4 depthwise kernel), so both artifacts store the same bits. The same
overrides carry a mixed-precision plan (:func:`write_onnx_lowbit` with ``layer_bits``).

How ONNX Runtime 1.32 runs it (its optimised graph, checked): int8 QDQ fuses into
QLinearConv/QLinearMatMul; **int4 QDQ does not** — it runs as DequantizeLinear(int4) →
float op. ``onnx-w4a8`` halves the weights' storage; it is not an int4 kernel.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from edgeqd.converters.registry import ConversionContext, register_converter
from edgeqd.errors import ConversionError

__all__ = ["LOWBIT_OPSET", "weighted_nodes", "write_onnx_lowbit", "onnx_weight_details"]

LOWBIT_OPSET = 21
_WEIGHTED = ("Conv", "MatMul", "Gemm")


def _prepared(context: ConversionContext) -> Path:
    """The float ONNX at opset 21 with shapes inferred, made once per context."""
    cached = context.cache.get("onnx-fp32-opset21")
    if cached is not None:
        return cached
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeqd.converters.onnx import _float_onnx

    lifted = context.workdir / "float_opset21.onnx"
    prepared = context.workdir / "float_opset21_prepared.onnx"
    try:
        model = version_converter.convert_version(onnx.load(str(_float_onnx(context))), LOWBIT_OPSET)
        onnx.checker.check_model(model)
        onnx.save(model, str(lifted))
        quant_pre_process(str(lifted), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"the float ONNX model could not be lifted to opset {LOWBIT_OPSET}: {first[:300]}") \
            from None
    context.cache["onnx-fp32-opset21"] = prepared
    return prepared


def weighted_nodes(model) -> list[dict[str, Any]]:
    """Every Conv/MatMul/Gemm whose weight is an initializer: node, layer key, weight name, depthwise.

    The layer key is the node's name without its last path segment ("model/fc1/MatMul" →
    "model/fc1"), as :class:`edgeqd.artifact_info.weights.StoredWeight` keys TFLite ops.

    Args:
        model: an ``onnx.ModelProto``.
    """
    initializers = {i.name: i for i in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type not in _WEIGHTED or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = initializers[node.input[1]]
        found.append({"node": node.name, "op": node.op_type, "layer": node.name.rsplit("/", 1)[0],
                      "weight": node.input[1], "depthwise": node.op_type == "Conv" and group > 1,
                      "elements": int(np.prod(weight.dims)) if weight.dims else 1})
    return found


def _other_float_constants(model) -> list[str]:
    """Float initializers read by anything but a Conv/MatMul/Gemm (batch-norm parameters, Add/Mul constants).

    Args:
        model: an ``onnx.ModelProto``.
    """
    import onnx

    floats = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    return sorted({name for node in model.graph.node if node.op_type not in _WEIGHTED
                   for name in node.input if name in floats})


def onnx_weight_details(path: Path) -> list[dict[str, Any]]:
    """Per weighted node of a QDQ model: the stored type of the weight its DequantizeLinear reads.

    Args:
        path: the quantized ``.onnx``.
    """
    import onnx

    from edgeqd.artifact_info.onnx import onnx_dtype

    model = onnx.load(str(path))
    initializers = {i.name: i for i in model.graph.initializer}
    dequantized = {n.output[0]: initializers[n.input[0]] for n in model.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in initializers}
    rows = []
    for node in model.graph.node:
        if node.op_type not in _WEIGHTED or len(node.input) < 2 or node.input[1] not in dequantized:
            continue
        weight = dequantized[node.input[1]]
        dtype = onnx_dtype(weight.data_type)
        rows.append({"layer": node.name.rsplit("/", 1)[0].split("/", 1)[-1], "op": node.op_type, "dtype": dtype,
                     "elements": int(np.prod(weight.dims)) if weight.dims else 1,
                     "bytes": len(weight.raw_data) if weight.raw_data else None})
    return rows


def _second_path_agreement(path: Path, samples: np.ndarray) -> dict[str, Any]:
    """The artifact with ONNX Runtime's graph optimisations off vs on: the fused and the plain kernels agree."""
    import onnxruntime as ort

    from edgeqd.converters.kernels import agreement, sqnr_db

    outputs = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        x = samples if samples.dtype.kind in "iu" else samples.astype(np.float32)
        outputs.append(np.concatenate([session.run(None, {name: x[i:i + 256]})[0] for i in range(0, len(x), 256)]))
    return {"samples": int(len(samples)), "optimized_vs_plain_agreement": round(agreement(*outputs), 4),
            "optimized_vs_plain_sqnr_db": sqnr_db(outputs[1], outputs[0])}


def write_onnx_lowbit(context: ConversionContext, out_path: Path,
                      layer_bits: Optional[Mapping[str, int]] = None) -> dict[str, Any]:
    """Int4 QDQ weights (int8 where a depthwise conv or ``layer_bits`` says so), int8 activations, opset 21.

    Args:
        context: the run's context (float model, calibration samples).
        out_path: where to write the ``.onnx``.
        layer_bits: {layer key: 4 or 8} (a mixed-precision plan; see :func:`weighted_nodes`);
            None: int4 everywhere the runtime's TFLite twin has int4.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgeqd.converters.kernels import CHECK_SAMPLES
    from edgeqd.converters.onnx import _CalibrationReader

    prepared = _prepared(context)
    model = onnx.load(str(prepared), load_external_data=False)
    nodes = weighted_nodes(model)
    overrides, kept = {}, []
    for node in nodes:
        bits = 8 if node["depthwise"] else (layer_bits or {}).get(node["layer"], 4)
        if bits == 8:
            overrides[node["weight"]] = [{"quant_type": QuantType.QInt8}]
            kept.append(node["layer"].split("/", 1)[-1] + (": depthwise Conv keeps int8 weights, as in tflite-w4a8 "
                                                          "(LiteRT has no int4 depthwise kernel)"
                                                          if node["depthwise"] else ": int8 by the plan"))
    # QInt4 is ONNX Runtime's type for *every* constant input: the parameters of a batch norm it could
    # not fold (one after an Add, as in Xception) went to per-tensor int4 (fer's mini-Xception: 54.8 %
    # top-1 agreement vs 67 % for tflite-w4a8). Only Conv/MatMul/Gemm weights are meant to be int4.
    for extra in _other_float_constants(model):
        overrides.setdefault(extra, [{"quant_type": QuantType.QInt8}])
    try:
        with contextlib.redirect_stdout(sys.stderr):
            quantize_static(str(prepared), str(out_path),
                            _CalibrationReader(model.graph.input[0].name, context.calibration),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt4, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                           "TensorQuantOverrides": overrides})
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"ONNX Runtime int4 static quantization failed: {first[:400]}") from None
    details = {"opset": LOWBIT_OPSET, "per_channel": True, "calibration_method": "minmax",
               "weights": onnx_weight_details(out_path), "kept_higher": kept,
               "runtime_note": "ONNX Runtime runs int4 QDQ as DequantizeLinear + float op (a storage win, not an "
                               "int4 kernel); int8 QDQ fuses into QLinear ops",
               "kernels": _second_path_agreement(out_path, context.calibration[:CHECK_SAMPLES])}
    if details["kernels"]["optimized_vs_plain_agreement"] < 0.97:
        raise ConversionError(f"{out_path.name}: ONNX Runtime's optimised and plain graphs agree on only "
                              f"{100 * details['kernels']['optimized_vs_plain_agreement']:.1f}% of the samples")
    if kept:
        from edgeqd.converters.lowbit import grouped_notes

        details["note"] = "; ".join(grouped_notes(kept))
    return details


@register_converter("onnx-w4a8", filename="model_w4a8.onnx", runtime="onnx", quantized=True, dtype="w4a8",
                    description="ONNX int4 QDQ weights, int8 activations (opset 21; ORT runs DQ + float op)")
def convert_onnx_w4a8(context: ConversionContext, out_path: Path) -> dict:
    """Write the int4-weight, int8-activation QDQ ONNX model.

    Args:
        context: the model, calibration samples and settings.
        out_path: where to write the ``.onnx``.
    """
    return write_onnx_lowbit(context, out_path)
