"""Low-bit TFLite artifacts checked beyond "it runs": two kernel sets, and what the file means.

Below 8 bits "LiteRT loads it and returns numbers" proves little: a CONV_2D with int2
weights runs in both of LiteRT 2.3's kernel sets and returns garbage (NaN on the builtin
kernels). So every low-bit TFLite artifact is run three ways on the calibration samples:

1. LiteRT's default resolver (XNNPACK where it takes the op — what apps get);
2. LiteRT's builtin kernels without any delegate (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``);
3. **what the file means**: the float model with each weight replaced by the file's
   stored weight, unpacked and dequantized by edgeqd's own reader
   (:mod:`edgeqd.artifact_info.weights`), run in float.

(1) and (2) must agree, and the artifact must agree with (3): in SQNR of the outputs
(:data:`MIN_KERNEL_SQNR_DB`, :data:`MIN_MEANING_SQNR_DB`) and in top-1 class
(:data:`MIN_KERNEL_AGREEMENT`, :data:`MIN_MEANING_AGREEMENT`). A float-activation
(dynamic) model computes (3) up to the runtime's on-the-fly activation rounding, a
full-integer one up to its int8 activations. A kernel that mis-reads its weights lands
near 0 dB and chance agreement.

>>> agreement(np.eye(3), np.eye(3))
1.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgeqd.errors import ConversionError

__all__ = ["agreement", "sqnr_db", "file_meaning", "xnnpack_coverage", "check_kernels", "MIN_KERNEL_SQNR_DB",
           "MIN_KERNEL_AGREEMENT", "MIN_MEANING_SQNR_DB", "MIN_MEANING_AGREEMENT", "CHECK_SAMPLES"]

# XNNPACK and the builtin kernels implement the same arithmetic: within 1 LSB for full-integer
# models, and within their on-the-fly activation rounding for dynamic ones (48-49 dB SQNR between the
# two on the Fashion-MNIST models; top-1 identical on 99.9-100 % of 2,000 images). A kernel that
# mis-computes its weights (int2 CONV_2D) gives NaN or ~0 dB and near-chance agreement. Top-1
# alone is brittle on a few poorly separated samples (1 of 32 flips on a tiny model), so both count.
MIN_KERNEL_SQNR_DB = 20.0
MIN_KERNEL_AGREEMENT = 0.90
# Against what the file means (its dequantized weights run in float): a dynamic model is 50+ dB
# from it, a full-integer w4a8 one 25-42 dB (int8 activations add their rounding); 97-100 % top-1.
MIN_MEANING_SQNR_DB = 15.0
MIN_MEANING_AGREEMENT = 0.85
# Samples the check runs on (the calibration samples, at most this many).
CHECK_SAMPLES = 256


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows whose top-1 class is the same (1.0 for single-output models: compared by SQNR).

    Args:
        a: outputs (N, classes).
        b: outputs of the same inputs.
    """
    if a.shape[-1] == 1:
        return 1.0
    return float((a.argmax(-1) == b.argmax(-1)).mean())


def sqnr_db(reference: np.ndarray, other: np.ndarray) -> Optional[float]:
    """Signal-to-quantization-noise ratio of ``other`` against ``reference``, in dB (None when identical: JSON has no inf).

    Args:
        reference: the reference outputs.
        other: the outputs compared with them.

    >>> round(sqnr_db(np.array([1.0, 1.0]), np.array([1.0, 0.9])), 1)
    23.0
    """
    noise = float(np.sum((np.asarray(reference, np.float64) - other) ** 2))
    signal = float(np.sum(np.asarray(reference, np.float64) ** 2))
    return None if noise == 0 else round(float(10.0 * np.log10(max(signal, 1e-30) / noise)), 2)


