"""Equivalent rewrites of the layer patterns TFMOT rejects, registered by name in :data:`REWRITE_RULES`.

TensorFlow Model Optimization's ``quantize_model`` raises on many layers and
patterns that real models contain (``Conv2D(activation=…)`` before a batch norm,
``Conv1D``, a batch norm that follows no convolution, ``SeparableConv2D`` in some
graphs, …). Each rule here replaces one layer by a short chain of layers computing
the same function, with weights carried over; :func:`rewrite_for_quantization`
applies them until none applies, and :func:`check_equivalent` checks on real samples
that the rewritten float model computes what the original computes:
max |Δ| ≤ :data:`REWRITE_TOLERANCE` × (1 + max |y|). Only float32 summation order
differs, so a larger difference means a rewrite is wrong and nothing goes on.
:func:`edgeqd.quantization.prepare.prepare_qat` runs both, then applies TFMOT.

>>> sorted(REWRITE_RULES)
['batchnorm-affine', 'conv1d', 'fused-activation', 'separable-conv2d']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgeqd.errors import QuantizationError
from edgeqd.quantization.graph import (Graph, activation_name, channels_last, conv1d_as_conv2d, rebuild, rewire,
                                      to_functional)

# Rewrites only change float32 summation order (a 1×k Conv2D instead of a Conv1D, a
# folded batch-norm scale instead of (x − μ)/σ·γ + β), which moves outputs by a few
# ulps per accumulation; 1e-4 relative to the output's magnitude is ~100× that for
# models of a few million multiply-adds, and far below any real rewrite mistake.
REWRITE_TOLERANCE = 1e-4
# Layers TFMOT folds a following BatchNormalization into (default_8bit_transforms).
BN_FOLD_PRODUCERS = ("Conv2D", "DepthwiseConv2D", "Dense")


@dataclass(frozen=True)
class AppliedRewrite:
    """One rewrite that was applied.

    Attributes:
        rule: the rule's name in :data:`REWRITE_RULES`.
        layer: the original layer's name.
        replaced_by: names of the layers that replace it, in order.
        detail: one sentence on what changed.
    """

    rule: str
    layer: str
    replaced_by: tuple[str, ...]
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "replaced_by": list(self.replaced_by)}


# --------------------------------------------------------------------------- rules

@dataclass(frozen=True)
class Replacement:
    """A linear chain of new layers standing in for one layer.

    Attributes:
        layers: the new layers in call order; the first takes the old layer's inputs.
        weights: each new layer's weights, by layer name (absent = freshly initialised,
            only for layers without weights).
        detail: one sentence on what changed.
    """

    layers: tuple
    weights: dict
    detail: str


@dataclass(frozen=True)
class RewriteRule:
    """One registered rewrite.

    Attributes:
        name: registry key.
        description: one line for documentation and ``--help``.
        fn: ``fn(layer, graph) -> Replacement | None`` (None: the rule does not apply).
    """

    name: str
    description: str
    fn: Callable[[Any, Graph], Optional[Replacement]]


REWRITE_RULES: dict[str, RewriteRule] = {}


def register_rewrite(name: str, description: str) -> Callable:
    """Register the decorated function as the rewrite rule ``name``.

    Rules are tried in registration order; the first that applies to a layer wins,
    and passes repeat until no rule applies (a rule's output may feed another).

    Args:
        name: registry key.
        description: one line saying what it rewrites into what.

    >>> @register_rewrite("doc-example", "never applies")
    ... def _never(layer, graph):
    ...     return None
    >>> REWRITE_RULES.pop("doc-example").description
    'never applies'
    """

    def decorator(fn: Callable[[Any, Graph], Optional[Replacement]]) -> Callable:
        if name in REWRITE_RULES:
            raise ValueError(f"rewrite rule {name!r} registered twice")
        REWRITE_RULES[name] = RewriteRule(name, description, fn)
        return fn

    return decorator


@register_rewrite("separable-conv2d",
                  "SeparableConv2D → DepthwiseConv2D + 1×1 Conv2D (TFMOT's own transform breaks on "
                  "some graphs, e.g. bias-free separable convs in Xception blocks)")
def _separable_conv2d(layer, graph: Graph) -> Optional[Replacement]:
    from tf_keras import layers

    if type(layer) is not layers.SeparableConv2D or not channels_last(layer):
        return None
    depthwise = layers.DepthwiseConv2D(
        layer.kernel_size, strides=layer.strides, padding=layer.padding,
        depth_multiplier=layer.depth_multiplier, dilation_rate=layer.dilation_rate, use_bias=False,
        name=graph.unique_name(f"{layer.name}_depthwise"))
    # The pointwise conv keeps the layer's name: its output is the original layer's output.
    pointwise = layers.Conv2D(layer.filters, 1, use_bias=layer.use_bias, activation=activation_name(layer),
                              name=layer.name)
    weights = layer.get_weights()
    new_weights = {depthwise.name: [weights[0]], pointwise.name: weights[1:]}
    return Replacement((depthwise, pointwise), new_weights,
                       "SeparableConv2D split into DepthwiseConv2D and a 1×1 Conv2D")


@register_rewrite("conv1d", "Conv1D → Reshape(1, T, C) + Conv2D with a 1×k kernel + Reshape(T', F)")
def _conv1d(layer, graph: Graph) -> Optional[Replacement]:
    from tf_keras import layers

    if type(layer) is not layers.Conv1D or not channels_last(layer):
        return None
    channels = int(layer.input_spec.axes[-1]) if layer.input_spec and layer.input_spec.axes else \
        int(layer.kernel.shape[1]) * layer.groups
    to2d = layers.Reshape((1, -1, channels), name=graph.unique_name(f"{layer.name}_to2d"))
    conv_chain, new_weights = conv1d_as_conv2d(layer, graph)
    to1d = layers.Reshape((-1, layer.filters), name=graph.unique_name(f"{layer.name}_to1d"))
    return Replacement((to2d, *conv_chain, to1d), new_weights,
                       "Conv1D computed as a Conv2D with a 1×k kernel on a height-1 map")


@register_rewrite("fused-activation",
                  "Conv2D/DepthwiseConv2D/Dense(activation=…) feeding a BatchNormalization → the layer "
                  "without activation + an Activation layer")
def _fused_activation(layer, graph: Graph) -> Optional[Replacement]:
    from tf_keras import layers

    if type(layer) not in (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense, layers.Conv2DTranspose):
        return None
    activation = activation_name(layer)
    if not isinstance(activation, str) or activation == "linear" or graph.shared(layer.name):
        return None  # linear, or a custom activation object Activation() could not rebuild by name
    feeds_bn = any(isinstance(graph.layer(c), layers.BatchNormalization) for c in graph.consumers[layer.name])
    if not feeds_bn:
        return None
    config = layer.get_config()
    config.update(activation="linear", name=layer.name)
    linear = type(layer).from_config(config)
    act = layers.Activation(activation, name=graph.unique_name(f"{layer.name}_{activation}"))
    return Replacement((linear, act), {linear.name: layer.get_weights()},
                       f"fused {activation} split off so TFMOT sees a plain layer before the batch norm")


@register_rewrite("batchnorm-affine",
                  "BatchNormalization not right after a linear Conv2D/DepthwiseConv2D/Dense (which TFMOT "
                  "folds) → its inference-time affine map as a 1×1 DepthwiseConv2D")
def _batchnorm_affine(layer, graph: Graph) -> Optional[Replacement]:
    from tf_keras import layers

    if type(layer) is not layers.BatchNormalization or graph.shared(layer.name):
        return None
    producer = graph.single_producer(layer.name)
    if (producer is not None and type(producer).__name__ in (*BN_FOLD_PRODUCERS, "SeparableConv2D")
            and activation_name(producer) == "linear"):
        # TFMOT folds this one into the convolution (a SeparableConv2D's pointwise conv, once split).
        return None
    rank = len(layer.input_shape) if isinstance(layer.input_shape, tuple) else None
    axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) and len(layer.axis) == 1 else layer.axis
    if rank is None or rank < 2 or axis not in (-1, rank - 1):
        return None
    channels = int(layer.input_shape[-1])
    gamma = layer.gamma.numpy() if layer.scale else np.ones(channels, np.float32)
    beta = layer.beta.numpy() if layer.center else np.zeros(channels, np.float32)
    mean, variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    # Inference-time batch norm is y = γ(x − μ)/√(σ² + ε) + β = a·x + b, per channel.
    scale = (gamma / np.sqrt(variance + layer.epsilon)).astype(np.float32)
    bias = (beta - mean * scale).astype(np.float32)
    depthwise = layers.DepthwiseConv2D(1, use_bias=True, name=layer.name if rank == 4
                                       else graph.unique_name(f"{layer.name}_affine"))
    weights = {depthwise.name: [scale.reshape(1, 1, channels, 1), bias]}
    if rank == 4:
        chain = (depthwise,)
    else:
        inner = tuple(int(d) if d is not None else -1 for d in layer.input_shape[1:-1])
        flat = (1, -1, channels) if rank == 3 else (1, 1, channels)
        chain = (layers.Reshape(flat, name=graph.unique_name(f"{layer.name}_to4d")), depthwise,
                 layers.Reshape((*inner, channels) if inner.count(-1) <= 1 else (-1, channels),
                                name=graph.unique_name(f"{layer.name}_back")))
    return Replacement(chain, weights, "batch norm folded into a per-channel affine map (1×1 depthwise conv)")


# --------------------------------------------------------------------------- applying rules

def _one_pass(model, rules: Sequence[RewriteRule]) -> tuple[Any, list[AppliedRewrite]]:
    import tf_keras as keras

    graph = Graph.of(model)
    applied: list[AppliedRewrite] = []
    new_weights: dict[str, list] = {}
    new_layers: list[dict] = []
    renames: dict[str, tuple[str, set[str]]] = {}
    for entry in graph.config["layers"]:
        layer = graph.layer(entry["name"])
        replacement = None
        if not graph.shared(entry["name"]):
            for rule in rules:
                replacement = rule.fn(layer, graph)
                if replacement is not None:
                    break
        if replacement is None:
            new_layers.append(entry)
            continue
        inbound = entry["inbound_nodes"]
        for new_layer in replacement.layers:
            serialized = keras.layers.serialize(new_layer)
            serialized["name"] = new_layer.name
            serialized["inbound_nodes"] = inbound
            new_layers.append(serialized)
            inbound = [[[new_layer.name, 0, 0, {}]]]
        new_weights.update(replacement.weights)
        renames[entry["name"]] = (replacement.layers[-1].name, {l.name for l in replacement.layers})
        applied.append(AppliedRewrite(rule.name, entry["name"], tuple(l.name for l in replacement.layers),
                                      replacement.detail))
    if not applied:
        return model, []
    config = dict(graph.config, layers=new_layers)
    for old, (new, chain) in renames.items():
        if old == new:
            continue
        for entry in new_layers:
            if entry["name"] not in chain:  # the chain's own links already point where they should
                rewire(entry["inbound_nodes"], old, new)
        rewire(config["output_layers"], old, new)
    return rebuild(model, config, new_weights), applied


def rewrite_for_quantization(model, rules: Optional[Sequence[str]] = None,
                             max_passes: int = 4) -> tuple[Any, list[AppliedRewrite]]:
    """Apply the registered rewrite rules until none applies.

    Args:
        model: a functional or Sequential ``tf_keras`` model (not modified).
        rules: names of the rules to use (None = all of :data:`REWRITE_RULES`, and the
            whole-graph ``lift-1d`` pass of :mod:`edgeqd.quantization.lift`, which runs first).
        max_passes: passes over the graph at most (a rule's output may feed another rule).

    Returns:
        (rewritten model, applied rewrites); the model itself when nothing applied.

    >>> import tf_keras as keras
    >>> i = keras.Input((8, 3)); o = keras.layers.Conv1D(4, 3, name="c")(i)
    >>> [r.rule for r in rewrite_for_quantization(keras.Model(i, o))[1]]
    ['lift-1d']
    """
    from edgeqd.quantization.lift import LIFT_RULE, lift_1d

    names = [*REWRITE_RULES, LIFT_RULE] if rules is None else list(rules)
    unknown = [n for n in names if n not in REWRITE_RULES and n != LIFT_RULE]
    if unknown:
        raise QuantizationError(f"unknown rewrite rule(s) {', '.join(unknown)}; known: "
                                f"{', '.join([*REWRITE_RULES, LIFT_RULE])}")
    selected = [REWRITE_RULES[n] for n in names if n != LIFT_RULE]
    current = to_functional(model)
    applied: list[AppliedRewrite] = []
    if LIFT_RULE in names:
        # One pass over the whole 1-D trunk first; the per-layer conv1d rule is left for what it skips.
        current, lifted = lift_1d(current)
        applied += [AppliedRewrite(LIFT_RULE, layer, replaced_by, detail) for layer, replaced_by, detail in lifted]
    for _ in range(max_passes):
        current, done = _one_pass(current, selected)
        if not done:
            break
        applied.extend(done)
    return current, applied


def check_equivalent(original, rewritten, samples: np.ndarray,
                     tolerance: float = REWRITE_TOLERANCE) -> float:
    """Raise :class:`QuantizationError` unless both models' outputs agree on ``samples``.

    The bound is max |rewritten − original| ≤ ``tolerance`` × (1 + max |original|).

    Args:
        original: the user's float model.
        rewritten: its rewritten twin.
        samples: real inputs, float32 (N, ...).
        tolerance: relative bound (see :data:`REWRITE_TOLERANCE`).

    Returns:
        The largest absolute difference.

    >>> import numpy as np, tf_keras as keras
    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> check_equivalent(m, m, np.ones((1, 2), "float32"))
    0.0
    """
    expected = np.asarray(original(samples, training=False), dtype=np.float64)
    got = np.asarray(rewritten(samples, training=False), dtype=np.float64)
    if expected.shape != got.shape:
        raise QuantizationError(f"the rewritten model outputs shape {got.shape[1:]} but the original "
                                f"{expected.shape[1:]}: a rewrite rule is wrong; please report it")
    diff = float(np.abs(got - expected).max())
    bound = tolerance * (1.0 + float(np.abs(expected).max()))
    if not diff <= bound:
        raise QuantizationError(f"the rewritten model differs from the original by up to {diff:.3g} on "
                                f"{len(samples)} samples (allowed {bound:.3g}): a rewrite rule is wrong; "
                                "please report it")
    return diff
