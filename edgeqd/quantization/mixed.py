"""Mixed precision under an accuracy budget: the fewest bytes whose drop fits ``--max-drop``.

Every convolution / fully connected layer starts at the lowest weight bits LiteRT 2.3 runs
in a full-integer model (int4 for CONV_2D and FULLY_CONNECTED; int8 for depthwise, which
has no int4 kernel); activations are int8 throughout. Layers are then promoted to int8 one
at a time, **most output noise per byte saved first** (from a one-at-a-time sensitivity
pass: each layer int4 in an otherwise int8 model), until the drop on the *search* samples
fits the budget less a one-sided margin for their sampling noise:

    target = max_drop − 1.64 · SE,   SE = 100 · sqrt(disagreement / n)   (points)

(the paired standard error of an accuracy difference is about sqrt(p_disagree / n); on a few
thousand samples it is 0.3–0.5 pts, so a search that aims at the budget itself passes it by
luck about half the time). The drop is accuracy points against the float model with labels,
and the share of samples whose top-1 class changes (an upper bound) without them.

The search never sees the held-out samples: the pipeline verifies the shipped artifact on
its evaluation split like every other artifact, and ``--max-drop`` fails the run when that
held-out drop is over budget. When even all-int8 misses the target on the search samples,
all-int8 is what ships, and the details say so.

>>> standard_error(0.96, 2000)
0.447
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

__all__ = ["Z_ONE_SIDED", "standard_error", "plan_recipe", "search_mixed"]

# One-sided 95 % normal quantile: the search aims this many standard errors under the budget.
Z_ONE_SIDED = 1.64


def standard_error(agreement: float, samples: int) -> float:
    """Approximate standard error (points) of the accuracy drop of a model agreeing ``agreement`` with float.

    Args:
        agreement: share of samples with the float model's top-1 class.
        samples: how many samples.
    """
    disagree = max(1.0 - agreement, 1.0 / max(samples, 1))
    return round(100.0 * math.sqrt(disagree / max(samples, 1)), 3)


def plan_recipe(layers: list, bits: dict[str, int]) -> list[dict]:
    """The ai-edge-quantizer recipe of a plan: every op w8a8, then each layer's own weight bits.

    Args:
        layers: :func:`edgeqd.quantization.sensitivity.weighted_layers` of the float model.
        bits: {layer output name: weight bits}.
    """
    from edgeqd.quantization.lowbit import scope_of, static_recipe

    return static_recipe(layer_bits={f"{w.op}|{scope_of(w.output)}": bits[w.output] for w in layers
                                     if bits.get(w.output, 8) != 8})


def _order(model: bytes, layers: list, ranges, reference: np.ndarray, x: np.ndarray, workdir) -> list[dict]:
    """Layers that can go below 8 bits, most output noise per byte saved first (each int4 in an int8 model)."""
    from edgeqd.quantization.aeq import quantize_with
    from edgeqd.quantization.lowbit import allowed_bits
    from edgeqd.quantization.sensitivity import compare, run_tflite

    base = quantize_with(model, plan_recipe(layers, {}), ranges)
    rows = []
    for w in layers:
        if min(allowed_bits(w.op, "static")) >= 8:
            continue
        variant = quantize_with(model, plan_recipe(layers, {w.output: 4}), ranges)
        result = compare(reference, run_tflite(variant, x, workdir), None)
        noise = 0.0 if result["sqnr_db"] is None else 10.0 ** (-result["sqnr_db"] / 10.0)
        saved = max(len(base) - len(variant), 1)
        rows.append({"output": w.output, "noise": noise, "saved": saved, "sqnr_db": result["sqnr_db"],
                     "agreement": result["agreement"]})
    return sorted(rows, key=lambda r: r["noise"] / r["saved"], reverse=True)


def search_mixed(model: bytes, calibration: np.ndarray, x: np.ndarray, labels: Optional[np.ndarray],
                 max_drop: float, workdir: Optional[Path] = None) -> dict[str, Any]:
    """Search per-layer weight bits (int4/int8) for the smallest full-integer model within ``max_drop``.

    A module-level function of plain data: the pipeline runs it in its child process.

    Args:
        model: the float ``.tflite``'s bytes.
        calibration: representative inputs (activation ranges, calibrated once).
        x: the search samples (never the held-out ones).
        labels: their labels, or None (the drop is then the disagreement in points).
        max_drop: the budget, in accuracy points.
        workdir: a scratch folder.

    Returns:
        {"model": bytes, "layers": [{"layer", "op", "elements", "bits"}], "search": {...}}.
    """
    from edgeqd.quantization.aeq import calibrate, quantize_with
    from edgeqd.quantization.lowbit import allowed_bits, static_recipe
    from edgeqd.quantization.sensitivity import compare, run_tflite, weighted_layers

    layers = weighted_layers(model)
    ranges = calibrate(model, static_recipe(), calibration)
    reference = run_tflite(model, x, workdir)
    bits = {w.output: min(allowed_bits(w.op, "static")) for w in layers}
    order = _order(model, layers, ranges, reference, x, workdir)
    steps = []

    def measure() -> tuple[bytes, dict[str, Any]]:
        quantized = quantize_with(model, plan_recipe(layers, bits), ranges)
        result = compare(reference, run_tflite(quantized, x, workdir), labels)
        drop = result["drop_pts"] if result["drop_pts"] is not None else round(100 * (1 - result["agreement"]), 3)
        se = standard_error(result["agreement"], len(x))
        step = {"int8_layers": sorted(_short(w.layer) for w in layers if bits[w.output] == 8), "bytes": len(quantized),
                "drop_pts": drop, "agreement": result["agreement"], "se_pts": se,
                "target_pts": round(max_drop - Z_ONE_SIDED * se, 3)}
        steps.append(step)
        return quantized, step

    quantized, step = measure()
    for candidate in order:
        if step["drop_pts"] <= step["target_pts"]:
            break
        bits[candidate["output"]] = 8
        quantized, step = measure()
    met = step["drop_pts"] <= step["target_pts"]
    names = {w.output: _short(w.layer) for w in layers}
    return {"model": quantized,
            "layers": [{"layer": _short(w.layer), "op": w.op, "elements": w.elements, "bits": bits[w.output]}
                       for w in layers],
            "search": {"samples": int(len(x)), "labelled": labels is not None, "max_drop_pts": max_drop,
                       "z": Z_ONE_SIDED, "drop_pts": step["drop_pts"], "se_pts": step["se_pts"],
                       "target_pts": step["target_pts"], "met": bool(met), "builds": 2 + len(order) + len(steps),
                       "promotion_order": [{"layer": names[r["output"]], "int4_sqnr_db": r["sqnr_db"],
                                            "bytes_saved_by_int4": r["saved"]} for r in order],
                       "steps": steps}}


def _short(layer: str) -> str:
    """"model/fc1" → "fc1" (the export's outer model name dropped)."""
    return layer.split("/", 1)[-1]
