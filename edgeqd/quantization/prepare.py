"""Make any real Keras model quantization-aware: rewrite what TFMOT rejects, leave the rest float.

:func:`prepare_qat` turns a float model into a QAT model in three steps:

1. **Rewrite** known patterns into equivalents TFMOT can quantize, with the rules
   registered in :data:`edgeqd.quantization.rewrite.REWRITE_RULES` (custom layers,
   ``TFOpLambda`` layers such as ``x * 2.0`` and the like are left alone).
2. **Check** that the rewritten float model computes what the original computes on
   real samples (:func:`edgeqd.quantization.rewrite.check_equivalent`).
3. **Annotate** every layer TFMOT's 8-bit registry supports (plus batch norms it
   folds into the preceding convolution) and apply quantization (:func:`make_qat`); the
   other layers stay float and are listed with the reason. A TFMOT error naming a
   layer moves that layer to the float list and quantization is retried; any other
   TFMOT failure becomes a :class:`~edgeqd.errors.QuantizationError` — the user never
   sees a bare TFMOT error.

>>> FloatLayer("lambda", "Lambda", "arbitrary Python code").to_dict()["kind"]
'Lambda'
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from edgeqd.errors import ModelError, QuantizationError
from edgeqd.quantization.graph import Graph, restore_layer_state, to_functional
from edgeqd.quantization.rewrite import (BN_FOLD_PRODUCERS, REWRITE_TOLERANCE, AppliedRewrite, check_equivalent,
                                         rewrite_for_quantization)

# Samples used for the equivalence check: enough to exercise every channel's
# batch-norm fold, few enough to cost well under a second for small models.
CHECK_SAMPLES = 64
# How many times a layer named in a TFMOT error is moved to the float list before giving up.
MAX_QUANTIZE_RETRIES = 8
# Affine preprocessing layers TFMOT has no config for: quantized at their output.
PREPROCESSING_LAYERS = ("Rescaling", "Normalization")
# The activations TFMOT 0.8.1's Default8BitActivationQuantizeConfig knows (by function name). Any other
# ``Activation`` layer (e.g. the Keras 3 ``hard_silu`` edgeqd keeps for a translated MobileNetV3) made
# quantize_apply raise without naming the layer — annotated or not, since a layer before an annotated one
# gets the registry's config for its output — so the whole QAT run failed. See _annotated.
TFMOT_ACTIVATIONS = ("relu", "swish", "gelu", "relu6", "linear", "softmax", "sigmoid", "tanh")


@dataclass(frozen=True)
class FloatLayer:
    """A layer left in float32 in the quantization-aware model.

    Attributes:
        name: the layer's name.
        kind: its class name.
        reason: why it is not quantized.
    """

    name: str
    kind: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class PreparedModel:
    """What :func:`prepare_qat` produced.

    Attributes:
        float_model: the rewritten float model (same function as the input).
        qat_model: the quantization-aware model (TFMOT wrappers, fake-quant ops).
        rewrites: the rewrites applied.
        float_layers: the layers left in float32.
        max_abs_diff: largest |rewritten − original| output difference on the check samples.
        tolerance: the bound it was checked against.
        check_samples: how many samples were compared.
        per_channel: whether weights get per-channel scales.
    """

    float_model: Any
    qat_model: Any
    rewrites: list[AppliedRewrite] = field(default_factory=list)
    float_layers: list[FloatLayer] = field(default_factory=list)
    max_abs_diff: float = 0.0
    tolerance: float = 0.0
    check_samples: int = 0
    per_channel: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``qat.rewrite`` section."""
        return {"rewrites": [r.to_dict() for r in self.rewrites],
                "left_float": [f.to_dict() for f in self.float_layers],
                "equivalence": {"max_abs_diff": self.max_abs_diff, "tolerance": self.tolerance,
                                "samples": self.check_samples,
                                "rule": "max|rewritten - original| <= tolerance * (1 + max|original|)"},
                "per_channel": self.per_channel}


def _registry(per_channel: bool):
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry)

    return default_8bit_quantize_registry.Default8BitQuantizeRegistry(disable_per_axis=not per_channel)


def _float_reason(layer, graph: Graph, registry) -> Optional[str]:
    """Why ``layer`` cannot be annotated for quantization, or None when it can."""
    from tf_keras import layers

    if isinstance(layer, layers.InputLayer):
        return None
    kind = type(layer).__name__
    if isinstance(layer, layers.BatchNormalization):
        producer = graph.single_producer(layer.name)
        if producer is not None and type(producer).__name__ in BN_FOLD_PRODUCERS:
            return None
        return "batch norm with no convolution before it to fold into and no rewrite that fits"
    if kind in PREPROCESSING_LAYERS:
        return None  # quantized at its output (see _annotated)
    if kind == "TFOpLambda":
        return f"TF op {layer.name.split('.', 1)[-1]!r} called on Keras tensors: TFMOT cannot wrap TFOpLambda layers"
    if kind == "Lambda":
        return "Lambda layer: arbitrary Python code that TFMOT cannot wrap"
    if hasattr(layer, "layers") and hasattr(layer, "inputs"):
        return "nested model: TFMOT does not quantize inside nested models"
    try:
        if registry.supports(layer):
            return None
    except Exception:  # a registry probe should never stop the run; treat as unsupported
        pass
    return f"{kind} is not in TFMOT's default 8-bit registry"


_TFMOT_LAYER = re.compile(r"Layer (\S+?):<class")


