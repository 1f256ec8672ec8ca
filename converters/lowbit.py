"""TFLite artifacts below 8 bits, through ai-edge-quantizer: ``tflite-w4a8``, ``tflite-w4``, ``tflite-w2``.

Each quantizes the float TFLite model (the same one ``tflite-fp32`` ships) with a recipe
from :mod:`edgeqd.quantization.lowbit`, in the pipeline's child process where TFLite
calibration runs there (:meth:`ConversionContext.run_stage`):

* ``tflite-w4a8`` — full integer: int4 weights on FULLY_CONNECTED and CONV_2D, int8 on the
  rest (depthwise), int8 activations and int8 input/output; calibrated in one step over
  all calibration samples.
* ``tflite-w4`` — int4 weights, float activations (dynamic range: the kernels quantize
  activations on the fly); depthwise int8.
* ``tflite-w2`` — int2 weights in FULLY_CONNECTED (OCTAV, per channel), int4 in CONV_2D,
  int8 in depthwise, float activations. The int2 guard refuses anything else.

Every artifact is then checked on LiteRT's two kernel sets and against what its weights
mean (:mod:`edgeqd.converters.kernels`), and the row's details list every weighted op's
stored bits, read back from the file, with the reason wherever an op keeps more bits than
the format's name says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from edgeqd.converters.registry import ConversionContext, register_converter

__all__ = ["weight_details", "write_lowbit_tflite", "float_source"]


def float_source(context: ConversionContext) -> tuple[bytes, str]:
    """The float ``.tflite`` a low-bit format quantizes, and where it comes from.

    After low-bit QAT this is the QAT model's weights folded onto the float model's graph
    (fake-quantized values that the quantizer stores without rounding again); otherwise
    the float model's own ``tflite-fp32`` conversion.

    Args:
        context: the run's conversion context.
    """
    from edgeqd.converters.tflite import tflite_bytes

    folded = context.cache.get("lowbit-qat-float")
    if folded is not None:
        return folded, "QAT (fake-quantized weights folded into the float graph, requantized without rounding)"
    note = "post-training quantization of the float model"
    if context.quantization_aware:
        note += " (the QAT model trained 8-bit weights; use --weight-bits 4 or 2 to train for this format)"
    return tflite_bytes(context, "float", "float32"), note


def _short(layer: str) -> str:
    """The layer's name without the export's outer model name ("model/fc1" → "fc1")."""
    return layer.split("/", 1)[1] if "/" in layer else layer


def grouped_notes(kept: list[str], shown: int = 3) -> list[str]:
    """``kept_higher``'s "layer: reason" entries, one note per reason, for the terminal.

    A network of 8 separable convolutions otherwise printed the same reason 8 times in one line;
    the manifest keeps every layer (``details.kept_higher``).

    Args:
        kept: "layer: reason" strings, in graph order.
        shown: how many layer names a grouped note spells out before "…".
    """
    groups: dict[str, list[str]] = {}
    for entry in kept:
        layer, _, reason = entry.partition(": ")
        groups.setdefault(reason, []).append(layer)
    notes = []
    for reason, layers in groups.items():
        if len(layers) == 1:
            notes.append(f"{layers[0]}: {reason}")
            continue
        names = ", ".join(layers[:shown]) + (", …" if len(layers) > shown else "")
        notes.append(f"{len(layers)} layers ({names}): {reason}")
    return notes


def weight_details(data: bytes, wanted_bits: int) -> dict[str, Any]:
    """Per weighted op: the bits the file stores, and why an op keeps more than ``wanted_bits``.

    Args:
        data: the artifact's bytes.
        wanted_bits: the format's weight bits (4 or 2).
    """
    from edgeqd.artifact_info.weights import weighted_ops
    from edgeqd.quantization.lowbit import KERNEL_NOTES

    weights = weighted_ops(data)
    rows = [{"layer": _short(w.layer), "op": w.op, "dtype": w.dtype, "bits": w.bits, "granularity": w.granularity,
             "elements": w.elements, "bytes": w.bytes} for w in weights]
    kept = []
    for w in weights:
        if w.bits <= wanted_bits:
            continue
        if w.op == "DEPTHWISE_CONV_2D":
            reason = KERNEL_NOTES["DEPTHWISE_CONV_2D"]
        elif w.op == "CONV_2D" and wanted_bits == 2:
            reason = KERNEL_NOTES["CONV_2D_INT2"]
        elif w.dtype == "float32":
            reason = f"{w.op} stays float: the quantizer has no policy for it at {wanted_bits} bits"
        else:
            reason = f"{w.op} keeps {w.dtype}: the quantizer has no {wanted_bits}-bit policy for it"
        kept.append(f"{_short(w.layer)}: {reason}")
    total = sum(w.elements for w in weights) or 1
    low = sum(w.elements for w in weights if w.bits <= wanted_bits)
    return {"weights": rows, "kept_higher": kept,
            "low_bit_share": round(low / total, 4)}


def write_lowbit_tflite(context: ConversionContext, out_path: Path, recipe: list[dict], wanted_bits: int,
                        what: str, static: bool) -> dict[str, Any]:
    """Quantize the float source with ``recipe``, check it, write it; the row's details.

    Args:
        context: the run's conversion context.
        out_path: where to write the ``.tflite``.
        recipe: the ai-edge-quantizer recipe.
        wanted_bits: the format's weight bits (4 or 2).
        what: the format in words, for messages ("w4a8").
        static: the recipe quantizes activations (calibration samples needed).
    """
    from edgeqd.artifact_info.weights import weighted_ops
    from edgeqd.converters.kernels import check_kernels
    from edgeqd.quantization.aeq import quantize_tflite
    from edgeqd.quantization.lowbit import KERNEL_NOTES, check_int2_file, check_int2_rules

    source, origin = float_source(context)
    if wanted_bits == 2 and "lowbit-qat-float" in context.cache:
        from edgeqd.quantization.lowbit import w2_recipe

        recipe = w2_recipe(octav=False)  # QAT trained the min-max int2 grid: OCTAV would round it again
    check_int2_rules(recipe)
    stage = f"ai-edge-quantizer {what} quantization" + (" (calibration)" if static else "")
    data = context.run_stage(stage, quantize_tflite, source, recipe, context.calibration if static else None)
    check_int2_file(weighted_ops(data))
    out_path.write_bytes(data)
    details = {"source": origin, "recipe": recipe, **weight_details(data, wanted_bits)}
    if static:
        details["calibration"] = {"samples": int(len(context.calibration)), "steps": 1,
                                  "method": "min/max over all samples in one step"}
    details["kernels"] = check_kernels(out_path, source, context.calibration, context.workdir)
    notes = grouped_notes(details["kept_higher"])
    if wanted_bits == 2 and not any(w["bits"] <= 2 for w in details["weights"]):
        notes.insert(0, "no layer stores int2 (int2 is FULLY_CONNECTED only and this model has none): "
                        "the same weights as tflite-w4")
    not_delegated = (details["kernels"].get("xnnpack") or {}).get("not_delegated", [])
    if "CONV_2D" in not_delegated and static:
        notes.append(KERNEL_NOTES["CONV_2D_XNNPACK"])
    elif not_delegated:
        counts = {op: not_delegated.count(op) for op in dict.fromkeys(not_delegated)}
        notes.append("run on LiteRT's builtin kernels, not XNNPACK: " +
                     ", ".join(f"{op}{f' ×{n}' if n > 1 else ''}" for op, n in counts.items()))
    if notes:
        details["note"] = "; ".join(notes)
    return details


def _register(name: str, filename: str, dtype: str, description: str, recipe: Callable[[], list], bits: int,
              static: bool) -> None:
    @register_converter(name, filename=filename, runtime="tflite", quantized=True, dtype=dtype,
                        description=description)
    def convert(context: ConversionContext, out_path: Path) -> dict:
        return write_lowbit_tflite(context, out_path, recipe(), bits, dtype, static)

    convert.__doc__ = f"Write the {description} artifact.\n\n    Args:\n        context: the run's context.\n" \
                      "        out_path: where to write it.\n"


def _recipes():
    from edgeqd.quantization import lowbit

    return lowbit


_register("tflite-w4a8", "model_w4a8.tflite", "w4a8",
          "TFLite int4 weights (FC, CONV_2D), int8 activations and I/O (ai-edge-quantizer)",
          lambda: _recipes().w4a8_recipe(), 4, True)
_register("tflite-w4", "model_w4.tflite", "w4",
          "TFLite int4 weights, float activations (dynamic range; depthwise int8)",
          lambda: _recipes().w4_recipe(), 4, False)
_register("tflite-w2", "model_w2.tflite", "w2",
          "TFLite int2 weights in FC (OCTAV), int4 CONV_2D, int8 depthwise, float activations",
          lambda: _recipes().w2_recipe(), 2, False)
