"""Run artifacts in their real runtimes: LiteRT for ``.tflite``, ONNX Runtime for ``.onnx``.

Inputs are float; for an integer input tensor they are quantized with the
artifact's own scale and zero point (q = round(x / S + Z), clipped), and integer
outputs are dequantized (x = (q − Z)·S), so every artifact is compared in the
same float units as the Keras model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgeqd.devices.runner import is_stateful
from edgeqd.errors import ConversionError
from edgeqd.types import Evaluation, TensorInfo

BATCH = 256


def tflite_interpreter(model_path: str | Path, num_threads: int | None = None):
    """A LiteRT interpreter for ``model_path`` (ai_edge_litert, else tflite_runtime).

    Args:
        model_path: the ``.tflite`` file.
        num_threads: CPU threads for the interpreter (None = runtime default).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # boards where only the older tflite-runtime wheel exists
        from tflite_runtime.interpreter import Interpreter
    try:
        return Interpreter(model_path=str(model_path), num_threads=num_threads)
    except Exception as exc:
        raise ConversionError(f"{model_path}: LiteRT cannot load it ({str(exc).strip()[:300]})") from None


def quantize(x: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    """Quantize float ``x`` to an integer ``dtype``: round(x / scale + zero_point), clipped.

    Args:
        x: float values.
        dtype: integer numpy dtype (int8, uint8, int16).
        scale: the tensor's scale S.
        zero_point: the tensor's zero point Z.

    >>> quantize(np.array([0.0, 0.5, 10.0]), np.int8, 0.1, -128).tolist()
    [-128, -123, -28]
    """
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float values of quantized ``q``: (q − zero_point) · scale.

    Args:
        q: integer values.
        scale: the tensor's scale S.
        zero_point: the tensor's zero point Z.

    >>> dequantize(np.array([-128, 0], np.int8), 0.5, -128).tolist()
    [0.0, 64.0]
    """
    return (q.astype(np.float32) - zero_point) * scale


def _tflite_tensor(detail: dict) -> TensorInfo:
    params = detail.get("quantization_parameters", {})
    scales = tuple(float(s) for s in params.get("scales", ()))
    zeros = tuple(int(z) for z in params.get("zero_points", ()))
    shape = tuple(int(d) for d in detail.get("shape_signature", detail["shape"]))
    return TensorInfo(detail["name"], shape, np.dtype(detail["dtype"]).name, scales, zeros)


def tflite_io(model_path: str | Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs and outputs of a ``.tflite`` with their quantization parameters.

    Args:
        model_path: the ``.tflite`` file.
    """
    interpreter = tflite_interpreter(model_path)
    return ([_tflite_tensor(d) for d in interpreter.get_input_details()],
            [_tflite_tensor(d) for d in interpreter.get_output_details()])


def predict_tflite(model_path: str | Path, x: np.ndarray, num_threads: int | None = None) -> np.ndarray:
    """Float outputs of a single-input ``.tflite`` for float inputs ``x``.

    Args:
        model_path: the ``.tflite`` file.
        x: float inputs (N, ...).
        num_threads: interpreter threads.
    """
    interpreter = tflite_interpreter(model_path, num_threads)
    inp = interpreter.get_input_details()[0]
    batch = BATCH if int(inp["shape_signature"][0]) == -1 else int(inp["shape"][0])
    interpreter.resize_tensor_input(inp["index"], [batch, *x.shape[1:]])
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    # Fused LSTM/RNN kernels keep their state in variable tensors across invocations; every
    # sample here is an independent sequence.
    stateful = is_stateful(interpreter)
    results = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n, *x.shape[1:]), x.dtype)])
        if np.issubdtype(inp["dtype"], np.integer):
            chunk = quantize(chunk, inp["dtype"], in_scale, in_zero)
        interpreter.set_tensor(inp["index"], chunk.astype(inp["dtype"]))
        if stateful:
            interpreter.reset_all_variables()
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[:n]
        if np.issubdtype(out["dtype"], np.integer):
            y = dequantize(y, out_scale, out_zero)
        results.append(y.astype(np.float32))
    return np.concatenate(results)