def _quantize(annotated_model, scheme):
    import tensorflow_model_optimization as tfmot

    with tfmot.quantization.keras.quantize_scope():
        qat_model = tfmot.quantization.keras.quantize_apply(annotated_model, scheme)
    restore_layer_state(qat_model)  # TFMOT's rebuild skips finalize_state (Normalization's mean/variance)
    return qat_model


def _annotated(layer):
    """``layer`` marked for TFMOT: preprocessing layers get an output-only config.

    ``Rescaling`` and ``Normalization`` are affine maps TFMOT has no config for. Left
    alone, TFMOT inserts no input quantizer, so the first convolution after them runs in
    float in the "int8" artifact, and the float converter folds the ×1/255 into that
    conv's fake-quantized weights with the old range (every weight rounds to 0: one
    class for every sample). Quantizing their output instead makes the first conv int8
    and keeps its weights as they are.
    """
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs)

    if type(layer).__name__ in PREPROCESSING_LAYERS or _unknown_activation(layer):
        return tfmot.quantization.keras.quantize_annotate_layer(
            layer, default_8bit_quantize_configs.Default8BitOutputQuantizeConfig())
    return tfmot.quantization.keras.quantize_annotate_layer(layer)


def _unknown_activation(layer) -> bool:
    """An ``Activation`` TFMOT has no config for: computed in float, quantized at its output (as LiteRT
    runs e.g. HARD_SWISH in int8), like the preprocessing layers above."""
    from tf_keras import layers

    return isinstance(layer, layers.Activation) and getattr(layer.activation, "__name__", "") not in TFMOT_ACTIVATIONS


def make_qat(model, per_channel: bool = True, strict: bool = False) -> tuple[Any, list[FloatLayer]]:
    """Annotate every quantizable layer of a (rewritten) functional model and apply TFMOT.

    Args:
        model: a functional ``tf_keras`` model, ideally already rewritten.
        per_channel: per-channel weight scales (TFMOT's default) or one per tensor.
        strict: raise instead of leaving layers in float.

    Returns:
        (QAT model, layers left float).

    >>> import tf_keras as keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> make_qat(to_functional(m))[1]
    []
    """
    import tf_keras as keras
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_scheme)

    model = to_functional(model)
    graph = Graph.of(model)
    registry = _registry(per_channel)
    float_layers = {}
    for layer in model.layers:
        reason = _float_reason(layer, graph, registry)
        if reason is not None:
            float_layers[layer.name] = FloatLayer(layer.name, type(layer).__name__, reason)
    scheme = default_8bit_quantize_scheme.Default8BitQuantizeScheme(disable_per_axis=not per_channel)
    last_error = ""
    for _ in range(MAX_QUANTIZE_RETRIES + 1):
        if strict and float_layers:
            listed = "; ".join(f"{f.name} ({f.reason})" for f in float_layers.values())
            raise QuantizationError(f"--strict: {len(float_layers)} layer(s) would stay float: {listed}")

        def annotate(layer):
            if layer.name in float_layers or isinstance(layer, keras.layers.InputLayer):
                return layer
            return _annotated(layer)

        try:
            # The wrappers share the original layers, so weights carry over without copying.
            annotated = keras.models.clone_model(model, clone_function=annotate)
            return _quantize(annotated, scheme), list(float_layers.values())
        except Exception as exc:
            last_error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            named = _TFMOT_LAYER.search(last_error)
            if named is None or named.group(1) in float_layers:
                break
            # TFMOT named the layer it cannot handle: leave that one float and try again.
            layer = model.get_layer(named.group(1)) if named.group(1) in graph.entries else None
            float_layers[named.group(1)] = FloatLayer(named.group(1), type(layer).__name__ if layer else "?",
                                                      f"TFMOT refused it: {last_error[:200]}")
    raise QuantizationError(f"TFMOT could not make {model.name} quantization-aware: {last_error[:300]} "
                            f"({len(float_layers)} layer(s) already left float)")


def prepare_qat(model, samples: np.ndarray, per_channel: bool = True, strict: bool = False,
                tolerance: float = REWRITE_TOLERANCE) -> PreparedModel:
    """Rewrite, check and quantize-wrap ``model``: the one call QAT needs.

    Args:
        model: the float ``tf_keras`` model (not modified).
        samples: real inputs for the equivalence check (the first :data:`CHECK_SAMPLES` are used).
        per_channel: per-channel weight scales (default) or per-tensor.
        strict: raise :class:`QuantizationError` when any layer would stay float.
        tolerance: relative bound of the equivalence check.

    Returns:
        A :class:`PreparedModel`.

    >>> import numpy as np, tf_keras as keras
    >>> i = keras.Input((8, 3)); o = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Conv1D(4, 3)(i)))
    >>> prepared = prepare_qat(keras.Model(i, o), np.ones((2, 8, 3), "float32"))
    >>> [r.rule for r in prepared.rewrites], prepared.float_layers
    (['lift-1d'], [])
    """
    if not model.trainable_weights:
        raise ModelError(f"{model.name} has no trainable weights: there is nothing for quantization-aware "
                         "training to fine-tune (use --mode ptq)")
    rewritten, applied = rewrite_for_quantization(model)
    check = np.asarray(samples[:CHECK_SAMPLES], dtype=np.float32)
    diff = check_equivalent(model, rewritten, check, tolerance) if applied else 0.0
    qat_model, float_layers = make_qat(rewritten, per_channel=per_channel, strict=strict)
    return PreparedModel(rewritten, qat_model, applied, float_layers, diff, tolerance, len(check), per_channel)
