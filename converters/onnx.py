"""ONNX artifacts: float32 through tf2onnx, int8 QDQ through ONNX Runtime static quantization.

The int8 model keeps float input and output (QuantizeLinear/DequantizeLinear at the
edges), calibrated on the same representative samples as the TFLite model.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np

from edgeqd.converters.registry import ConversionContext, register_converter
from edgeqd.errors import ConversionError

ONNX_OPSET = 17
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# TFLite builtins tf2onnx 1.17's TFLite front end has no handler for (checked: it logs
# "Unsupported ops" and fails later on a dangling constant).
TFLITE_OPS_TF2ONNX_LACKS = frozenset({"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM"})


def _float_onnx(context: ConversionContext) -> Path:
    """Export the Keras model to ONNX once per context (both ONNX converters need it)."""
    cached = context.cache.get("onnx-fp32")
    if cached is not None:
        return cached
    if context.saved_model_dir is not None:  # a layer-less SavedModel: tf2onnx --saved-model
        from edgeqd.converters.serving import onnx_from_saved_model

        context.cache["onnx-fp32"] = onnx_from_saved_model(context.saved_model_dir, context.workdir / "float.onnx",
                                                           ONNX_OPSET)
        return context.cache["onnx-fp32"]
    import tensorflow as tf
    import tf2onnx

    model = context.model
    # The Keras inputs' own dtypes: an int32 token-id input stays int32 in the ONNX graph.
    spec = tuple(tf.TensorSpec((None, *t.shape[1:]), t.dtype if t.dtype.is_integer else tf.float32,
                               name=t.name.split(":")[0]) for t in model.inputs)
    path = context.workdir / "float.onnx"
    try:
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=ONNX_OPSET, output_path=str(path))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"tf2onnx could not convert {model.name}: {first[:400]}") from None
    _replace_erfc(path)
    context.cache["onnx-fp32"] = path
    return path


def _replace_erfc(path: Path) -> None:
    """Rewrite TensorFlow's ``Erfc`` (exact GELU: ``tf.nn.gelu`` computes ``0.5·x·erfc(−x/√2)``) as ``1 − Erf``.

    tf2onnx 1.17 copies ``Erfc`` into the graph as it is, but ONNX has no such operator, so every
    model with an exact GELU (Keras' ``activation="gelu"``) gave an ONNX file ONNX Runtime refuses.

    Args:
        path: the ONNX file, rewritten in place when it holds ``Erfc`` nodes.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    if not any(node.op_type == "Erfc" for node in graph.node):
        return
    one = "edgeqd_erfc_one"
    graph.initializer.append(numpy_helper.from_array(np.ones((), np.float32), one))
    nodes = []
    for node in graph.node:
        if node.op_type != "Erfc" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        erf = f"{node.output[0]}_erf"
        nodes += [helper.make_node("Erf", [node.input[0]], [erf], name=f"{node.name}_erf"),
                  helper.make_node("Sub", [one, erf], [node.output[0]], name=node.name)]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(path))


@register_converter("onnx-fp32", filename="model_fp32.onnx", runtime="onnx", quantized=False,
                    description="ONNX float32 (tf2onnx)")
def convert_onnx_fp32(context: ConversionContext, out_path: Path) -> dict:
    """Write the float32 ONNX model.

    Args:
        context: the model and settings.
        out_path: where to write the ``.onnx``.
    """
    out_path.write_bytes(_float_onnx(context).read_bytes())
    return {"opset": ONNX_OPSET}


class _CalibrationReader:
    """ONNX Runtime's CalibrationDataReader protocol over a numpy array, one sample per call."""

    def __init__(self, input_name: str, samples: np.ndarray):
        self.input_name = input_name
        self.samples = samples
        self.index = 0

    def get_next(self):
        if self.index >= len(self.samples):
            return None
        sample = self.samples[self.index: self.index + 1]  # integer ids as they are: never quantized
        sample = sample if sample.dtype.kind in "iu" else sample.astype(np.float32)
        self.index += 1
        return {self.input_name: sample}

    def rewind(self) -> None:
        self.index = 0


@register_converter("onnx-int8", filename="model_int8.onnx", runtime="onnx", quantized=True,
                    description="ONNX int8 QDQ (ONNX Runtime static quantization)")