def onnx_session(model_path: str | Path, num_threads: int | None = None):
    """An ONNX Runtime CPU session for ``model_path``.

    Args:
        model_path: the ``.onnx`` file.
        num_threads: intra-op threads (None = runtime default).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ConversionError(f"{model_path}: ONNX Runtime cannot load it ({str(exc).strip()[:300]})") from None


_ONNX_DTYPES = {"tensor(float)": "float32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
                "tensor(float16)": "float16", "tensor(int16)": "int16"}


def _onnx_quant_params(model_path: str | Path) -> dict[str, tuple[float, int]]:
    """Scale and zero point of integer graph inputs/outputs, read from their Q/DQ nodes."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model_path)).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    # An edge may pass through layout-only ops before its Q/DQ node (tf2onnx's TFLite front
    # end reshapes NHWC int8 inputs to NCHW first): follow those back to the graph edge.
    layout_ops = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten")
    edges = {t.name: t.name for t in graph.input}
    for node in graph.node:
        if node.op_type in layout_ops and node.input and node.input[0] in edges:
            edges[node.output[0]] = edges[node.input[0]]
    producers = {out: node for node in graph.node for out in node.output}
    for t in graph.output:
        name = t.name
        edges[name] = t.name
        while name in producers and producers[name].op_type in layout_ops:
            name = producers[name].input[0]
            edges[name] = t.name
    params = {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in edges:
            name = edges[node.input[0]]
        elif node.op_type == "QuantizeLinear" and node.output[0] in edges:
            name = edges[node.output[0]]
        else:
            continue
        scale = constants.get(node.input[1])
        zero = constants.get(node.input[2]) if len(node.input) > 2 else np.array(0)
        if scale is not None and zero is not None and scale.size == 1:
            params[name] = (float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0]))
    return params


def onnx_io(model_path: str | Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs and outputs of an ``.onnx``; integer ones carry their Q/DQ scale and zero point.

    Args:
        model_path: the ``.onnx`` file.
    """
    session = onnx_session(model_path)
    params = _onnx_quant_params(model_path)

    def info(arg) -> TensorInfo:
        shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
        scale, zero = params.get(arg.name, (None, None))
        return TensorInfo(arg.name, shape, _ONNX_DTYPES.get(arg.type, arg.type),
                          () if scale is None else (scale,), () if zero is None else (zero,))

    return [info(a) for a in session.get_inputs()], [info(a) for a in session.get_outputs()]


def predict_onnx(model_path: str | Path, x: np.ndarray, num_threads: int | None = None) -> np.ndarray:
    """Float outputs of a single-input ``.onnx`` for float inputs ``x``.

    Args:
        model_path: the ``.onnx`` file.
        x: float inputs (N, ...).
        num_threads: intra-op threads.
    """
    session = onnx_session(model_path, num_threads)
    inputs, outputs = onnx_io(model_path)
    inp, out = inputs[0], outputs[0]
    results = []
    for start in range(0, len(x), BATCH):
        chunk = x[start:start + BATCH].astype(np.float32)
        if inp.dtype != "float32":
            chunk = quantize(chunk, np.dtype(inp.dtype), inp.scale[0], inp.zero_point[0])
        y = session.run([out.name], {inp.name: chunk})[0]
        if out.dtype != "float32":
            y = dequantize(y, out.scale[0], out.zero_point[0])
        results.append(y.astype(np.float32))
    return np.concatenate(results)


PREDICTORS: dict[str, Callable[..., np.ndarray]] = {"tflite": predict_tflite, "onnx": predict_onnx}
IO_READERS: dict[str, Callable[..., tuple[list[TensorInfo], list[TensorInfo]]]] = {
    "tflite": tflite_io, "onnx": onnx_io}


def evaluate_outputs(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> Evaluation:
    """Compare an artifact's outputs with the float model's outputs and the labels.

    Args:
        outputs: the artifact's float outputs (N, classes).
        reference: the float Keras model's outputs on the same inputs.
        labels: integer labels, or None for unlabelled data.

    >>> evaluate_outputs(np.eye(2), np.eye(2), np.array([0, 0])).accuracy
    0.5
    """
    top1 = outputs.argmax(axis=1)
    accuracy = None if labels is None else float((top1 == labels).mean())
    return Evaluation(samples=int(len(outputs)), accuracy=accuracy,
                      agreement=float((top1 == reference.argmax(axis=1)).mean()),
                      mean_abs_diff=float(np.abs(outputs - reference).mean()))
