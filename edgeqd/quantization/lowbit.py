"""Below 8 bits: which op may store which weight bits in LiteRT 2.3, and the ai-edge-quantizer recipes that say so.

The facts behind the tables (measured with ai-edge-quantizer 0.10.0 and LiteRT 2.3 on
Fashion-MNIST models; /work/scratch/lowbit/FINDINGS.md, benchmarks/RESULTS.md):

* ``FULLY_CONNECTED`` and ``CONV_2D`` take int4 weights, dynamic (float activations) and
  static (int8 activations); XNNPACK runs FC int4, but **not CONV_2D int4** (those run on
  LiteRT's builtin kernels: correct, slower).
* ``DEPTHWISE_CONV_2D`` has no int4 kernel: static recipes keep it int8; a dynamic int4
  recipe would leave it **float**, so :func:`w4_recipe` adds a dynamic int8 rule for it.
* int2 works in ``FULLY_CONNECTED`` only, per channel: CONV_2D with int2 weights runs and
  outputs garbage (builtin kernels: NaN), and blockwise int2 is refused by XNNPACK and
  wrong on the builtin kernels. :func:`check_int2_rules` refuses any recipe that would
  put int2 elsewhere — the hard guard of ``tflite-w2``.
* min-max int2 rounds most weights to 0 (scale max|w|/1); OCTAV (clipping chosen to
  minimise the error) keeps far more: FC int2 uses it.

Recipes are ai-edge-quantizer's own data (lists of dicts, JSON-ready: they go in the manifest).
Rules are applied in order and the later one wins, so "every op w8a8, then FC and
CONV_2D int4" leaves every op ai-edge-quantizer has no int4 policy for at int8 — where
one ``ALL_SUPPORTED`` int4 rule would silently leave them float.

>>> allowed_bits("DEPTHWISE_CONV_2D", "static"), allowed_bits("FULLY_CONNECTED", "dynamic")
((8,), (2, 4, 8))
>>> check_int2_rules([{"operation": "CONV_2D", "op_config": {"weight_tensor_config": {"num_bits": 2}}}])
Traceback (most recent call last):
edgeqd.errors.ConversionError: refused: int2 weights on CONV_2D (rule 0); LiteRT 2.3 computes int2 correctly in FULLY_CONNECTED only, per channel (CONV_2D int2 runs and outputs garbage)
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Optional

from edgeqd.errors import ConversionError

__all__ = ["STATIC_BITS", "DYNAMIC_BITS", "allowed_bits", "scope_of", "check_int2_rules", "w4a8_recipe",
           "w4_recipe", "w2_recipe", "static_recipe", "dynamic_recipe", "KERNEL_NOTES"]

# Weight bits each op may store in a full-integer (static, int8 activations) model, lowest first.
STATIC_BITS = {"FULLY_CONNECTED": (4, 8), "CONV_2D": (4, 8), "DEPTHWISE_CONV_2D": (8,)}
# ... and in a dynamic-range (float activations) model.
DYNAMIC_BITS = {"FULLY_CONNECTED": (2, 4, 8), "CONV_2D": (4, 8), "DEPTHWISE_CONV_2D": (8,)}
# Why an op keeps more bits than the format asks for, in the manifest's words.
KERNEL_NOTES = {
    "DEPTHWISE_CONV_2D": "DEPTHWISE_CONV_2D keeps int8 weights: LiteRT has no int4 depthwise kernel",
    "CONV_2D_INT2": "CONV_2D keeps int4 weights: LiteRT 2.3's int2 convolution outputs garbage",
    "CONV_2D_XNNPACK": "CONV_2D with int4 weights runs on LiteRT's builtin kernels (XNNPACK in LiteRT 2.3 does "
                       "not take it): correct, slower than int8",
}


def allowed_bits(op: str, mode: str) -> tuple[int, ...]:
    """The weight bits ``op`` may store, lowest first; (8,) for ops with no low-bit kernel.

    Args:
        op: the TFLite builtin name.
        mode: "static" (int8 activations) or "dynamic" (float activations).
    """
    return (STATIC_BITS if mode == "static" else DYNAMIC_BITS).get(op, (8,))


def scope_of(output_name: str) -> str:
    """ai-edge-quantizer's scope regex for exactly one op: its output tensor name(s) joined by ``;``, plus ``;``.

    The quantizer matches a rule's regex with ``re.search`` against that string, so an
    unanchored layer name would also match every op whose name contains it.

    Args:
        output_name: the op's (first) output tensor name.

    >>> scope_of("model/fc1/MatMul;model/fc1/Relu")
    '^model/fc1/MatMul;model/fc1/Relu;$'
    """
    return "^" + re.escape(output_name + ";") + "$"


def _bits(rule: Mapping[str, Any]) -> Optional[int]:
    config = (rule.get("op_config") or {}).get("weight_tensor_config") or {}
    return config.get("num_bits")


def check_int2_rules(recipe: Iterable[Mapping[str, Any]]) -> None:
    """Refuse a recipe that would store int2 weights anywhere LiteRT 2.3 does not compute them correctly.

    int2 is allowed only on ``FULLY_CONNECTED``, per channel (not blockwise, not through
    ``ALL_SUPPORTED``, which reaches CONV_2D).

    Args:
        recipe: an ai-edge-quantizer recipe (list of rules).

    Raises:
        ConversionError: a rule puts int2 on another op or blockwise.
    """
    for number, rule in enumerate(recipe):
        if _bits(rule) != 2:
            continue
        operation = str(getattr(rule.get("operation"), "value", rule.get("operation")))
        granularity = str(getattr((rule["op_config"]["weight_tensor_config"]).get("granularity", "CHANNELWISE"),
                                  "value", (rule["op_config"]["weight_tensor_config"]).get("granularity")))
        if operation != "FULLY_CONNECTED":
            raise ConversionError(f"refused: int2 weights on {'every op' if operation == '*' else operation} "
                                  f"(rule {number}); LiteRT 2.3 computes int2 correctly in FULLY_CONNECTED only, per "
                                  "channel (CONV_2D int2 runs and outputs garbage)")
        if granularity not in ("CHANNELWISE", "None"):
            raise ConversionError(f"refused: {granularity.lower()} int2 weights (rule {number}); XNNPACK refuses "
                                  "blockwise int2 and LiteRT's builtin kernels compute it wrongly: per channel only")


def check_int2_file(weights: Iterable[Any]) -> None:
    """The same guard on a written file: no int2 weight outside a per-channel FULLY_CONNECTED.

    Args:
        weights: :class:`edgeqd.artifact_info.weights.StoredWeight` rows of the file.

    Raises:
        ConversionError: an int2 weight feeds another op or is blockwise.
    """
    for weight in weights:
        if weight.dtype == "int2" and (weight.op != "FULLY_CONNECTED" or weight.granularity == "blockwise"):
            raise ConversionError(f"refused: the quantizer stored int2 weights in {weight.op} {weight.layer} "
                                  f"({weight.granularity}); LiteRT 2.3 computes int2 correctly in per-channel "
                                  "FULLY_CONNECTED only")


def _manager():
    from ai_edge_quantizer import recipe_manager

    return recipe_manager.RecipeManager()


def _op(name: str):
    from ai_edge_quantizer import qtyping

    return qtyping.TFLOperationName(name) if name != "*" else qtyping.TFLOperationName.ALL_SUPPORTED


def static_recipe(layer_bits: Optional[Mapping[str, int]] = None, default_low: bool = False,
                  activation_bits: Optional[Mapping[str, int]] = None) -> list[dict]:
    """A full-integer recipe: every op w8a8 (int8 I/O), then other weight or activation bits for single ops.

    Args:
        layer_bits: {"OP|scope": weight bits} for single ops (``scope`` from :func:`scope_of`).
        default_low: first give every FULLY_CONNECTED and CONV_2D int4 weights (``tflite-w4a8``);
            ``layer_bits`` then sets single ops back to 8.
        activation_bits: {"OP|scope": 16} for ops whose activations are int16 (sensitivity).

    Returns:
        The recipe (later rules win).
    """
    manager = _manager()
    manager.add_static_config(".*", _op("*"), activation_num_bits=8, weight_num_bits=8)
    if default_low:
        for op in ("FULLY_CONNECTED", "CONV_2D"):
            manager.add_static_config(".*", _op(op), activation_num_bits=8, weight_num_bits=4)
    for key, bits in (layer_bits or {}).items():
        op, scope = key.split("|", 1)
        if bits != 8 or default_low:
            manager.add_static_config(scope, _op(op), activation_num_bits=8, weight_num_bits=bits)
    for key, bits in (activation_bits or {}).items():
        op, scope = key.split("|", 1)
        manager.add_static_config(scope, _op(op), activation_num_bits=bits, weight_num_bits=8)
    return _plain(manager.get_quantization_recipe())


def dynamic_recipe(layer_bits: Mapping[str, int], octav: bool = True) -> list[dict]:
    """A dynamic-range recipe (float activations) with the given weight bits per op; other ops stay float.

    Args:
        layer_bits: {"OP|scope": bits}; int2 uses OCTAV (see the module's notes).
        octav: False: int2 uses min-max too (weights already on the int2 grid, from low-bit QAT).
    """
    from ai_edge_quantizer import algorithm_manager

    manager = _manager()
    for key, bits in layer_bits.items():
        op, scope = key.split("|", 1)
        algorithm = algorithm_manager.AlgorithmName.OCTAV if bits == 2 and octav else \
            algorithm_manager.AlgorithmName.MIN_MAX_UNIFORM_QUANT
        manager.add_dynamic_config(scope, _op(op), bits, algorithm_key=algorithm)
    recipe = _plain(manager.get_quantization_recipe())
    check_int2_rules(recipe)
    return recipe


def w4a8_recipe() -> list[dict]:
    """``tflite-w4a8``: every op w8a8 (int8 activations, int8 I/O), then FULLY_CONNECTED and CONV_2D int4 weights.

    >>> [rule["op_config"]["weight_tensor_config"]["num_bits"] for rule in w4a8_recipe()]  # doctest: +SKIP
    [8, 4, 4]
    """
    return static_recipe(default_low=True)


def w4_recipe() -> list[dict]:
    """``tflite-w4``: int4 weights on every op the quantizer has a dynamic int4 policy for, depthwise int8, float activations."""
    manager = _manager()
    manager.add_dynamic_config(".*", _op("*"), 4)
    # No dynamic int4 policy for depthwise: without this rule it stays float.
    manager.add_dynamic_config(".*", _op("DEPTHWISE_CONV_2D"), 8)
    return _plain(manager.get_quantization_recipe())


def w2_recipe(octav: bool = True) -> list[dict]:
    """``tflite-w2``: FULLY_CONNECTED int2 (OCTAV, per channel), CONV_2D int4, depthwise int8, float activations.

    Args:
        octav: clip the int2 range by OCTAV (post-training); False: min-max, whose grid (max|w|/1)
            is the one low-bit QAT trains, so trained weights are stored without rounding again.
    """
    return dynamic_recipe({"CONV_2D|.*": 4, "DEPTHWISE_CONV_2D|.*": 8, "FULLY_CONNECTED|.*": 2}, octav=octav)


def _plain(recipe: list[dict]) -> list[dict]:
    """The recipe with its str-Enums as plain strings: picklable without the quantizer, JSON-ready, and accepted back."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value.value if hasattr(value, "value") and isinstance(value.value, (str, int)) else value

    return plain(recipe)
