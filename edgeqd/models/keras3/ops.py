"""Keras 3 operations on tensors (``x + 3.0``, ``keras.ops.multiply``) and Keras 3's recorded mask plumbing.

A Keras 3 functional model records operations applied to KerasTensors as graph entries
(``module: keras.src.ops.numpy``, a config holding only a name). tf_keras has no such entries; it
records TF functions as ``TFOpLambda`` layers, which is what binary arithmetic becomes here.
"""

from __future__ import annotations

from typing import Optional

from .common import tensor_ref


OPS = {  # Keras 3 op class (keras.src.ops.*) -> tf function name TFOpLambda resolves, 2nd arg name
    "Add": ("__operators__.add", "y"), "Subtract": ("math.subtract", "y"),
    "Multiply": ("math.multiply", "y"), "Divide": ("math.truediv", "y"), "TrueDivide": ("math.truediv", "y"),
    "Maximum": ("math.maximum", "y"), "Minimum": ("math.minimum", "y"),
}


def _op_translator(entry: dict, ctx) -> dict:
    """A Keras 3 operation on KerasTensors (``x + 3.0``, ``keras.ops.multiply``) -> tf_keras TFOpLambda."""
    function, _ = OPS[entry["class_name"]]
    return {"module": "tf_keras.src.layers.core.tf_op_layer", "class_name": "TFOpLambda",
            "config": {"name": entry["config"]["name"], "trainable": True, "dtype": "float32",
                       "function": function},
            "registered_name": "TFOpLambda"}


def translate_op_or_layer(entry: dict, ctx) -> Optional[dict]:
    """The TFOpLambda for a Keras 3 operation entry (``keras.src.ops.*``), None for a layer entry.

    Args:
        entry: a serialized entry of a functional config.
        ctx: the translation context.

    Raises:
        ValueError: an operation with no tf_keras translation (only binary arithmetic has one).
    """
    module = str(entry.get("module") or "")
    if module.startswith("keras.src.ops"):
        if entry["class_name"] not in OPS:
            raise ValueError(f"Keras 3 operation {module}.{entry['class_name']} has no tf_keras translation")
        return _op_translator(entry, ctx)
    return None


def mask_only_ops(config_layers: list) -> set:
    """Keras 3 operations whose outputs are only ever used as ``mask=`` (or by other such ops).

    Keras 3 records mask plumbing in the graph: ``Embedding(mask_zero=True)`` gives a
    ``NotEqual(tokens, 0)`` op (and ``ConvertToTensor``) passed as ``mask=`` to the next layers;
    tf_keras computes and propagates the same masks implicitly, so these ops and kwargs are dropped
    (the parity check confirms the masks agree).

    Args:
        config_layers: the ``layers`` list of a Keras 3 functional config.

    Returns:
        Names of the operations that only compute masks.
    """
    ops = {e.get("name") or e["config"].get("name") for e in config_layers
           if str(e.get("module") or "").startswith("keras.src.ops")}
    uses: dict[str, list[tuple[str, bool]]] = {name: [] for name in ops}  # op -> (consumer, as mask?)

    def walk(value, consumer, as_mask):
        ref = tensor_ref(value)
        if ref is not None:
            if ref[0] in uses:
                uses[ref[0]].append((consumer, as_mask))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, consumer, as_mask or key == "mask")
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item, consumer, as_mask)

    for entry in config_layers:
        consumer = entry.get("name") or entry["config"].get("name")
        for node in entry.get("inbound_nodes", []):
            if isinstance(node, dict):
                walk(node.get("args", []), consumer, False)
                walk(node.get("kwargs", {}), consumer, False)
    candidates = {name for name in ops if uses[name]}
    changed = True
    while changed:
        changed = False
        for name in list(candidates):
            if not all(as_mask or consumer in candidates for consumer, as_mask in uses[name]):
                candidates.discard(name)
                changed = True
    return candidates
