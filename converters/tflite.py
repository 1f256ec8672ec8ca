"""TFLite artifacts: float32, float16, full-integer int8 (int8 I/O) and 16x8.

Every format converts one SavedModel export per model (:mod:`edgeqd.converters.export`):
the float model's for the float formats and PTQ, the quantization-aware model's (static
batch 1, the user's input and output names) for QAT's int8. The int8 model is calibrated
on the context's representative samples (PTQ), or keeps the ranges learnt in QAT — the
same samples then calibrate only what TFMOT left float (an LSTM, a LayerNormalization),
so the artifact is full-integer either way and the row says what was calibrated rather
than trained. Weights are quantized per channel, TFLite's default for convolutions and
dense layers.

The conversion itself (:func:`convert_saved_model`) is a plain function of an export
folder, so that the pipeline can run it in a child process: TFLite's calibrator
segfaults on some graphs (GRU/SimpleRNN loops traced at batch 1), which must become a
failed row, not the end of the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from edgeqd.converters.export import SIGNATURE_KEY, export_saved_model, has_lstm, has_recurrent, unrolled_copy
from edgeqd.converters.registry import ConversionContext, register_converter
from edgeqd.errors import ConversionError

__all__ = ["convert_saved_model", "representative_dataset", "shorten_fused_names", "has_lstm"]


def _error_line(exc: Exception) -> str:
    """The converter's own diagnosis: MLIR errors start with pages of source locations.

    Args:
        exc: what ``convert()`` raised.
    """
    lines = [_without_location(line.strip()) for line in str(exc).splitlines() if line.strip()]
    errors = [_without_location(line.split("error: ", 1)[1]) for line in lines if "error: " in line]
    return (errors or lines or [type(exc).__name__])[0]


def _without_location(line: str) -> str:
    """``line`` without a leading MLIR source location ``loc(callsite(…)): ``.

    >>> _without_location('loc(fused["a", "b"] at x(y)): op failed')
    'op failed'
    """
    if not line.startswith("loc("):
        return line
    depth = 0
    for index, char in enumerate(line):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and char == ")":
            return line[index + 1:].lstrip(": ").strip() or line
    return line


def _convert(converter, what: str) -> bytes:
    try:
        return converter.convert()
    except Exception as exc:
        reason = _error_line(exc)[:400]
        if "TensorList" in reason:
            reason += (" — a recurrent layer TFLite has no builtin for (GRU, SimpleRNN): use LSTM, set "
                       "unroll=True on the layer, or deploy the ONNX artifact")
        raise ConversionError(f"TFLite {what} conversion failed: {reason}") from None


def representative_dataset(samples):
    """A TFLite ``representative_dataset`` callable yielding one sample at a time, in the input's dtype.

    Args:
        samples: float32 array (N, ...), or integers (token ids) for an integer input: those are
            fed as they are — the calibrator refuses float32 for an int32 input, and ids are not quantized.

    >>> next(representative_dataset(np.zeros((3, 2), "int32"))())[0].dtype.name
    'int32'
    """
    dtype = samples.dtype if np.asarray(samples).dtype.kind in "iu" else np.float32

    def generate():
        for sample in samples:
            yield [np.asarray(sample, dtype=dtype)[None, ...]]

    return generate


def shorten_fused_names(data: bytes) -> bytes:
    """Keep the first of the ``;``-joined names the converter gives fused tensors.

    A quantization-aware graph fuses each conv with its FakeQuant, LastValueQuant and
    batch-norm ops, and the converter joins all their names into the tensor's name
    ("m/quant_conv/Conv2D;m/quant_conv/LastValueQuant/…;…"): on small models that was
    the whole difference in size from the PTQ artifact (+12 %). Interpreters find
    tensors by index and apps by the signature, which keeps its names.

    Args:
        data: a ``.tflite`` flatbuffer.
    """
    import flatbuffers

    from edgeqd.artifact_info.tflite import tflite_schema

    schema = tflite_schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    changed = False
    for graph in model.subgraphs or []:
        tensors = graph.tensors or []
        names = [t.name if isinstance(t.name, bytes) else (t.name or "").encode() for t in tensors]
        taken = set(names)
        for tensor, name in zip(tensors, names):
            short = name.split(b";")[0]
            # Names must stay unique: tf2onnx (and tools that look tensors up by name) key on them.
            if short != name and short not in taken:
                tensor.name = short
                taken.add(short)
                changed = True
    if not changed:
        return data
    builder = flatbuffers.Builder(len(data))
    builder.Finish(model.Pack(builder), b"TFL3")
    return bytes(builder.Output())


def convert_saved_model(export_dir: str, options: dict, samples: Optional[np.ndarray]) -> bytes:
    """Convert a SavedModel export to TFLite bytes (run in a child process by the pipeline).

    Args:
        export_dir: the export folder.
        options: ``precision`` ("float32", "float16", "int8", "int16x8"), ``per_channel``,
            ``short_names`` (see :func:`shorten_fused_names`).
        samples: representative inputs for calibration (int8, 16x8), or None.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(export_dir, signature_keys=[SIGNATURE_KEY])
    precision = options["precision"]
    if precision != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if precision in ("int8", "int16x8"):
        converter.representative_dataset = representative_dataset(samples)
    if precision == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        if not options.get("per_channel", True):
            converter._experimental_disable_per_channel = True  # the MLIR quantizer's per-tensor switch
    if precision == "int16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    data = _convert(converter, {"int16x8": "16x8"}.get(precision, precision))
    return shorten_fused_names(data) if options.get("short_names") else data