def convert_onnx_int8(context: ConversionContext, out_path: Path) -> dict:
    """Write the int8 QDQ ONNX model, calibrated on the context's samples.

    Args:
        context: the model, calibration samples and settings.
        out_path: where to write the ``.onnx``.
    """
    if context.quantization_aware:
        return _onnx_int8_from_qat(context, out_path)
    return _onnx_int8_ptq(context, out_path)


def _onnx_int8_ptq(context: ConversionContext, out_path: Path) -> dict:
    """ONNX Runtime static quantization of the float ONNX model, calibrated on the context's samples."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if context.calibration_method not in CALIBRATION_METHODS:
        raise ConversionError(f"unknown calibration method {context.calibration_method!r}; "
                              f"choose one of {', '.join(CALIBRATION_METHODS)}")
    float_path = _float_onnx(context)
    prepared = context.workdir / "float_prepared.onnx"
    try:
        # Shape inference and graph clean-up first, as ONNX Runtime recommends before quantizing.
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
    except Exception:
        prepared = float_path
    input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[context.calibration_method]
    try:
        # ONNX Runtime's histogram calibrators print progress to stdout, which must stay
        # clean for `--json`; send it to stderr with the rest of the chatter.
        with contextlib.redirect_stdout(sys.stderr):
            quantize_static(str(prepared), str(out_path), _CalibrationReader(input_name, context.calibration),
                            quant_format=QuantFormat.QDQ, per_channel=context.per_channel,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=method,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"ONNX Runtime static quantization failed: {first[:400]}") from None
    return {"per_channel": context.per_channel, "calibration_method": context.calibration_method,
            "opset": ONNX_OPSET}


def _rename_edges(model_proto, names: dict[str, str]) -> None:
    """Rename graph inputs/outputs (and every use of them) in place."""
    graph = model_proto.graph
    for value in list(graph.input) + list(graph.output):
        if value.name in names:
            value.name = names[value.name]
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]


def _onnx_int8_from_qat(context: ConversionContext, out_path: Path) -> dict:
    """The QAT model's int8 TFLite translated to QDQ ONNX: the ranges learnt in training ship unchanged.

    Re-calibrating with ONNX Runtime would throw away what QAT learnt; tf2onnx's
    TFLite front end maps each int8 tensor to QuantizeLinear/DequantizeLinear with
    the TFLite scale and zero point, so both artifacts compute the same integers.
    """
    import tf2onnx

    from edgeqd.converters.tflite import tflite_bytes

    from ai_edge_litert.interpreter import Interpreter

    tflite_path = context.workdir / "qat_int8.tflite"
    tflite_path.write_bytes(tflite_bytes(context, "qat", "int8"))
    missing = TFLITE_OPS_TF2ONNX_LACKS & {op["op_name"] for op in Interpreter(
        model_path=str(tflite_path))._get_ops_details()}
    if missing:
        # tf2onnx's TFLite front end has no fused LSTM (and TFMOT leaves LSTMs float anyway):
        # calibrate the float ONNX with ONNX Runtime instead, and say so.
        details = _onnx_int8_ptq(context, out_path)
        return {**details, "source": "ONNX Runtime static quantization of the float ONNX (calibrated, not QAT: "
                f"tf2onnx cannot translate TFLite's {', '.join(sorted(missing))})"}
    try:
        with contextlib.redirect_stdout(sys.stderr):
            model_proto, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=ONNX_OPSET)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"tf2onnx could not translate the QAT int8 TFLite model: {first[:400]}") from None
    # tf2onnx names the edges after TFLite's fused tensor names ("model/quantize_layer/…");
    # apps look them up by the Keras names.
    graph = model_proto.graph
    keras_inputs = [t.name.split(":")[0] for t in context.model.inputs]
    keras_outputs = [t.name.split("/")[0].split(":")[0] for t in context.model.outputs]
    renames = {v.name: k for v, k in zip(graph.input, keras_inputs)}
    renames.update({v.name: k for v, k in zip(graph.output, keras_outputs) if k not in renames.values()})
    _rename_edges(model_proto, renames)
    out_path.write_bytes(model_proto.SerializeToString())
    return {"per_channel": context.per_channel, "calibration_method": "qat", "opset": ONNX_OPSET,
            "source": "tflite-int8 via tf2onnx (QAT ranges, no re-calibration)"}
