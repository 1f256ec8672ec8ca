"""Mixed-precision artifacts under an accuracy budget: ``tflite-mixed`` and ``onnx-mixed`` (``--precision auto``).

One search (:func:`edgeqd.quantization.mixed.search_mixed`, in the pipeline's child process)
picks each layer's weight bits (int4, or int8 where int4 costs too much accuracy; depthwise
always int8) on the *search* samples — training samples, never the evaluation split — with
int8 activations. ``model_mixed.tflite`` is that search's model, checked on LiteRT's two
kernel sets and against its own dequantized weights like every low-bit TFLite artifact;
``model_mixed.onnx`` applies the same per-layer bits through ONNX Runtime's
``TensorQuantOverrides``. The pipeline then measures both on the held-out evaluation split
(the row's ``accuracy_drop_pts``) and ``--max-drop`` fails the run when either is over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeqd.converters.registry import ConversionContext, register_converter

__all__ = ["DEFAULT_BUDGET", "mixed_plan"]

# The budget (points) when the converter is asked for without --max-drop (e.g. --formats tflite-mixed).
DEFAULT_BUDGET = 1.0

_HELD_OUT = ("accuracy_drop_pts of this row: measured on the evaluation split, which the search did not use; "
             "--max-drop fails the run when it is over")


def mixed_plan(context: ConversionContext) -> dict[str, Any]:
    """The search's result for this run (made once; both mixed formats use it).

    Args:
        context: the run's context (float model, calibration and search samples, budget).
    """
    cached = context.cache.get("mixed-plan")
    if cached is not None:
        return cached
    from edgeqd.converters.lowbit import float_source
    from edgeqd.quantization.mixed import search_mixed

    source, origin = float_source(context)
    if context.search_samples is not None:
        x, labels = context.search_samples
        where = f"{len(x)} training samples (not the evaluation split)"
    else:
        x, labels = context.calibration, None
        where = f"the {len(x)} calibration samples, unlabelled (no search split was given)"
    budget = context.max_drop if context.max_drop is not None else DEFAULT_BUDGET
    result = context.run_stage("mixed-precision search (ai-edge-quantizer, LiteRT)", search_mixed, source,
                               context.calibration, x, labels, float(budget), context.workdir)
    result["search"].update(source=origin, samples_from=where,
                            budget_from="--max-drop" if context.max_drop is not None
                            else f"default {DEFAULT_BUDGET:g} pt (no --max-drop given)")
    context.cache["mixed-plan"] = result
    return result


_NAMED = 6  # int8 layers a note names before "… (N more)"


def _note(plan: dict[str, Any]) -> str:
    search = plan["search"]
    kept = [row["layer"] for row in plan["layers"] if row["bits"] == 8]
    # A 23-layer network printed all 23 names; every layer's bits are in details.layers.
    if kept and len(kept) == len(plan["layers"]):
        names = "all"
    else:
        names = ", ".join(kept[:_NAMED]) + (f", … ({len(kept) - _NAMED} more)" if len(kept) > _NAMED else "")
    text = (f"{sum(row['bits'] == 4 for row in plan['layers'])} of {len(plan['layers'])} weighted layers int4, "
            f"int8: {names or 'none'}; search drop {search['drop_pts']:g} pts ± {search['se_pts']:g} "
            f"(target {search['target_pts']:g} = budget {search['max_drop_pts']:g} − {search['z']:g}·SE)")
    if not search["met"]:
        text += "; even all-int8 weights missed the target on the search samples: this is the int8 model"
    return text


@register_converter("tflite-mixed", filename="model_mixed.tflite", runtime="tflite", quantized=True, dtype="mixed",
                    description="TFLite per-layer int4/int8 weights, int8 activations, searched under --max-drop "
                                "(--precision auto)")
def convert_tflite_mixed(context: ConversionContext, out_path: Path) -> dict:
    """Write the searched mixed-precision TFLite model.

    Args:
        context: the run's context.
        out_path: where to write the ``.tflite``.
    """
    from edgeqd.converters.kernels import check_kernels
    from edgeqd.converters.lowbit import float_source, weight_details

    plan = mixed_plan(context)
    out_path.write_bytes(plan["model"])
    details = {"layers": plan["layers"], "search": plan["search"], "held_out_drop": _HELD_OUT,
               **weight_details(plan["model"], 4)}
    details["kernels"] = check_kernels(out_path, float_source(context)[0], context.calibration, context.workdir)
    details["note"] = _note(plan)
    return details


@register_converter("onnx-mixed", filename="model_mixed.onnx", runtime="onnx", quantized=True, dtype="mixed",
                    description="ONNX QDQ with the per-layer int4/int8 weights tflite-mixed's search chose "
                                "(--precision auto)")
def convert_onnx_mixed(context: ConversionContext, out_path: Path) -> dict:
    """Write the ONNX twin of the mixed-precision plan (same bits per layer, int8 activations).

    Args:
        context: the run's context.
        out_path: where to write the ``.onnx``.
    """
    import onnx

    from edgeqd.converters.lowbit_onnx import _prepared, weighted_nodes, write_onnx_lowbit

    plan = mixed_plan(context)
    wanted = {row["layer"]: row["bits"] for row in plan["layers"]}
    nodes = weighted_nodes(onnx.load(str(_prepared(context)), load_external_data=False))
    # Layers are matched by name (the export keeps Keras layer names); an unmatched node keeps int8.
    layer_bits = {n["layer"]: wanted.get(n["layer"].split("/", 1)[-1], 8) for n in nodes}
    unmatched = [n["layer"] for n in nodes if n["layer"].split("/", 1)[-1] not in wanted and not n["depthwise"]]
    details = write_onnx_lowbit(context, out_path, layer_bits)
    details.update(layers=plan["layers"], search=plan["search"], held_out_drop=_HELD_OUT)
    note = _note(plan)
    if unmatched:
        note += f"; kept int8 (no TFLite layer of that name): {', '.join(unmatched)}"
    details["note"] = note
    return details