def _export(context: ConversionContext, which: str) -> Path:
    """The SavedModel export of the float (``which="float"``) or QAT model, made once per context."""
    key = f"saved-model-{which}"
    if key in context.cache:
        return context.cache[key]
    if which == "qat" and context.qat_export is not None:
        path = Path(context.qat_export)
    elif which == "float" and context.saved_model_dir is not None:
        path = Path(context.saved_model_dir)  # a layer-less SavedModel: its serving signature is the model
    elif which == "unrolled":  # GRU/SimpleRNN loops unrolled for calibration (see export.unrolled_copy)
        path = export_saved_model(context.cache["unrolled-model"], context.workdir / "export-unrolled", batch=1,
                                  output_names=context.model.output_names)
    else:
        model = context.model if which == "float" else context.qat_model
        # QAT models trace at batch 1 (shape plumbing folds away); recurrent layers must (see export).
        batch = 1 if which == "qat" or has_recurrent(model) else None
        path = export_saved_model(model, context.workdir / f"export-{which}", batch=batch,
                                  output_names=context.model.output_names,
                                  softmax=which == "qat" and context.qat_softmax)
    context.cache[key] = path
    return path


def tflite_bytes(context: ConversionContext, which: str, precision: str) -> bytes:
    """One TFLite conversion of the float or QAT model, memoized per context (the QAT/PTQ choice reuses it).

    Args:
        context: the models, calibration samples and settings.
        which: "float" or "qat".
        precision: "float32", "float16", "int8" or "int16x8".
    """
    if which == "float" and precision in ("int8", "int16x8") and context.saved_model_dir is None:
        if "unrolled-model" not in context.cache:
            context.cache["unrolled-model"] = unrolled_copy(context.model)
        which = "float" if context.cache["unrolled-model"] is None else "unrolled"
    key = f"tflite-{which}-{precision}"
    if key not in context.cache:
        calibrates = precision in ("int8", "int16x8")
        options = {"precision": precision, "per_channel": context.per_channel, "short_names": which == "qat"}
        stage = f"TFLite {precision} conversion" + (" (calibration)" if calibrates else "")
        try:
            context.cache[key] = context.run_stage(stage, convert_saved_model, str(_export(context, which)),
                                                   options, context.calibration if calibrates else None)
        except ConversionError as exc:  # remembered: a conversion that crashed once is not run twice
            context.cache[key] = exc
    if isinstance(context.cache[key], ConversionError):
        raise context.cache[key]
    return context.cache[key]


@register_converter("tflite-fp32", filename="model_fp32.tflite", runtime="tflite", quantized=False,
                    description="TFLite float32")
def convert_tflite_fp32(context: ConversionContext, out_path: Path) -> dict:
    """Write the float32 TFLite model (from the float model, also after QAT).

    Args:
        context: the model and settings.
        out_path: where to write the ``.tflite``.
    """
    out_path.write_bytes(tflite_bytes(context, "float", "float32"))
    return {}


@register_converter("tflite-int8", filename="model_int8.tflite", runtime="tflite", quantized=True,
                    description="TFLite full-integer int8 (int8 I/O)")
def convert_tflite_int8(context: ConversionContext, out_path: Path) -> dict:
    """Write the full-integer int8 TFLite model with int8 input and output.

    Args:
        context: the model, calibration samples and settings.
        out_path: where to write the ``.tflite``.
    """
    if not context.quantization_aware:
        out_path.write_bytes(tflite_bytes(context, "float", "int8"))
        details = {"per_channel": context.per_channel, "calibration_method": "tflite-minmax"}
        if context.cache.get("unrolled-model") is not None:
            details["note"] = ("GRU/SimpleRNN unrolled over the sequence for int8 (TFLite's calibrator crashes on "
                               "their loops); the float artifacts keep the loop")
        return details
    out_path.write_bytes(tflite_bytes(context, "qat", "int8"))
    details = {"per_channel": context.per_channel, "calibration_method": "qat"}
    if context.qat_float_layers:
        details["calibrated_not_trained"] = list(context.qat_float_layers)
        details["note"] = ("int8 by calibration on the representative samples, not trained: "
                           f"{', '.join(context.qat_float_layers)} (TFMOT cannot quantize them)")
    return details


@register_converter("tflite-fp16", filename="model_fp16.tflite", runtime="tflite", quantized=False,
                    dtype="float16", description="TFLite float16 weights (GPU delegates; half the size)")
def convert_tflite_fp16(context: ConversionContext, out_path: Path) -> dict:
    """Write a TFLite model with float16 weights (dequantized to float32 on CPU).

    Args:
        context: the model and settings.
        out_path: where to write the ``.tflite``.
    """
    out_path.write_bytes(tflite_bytes(context, "float", "float16"))
    return {}


@register_converter("tflite-int16x8", filename="model_int16x8.tflite", runtime="tflite", quantized=True,
                    dtype="int16x8", description="TFLite int16 activations, int8 weights (float I/O)")
def convert_tflite_int16x8(context: ConversionContext, out_path: Path) -> dict:
    """Write a 16x8 TFLite model: int16 activations keep accuracy where int8 ones lose it.

    Args:
        context: the model, calibration samples and settings.
        out_path: where to write the ``.tflite``.
    """
    out_path.write_bytes(tflite_bytes(context, "float", "int16x8"))
    return {"per_channel": True, "calibration_method": "tflite-minmax"}
