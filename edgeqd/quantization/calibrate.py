"""Start QAT where PTQ ends: every fake-quant range calibrated on real data, batch norms frozen.

TFMOT's activation quantizers start at [−6, 6] and move as an exponential moving average
with a hard-coded decay of 0.999: after the 14 steps of one epoch on 2,000 samples a range
has moved 1.4 % of the way to the data. On fer's mini-Xception 23 of 28 ranges clipped
their tensor by more than 5 % and ReLU outputs wasted half the int8 codes on [−6, 0]: the
int8 model agreed with the float model on 65 % of the samples where PTQ agreed on 94 %
— at any learning rate. :func:`calibrate_ranges` sets every range the way PTQ's min/max
calibration does before the first step (the activations from the float model's tensor
each quantizer sits on, the weights from their current values), so the untrained QAT
model already equals PTQ and training can only refine it.

:func:`freeze_batchnorm` keeps batch norms on their moving statistics during fine-tuning
(as QAT recipes do): in training mode they drift towards the fine-tuning batches, and the
converter folds the drifted statistics into the int8 convolutions.

>>> import numpy as np
>>> agreement_and_kl(np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 0.0]]))[0]
0.5
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

__all__ = ["QuantizerRange", "quantizer_ranges", "calibrate_ranges", "freeze_batchnorm", "agreement_and_kl",
           "total_variation"]

# Activation kinds: the quantizer sits on the wrapped layer's output.
_ACTIVATION_KINDS = ("output", "post_activation", "pre_activation")


@dataclass(frozen=True)
class QuantizerRange:
    """One fake-quant range of a TFMOT model.

    Attributes:
        wrapper: the TFMOT layer holding it (``QuantizeLayer`` or ``QuantizeWrapperV2``).
        source: the name of the float layer whose output it quantizes (None for weights).
        kind: "input" (a ``QuantizeLayer``), "activation", or the weight's attribute
            ("kernel", "depthwise_kernel").
        min_var: the range's lower bound variable.
        max_var: its upper bound variable.
    """

    wrapper: Any
    source: Optional[str]
    kind: str
    min_var: Any
    max_var: Any


def _short(variable) -> str:
    return variable.name.split("/")[-1].split(":")[0]


def _inbound_name(layer) -> Optional[str]:
    """The name of the one layer feeding ``layer`` in its model, or None."""
    import tensorflow as tf

    nodes = layer.inbound_nodes
    if len(nodes) != 1:
        return None
    sources = tf.nest.flatten(nodes[0].keras_inputs)
    return sources[0].node.layer.name if len(sources) == 1 else None


def quantizer_ranges(qat_model) -> list[QuantizerRange]:
    """Every fake-quant range of a TFMOT quantization-aware model.

    Args:
        qat_model: a model made by :func:`edgeqd.quantization.prepare.make_qat`.
    """
    found = []
    wrappers = {layer.name: layer for layer in qat_model.layers}
    for layer in qat_model.layers:
        kind = type(layer).__name__
        variables = {_short(v): v for v in layer.non_trainable_weights}
        if kind == "QuantizeLayer":
            source = _inbound_name(layer)
            inner = getattr(wrappers.get(source), "layer", None)  # a QuantizeLayer after a wrapper: its layer
            found.append(QuantizerRange(layer, inner.name if inner is not None else source, "input",
                                        variables[f"{layer.name}_min"], variables[f"{layer.name}_max"]))
            continue
        if not kind.startswith("QuantizeWrapper"):
            continue
        for key, low in variables.items():
            if not key.endswith("_min") or key[:-4] + "_max" not in variables:
                continue
            attribute = key[:-4]
            is_activation = attribute in _ACTIVATION_KINDS
            found.append(QuantizerRange(layer, layer.layer.name if is_activation else None,
                                        "activation" if is_activation else attribute, low,
                                        variables[attribute + "_max"]))
    return found


def _tensor_ranges(float_model, names: list[str], samples: np.ndarray, batch_size: int) -> dict[str, tuple]:
    """Global min/max of each named layer's output over ``samples`` (as TFLite's min/max calibration)."""
    import tf_keras as keras

    if not names:
        return {}
    probe = keras.Model(float_model.inputs, [float_model.get_layer(n).output for n in names])
    low = {n: np.inf for n in names}
    high = {n: -np.inf for n in names}
    for start in range(0, len(samples), batch_size):
        outputs = probe(samples[start:start + batch_size], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for name, value in zip(names, outputs):
            value = np.asarray(value)
            low[name] = min(low[name], float(value.min()))
            high[name] = max(high[name], float(value.max()))
    return {n: (low[n], high[n]) for n in names}


def calibrate_ranges(qat_model, float_model, samples: np.ndarray, batch_size: int = 128) -> dict[str, int]:
    """Set every fake-quant range of a fresh QAT model from real data, in place.

    Activations (and input quantizers): the min/max of the float model's tensor on
    ``samples``, widened to include 0 (TFLite needs 0 exactly representable). Weights:
    per channel (or per tensor) ±max |w|, symmetric — what TFMOT's ``LastValueQuantizer``
    sets on its first training step. TFMOT keeps the layer names, so the float tensor
    of a quantizer is the output of the identically named layer of ``float_model``.

    Args:
        qat_model: the quantization-aware model (fake-quant ops, TFMOT's initial ranges).
        float_model: the rewritten float model it was made from (``PreparedModel.float_model``).
        samples: calibration inputs, float32 (N, ...).
        batch_size: samples per forward pass.

    Returns:
        How many ranges were set ("activations", "weights") and left alone ("unmatched":
        quantizers on a layer TFMOT created, which keep TFMOT's initial range).
    """
    ranges = quantizer_ranges(qat_model)
    float_names = {layer.name for layer in float_model.layers}
    wanted = sorted({r.source for r in ranges if r.source is not None and r.source in float_names})
    measured = _tensor_ranges(float_model, wanted, np.asarray(samples, np.float32), batch_size)
    counts = {"activations": 0, "weights": 0, "unmatched": 0}
    for item in ranges:
        if item.kind in ("input", "activation"):
            if item.source not in measured:
                counts["unmatched"] += 1
                continue
            low, high = measured[item.source]
            low, high = min(low, 0.0), max(high, 0.0)
            item.min_var.assign(np.full(item.min_var.shape, low, np.float32))
            item.max_var.assign(np.full(item.max_var.shape, high, np.float32))
            counts["activations"] += 1
            continue
        kernel = next((w for w, _, v in item.wrapper._weight_vars if v.get("min_var") is item.min_var), None)
        if kernel is None:
            counts["unmatched"] += 1
            continue
        values = np.abs(kernel.numpy())
        channels = int(np.prod(item.min_var.shape)) if item.min_var.shape.rank else 1
        # Per-axis ranges are on the kernel's last axis (a depthwise kernel's depth multiplier).
        bound = values.max() * np.ones(item.min_var.shape, np.float32) if channels == 1 else \
            values.reshape(-1, channels).max(0).reshape(item.min_var.shape)
        item.min_var.assign(-bound)
        item.max_var.assign(bound)
        counts["weights"] += 1
    return counts


def freeze_batchnorm(qat_model) -> int:
    """Stop batch norms from learning: they run on their moving statistics in training too.

    Args:
        qat_model: the quantization-aware model (batch norms inside TFMOT wrappers included).

    Returns:
        How many batch norms were frozen.
    """
    import tf_keras as keras

    frozen = 0
    for layer in qat_model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # tf_keras: a non-trainable batch norm also runs in inference mode
            frozen += 1
    return frozen


def total_variation(outputs: np.ndarray, reference: np.ndarray, probabilities: bool = False) -> float:
    """Mean total-variation distance ½·Σ|p − q| between the candidate's and the reference's class probabilities.

    Bounded in [0, 1] and defined where an int8 softmax rounds small probabilities to
    exactly 0 (where a KL divergence is dominated by how that 0 is floored).

    Args:
        outputs: the candidate's logits (N, classes), or its probabilities.
        reference: the reference's logits on the same inputs.
        probabilities: ``outputs`` are probabilities, not logits.

    >>> round(total_variation(np.array([[0.5, 0.5]]), np.array([[0.0, -50.0]]), probabilities=True), 6)
    0.5
    """
    p = np.exp(_log_softmax(np.asarray(reference, np.float64)))
    q = np.asarray(outputs, np.float64) if probabilities else np.exp(_log_softmax(np.asarray(outputs, np.float64)))
    return float(0.5 * np.abs(p - q).sum(axis=1).mean())


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def agreement_and_kl(outputs: np.ndarray, reference: np.ndarray, probabilities: bool = False) -> tuple[float, float]:
    """Top-1 agreement with the reference, and mean KL(reference ‖ outputs) of their softmaxes.

    Args:
        outputs: the candidate's logits (N, classes), or its probabilities.
        reference: the float model's logits on the same inputs.
        probabilities: ``outputs`` are probabilities (a model ending in a softmax), not logits.

    Returns:
        (agreement in [0, 1], mean KL divergence in nats).
    """
    outputs = np.asarray(outputs, np.float64)
    reference = np.asarray(reference, np.float64)
    agreement = float((outputs.argmax(1) == reference.argmax(1)).mean())
    if probabilities:  # an int8 softmax rounds small probabilities to 0: floor them at 1e-6
        outputs = np.log(np.clip(outputs, 1e-6, None))
    log_p, log_q = _log_softmax(reference), _log_softmax(outputs)
    kl = float((np.exp(log_p) * (log_p - log_q)).sum(axis=1).mean())
    return agreement, kl