def file_meaning(float_model: bytes, quantized: bytes) -> bytes:
    """The float model with every weight the quantized file stores replaced by its dequantized value.

    Tensors are matched by name (the quantizer keeps them); biases and activations stay float.

    Args:
        float_model: the float ``.tflite`` the artifact was quantized from.
        quantized: the artifact's bytes.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    from edgeqd.artifact_info.weights import dequantized, weighted_ops

    values = {w.name: dequantized(quantized, w.tensor) for w in weighted_ops(quantized) if w.dtype != "float32"}
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(float_model))
    replaced = 0
    for tensor in model.subgraphs[0].tensors:
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name
        if name in values and tensor.type == 0:  # FLOAT32
            buffer = model.buffers[tensor.buffer]
            if buffer.data is not None and len(buffer.data) == values[name].size * 4:
                buffer.data = np.frombuffer(values[name].astype(np.float32).tobytes(), np.uint8)
                replaced += 1
    if replaced != len(values):
        raise ConversionError(f"the quantized file's weights could not all be matched to the float model "
                              f"({replaced} of {len(values)} by name)")
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def xnnpack_coverage(path: Path) -> dict[str, Any]:
    """Which ops LiteRT's default XNNPACK delegate took, from its DELEGATE nodes' inputs and outputs.

    A node is delegated when it produces a delegate output, or a tensor a delegated node reads
    that is not a delegate input (walked backwards from the outputs).

    Args:
        path: the ``.tflite`` file.

    Returns:
        {"delegated": n, "ops": m, "not_delegated": ["CONV_2D", ...]} (empty when LiteRT does not say).
    """
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()  # the default delegate is applied here
        ops = interpreter._get_ops_details()  # LiteRT 2.3's only listing of the delegated graph
    except Exception:
        return {}
    original = [o for o in ops if o["op_name"] != "DELEGATE"]
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    delegate_inputs = {int(i) for d in delegates for i in d["inputs"]}
    needed = {int(i) for d in delegates for i in d["outputs"]}
    taken = set()
    for k in range(len(original) - 1, -1, -1):
        if {int(i) for i in original[k]["outputs"]} & needed:
            taken.add(k)
            needed |= {int(i) for i in original[k]["inputs"] if int(i) >= 0 and int(i) not in delegate_inputs}
    return {"delegated": len(taken), "ops": len(original),
            "not_delegated": [o["op_name"] for k, o in enumerate(original) if k not in taken]}


def _outputs(path: Path, samples: np.ndarray, xnnpack: bool) -> np.ndarray:
    from edgeqd.devices import runner

    try:
        return runner.predict(runner.open_model(str(path), threads=None, xnnpack=xnnpack), samples, batch=256)
    except runner.RunnerError as exc:
        kernels = "default (XNNPACK)" if xnnpack else "builtin"
        raise ConversionError(f"{path.name} does not run on LiteRT's {kernels} kernels: {exc}") from None


def check_kernels(path: Path, float_model: bytes, samples: np.ndarray, workdir: Path) -> dict[str, Any]:
    """Run the artifact on both kernel sets and against what the file means; raise when they disagree.

    Args:
        path: the low-bit ``.tflite`` just written.
        float_model: the float ``.tflite`` it was quantized from.
        samples: inputs to run (the first :data:`CHECK_SAMPLES`).
        workdir: a scratch folder.

    Returns:
        The figures for the manifest (samples, agreements, SQNRs, XNNPACK coverage).

    Raises:
        ConversionError: the kernel sets disagree, or the artifact does not compute what its weights mean.
    """
    samples = samples[:CHECK_SAMPLES]
    default, builtin = _outputs(path, samples, True), _outputs(path, samples, False)
    meaning_path = workdir / f"{path.stem}.meaning.tflite"
    meaning_path.write_bytes(file_meaning(float_model, path.read_bytes()))
    meaning = _outputs(meaning_path, samples, False)
    figures = {"samples": int(len(samples)),
               "builtin_vs_default_agreement": round(agreement(builtin, default), 4),
               "builtin_vs_default_sqnr_db": sqnr_db(default, builtin),
               "file_meaning_agreement": round(agreement(default, meaning), 4),
               "file_meaning_sqnr_db": sqnr_db(meaning, default),
               "rule": f"default vs builtin kernels: SQNR >= {MIN_KERNEL_SQNR_DB:g} dB and top-1 agreement >= "
                       f"{MIN_KERNEL_AGREEMENT:.0%}; the artifact vs its own dequantized weights run in float: "
                       f"SQNR >= {MIN_MEANING_SQNR_DB:g} dB and agreement >= {MIN_MEANING_AGREEMENT:.0%}"}
    if not (np.isfinite(default).all() and np.isfinite(builtin).all()):
        raise ConversionError(f"{path.name} outputs NaN/inf on LiteRT's "
                              f"{'builtin' if np.isfinite(default).all() else 'default'} kernels: a kernel cannot "
                              "compute these weight bits")
    kernels_sqnr = figures["builtin_vs_default_sqnr_db"]
    if figures["builtin_vs_default_agreement"] < MIN_KERNEL_AGREEMENT or \
            (kernels_sqnr is not None and kernels_sqnr < MIN_KERNEL_SQNR_DB):
        raise ConversionError(f"{path.name}: LiteRT's default (XNNPACK) and builtin kernels disagree on "
                              f"{len(samples)} samples (top-1 agreement "
                              f"{100 * figures['builtin_vs_default_agreement']:.1f}%, SQNR {kernels_sqnr} dB; needs "
                              f">= {MIN_KERNEL_AGREEMENT:.0%} and >= {MIN_KERNEL_SQNR_DB:g} dB): one of them "
                              "mis-computes these weight bits")
    meaning_sqnr = figures["file_meaning_sqnr_db"]
    if figures["file_meaning_agreement"] < MIN_MEANING_AGREEMENT or \
            (meaning_sqnr is not None and meaning_sqnr < MIN_MEANING_SQNR_DB):
        raise ConversionError(f"{path.name} does not compute what it stores: against its own dequantized weights "
                              f"run in float, top-1 agreement {100 * figures['file_meaning_agreement']:.1f}% and "
                              f"SQNR {meaning_sqnr} dB on {len(samples)} samples (needs >= "
                              f"{MIN_MEANING_AGREEMENT:.0%} and >= {MIN_MEANING_SQNR_DB:g} dB)")
    figures["xnnpack"] = xnnpack_coverage(path)
    return figures
