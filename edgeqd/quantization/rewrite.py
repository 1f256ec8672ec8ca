"""Make any real Keras model quantization-aware: rewrite what TFMOT rejects, leave the rest float.

TensorFlow Model Optimization's ``quantize_model`` raises on many layers and
patterns that real models contain (``Conv2D(activation=…)`` before a batch norm,
``Conv1D``, a batch norm that follows no convolution, ``LayerNormalization``,
custom layers, …) or silently builds a broken graph (``TFOpLambda`` layers such as
``x * 2.0``). :func:`prepare_qat` turns a float model into a QAT model in three steps:

1. **Rewrite** known patterns into equivalents TFMOT can quantize, using the rules
   registered in :data:`REWRITE_RULES` (keyed by name). Each rule replaces one layer
   by a short chain of layers computing the same function, with weights carried over.
2. **Check** that the rewritten float model computes what the original computes on
   real samples: max |Δ| ≤ :data:`REWRITE_TOLERANCE` × (1 + max |y|). Only float32
   summation order differs, so a larger difference means a rewrite is wrong and
   nothing goes on.
3. **Annotate** every layer TFMOT's 8-bit registry supports (plus batch norms it
   folds into the preceding convolution) and apply quantization; the other layers
   stay float and are listed. A TFMOT error naming a layer moves that layer to the
   float list and quantization is retried; any other TFMOT failure becomes a
   :class:`~edgeqd.errors.QuantizationError` — the user never sees a bare TFMOT error.

>>> sorted(REWRITE_RULES)
['batchnorm-affine', 'conv1d', 'fused-activation', 'separable-conv2d']
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgeqd.errors import ModelError, QuantizationError

# Rewrites only change float32 summation order (a 1×k Conv2D instead of a Conv1D, a
# folded batch-norm scale instead of (x − μ)/σ·γ + β), which moves outputs by a few
# ulps per accumulation; 1e-4 relative to the output's magnitude is ~100× that for
# models of a few million multiply-adds, and far below any real rewrite mistake.
REWRITE_TOLERANCE = 1e-4
# Samples used for the equivalence check: enough to exercise every channel's
# batch-norm fold, few enough to cost well under a second for small models.
CHECK_SAMPLES = 64
# How many times a layer named in a TFMOT error is moved to the float list before giving up.
MAX_QUANTIZE_RETRIES = 8
# Layers TFMOT folds a following BatchNormalization into (default_8bit_transforms).
_BN_FOLD_PRODUCERS = ("Conv2D", "DepthwiseConv2D", "Dense")


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


# --------------------------------------------------------------------------- graph helpers

def _is_ref(item: Any) -> bool:
    """A reference to a layer output in a functional config: [name, node_index, tensor_index, ...]."""
    return (isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str)
            and isinstance(item[1], int) and isinstance(item[2], int))


def _refs(structure: Any) -> list[list]:
    """Every layer-output reference inside an ``inbound_nodes`` structure (kwargs included)."""
    found: list[list] = []
    if _is_ref(structure):
        found.append(structure)
        structure = structure[3:]
    if isinstance(structure, list):
        for item in structure:
            found.extend(_refs(item))
    elif isinstance(structure, dict):
        for item in structure.values():
            found.extend(_refs(item))
    return found


@dataclass
class Graph:
    """A functional model's config with producer/consumer look-ups, for rules to inspect.

    Attributes:
        model: the functional model.
        config: its ``get_config()``.
        entries: layer config entries by name.
        producers: names of the layers feeding each layer.
        consumers: names of the layers each layer feeds.
    """

    model: Any
    config: dict
    entries: dict[str, dict]
    producers: dict[str, list[str]]
    consumers: dict[str, list[str]]
    taken: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, model) -> "Graph":
        """Read ``model``'s graph.

        Args:
            model: a functional ``tf_keras`` model.
        """
        config = model.get_config()
        entries = {entry["name"]: entry for entry in config["layers"]}
        producers = {name: list(dict.fromkeys(r[0] for r in _refs(entry["inbound_nodes"])))
                     for name, entry in entries.items()}
        consumers: dict[str, list[str]] = {name: [] for name in entries}
        for name, sources in producers.items():
            for source in sources:
                consumers.setdefault(source, []).append(name)
        return cls(model, config, entries, producers, consumers)

    def layer(self, name: str):
        """The layer object called ``name``."""
        return self.model.get_layer(name)

    def single_producer(self, name: str):
        """The one layer feeding ``name``, or None when it has zero or several inputs."""
        sources = self.producers.get(name, [])
        return self.layer(sources[0]) if len(sources) == 1 else None

    def shared(self, name: str) -> bool:
        """Whether layer ``name`` is called more than once (a shared layer)."""
        return len(self.entries[name]["inbound_nodes"]) > 1

    def unique_name(self, base: str) -> str:
        """``base``, or ``base_2``, ``base_3``, … whichever no layer uses yet."""
        name, i = base, 1
        while name in self.entries or name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    import tf_keras as keras

    name = keras.activations.serialize(activation)
    return name if isinstance(name, str) else str(getattr(activation, "__name__", name))


def _channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


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

    if type(layer) is not layers.SeparableConv2D or not _channels_last(layer):
        return None
    depthwise = layers.DepthwiseConv2D(
        layer.kernel_size, strides=layer.strides, padding=layer.padding,
        depth_multiplier=layer.depth_multiplier, dilation_rate=layer.dilation_rate, use_bias=False,
        name=graph.unique_name(f"{layer.name}_depthwise"))
    # The pointwise conv keeps the layer's name: its output is the original layer's output.
    pointwise = layers.Conv2D(layer.filters, 1, use_bias=layer.use_bias, activation=_activation_name(layer),
                              name=layer.name)
    weights = layer.get_weights()
    new_weights = {depthwise.name: [weights[0]], pointwise.name: weights[1:]}
    return Replacement((depthwise, pointwise), new_weights,
                       "SeparableConv2D split into DepthwiseConv2D and a 1×1 Conv2D")


@register_rewrite("conv1d", "Conv1D → Reshape(1, T, C) + Conv2D with a 1×k kernel + Reshape(T', F)")
def _conv1d(layer, graph: Graph) -> Optional[Replacement]:
    from tf_keras import layers

    if type(layer) is not layers.Conv1D or not _channels_last(layer):
        return None
    channels = int(layer.input_spec.axes[-1]) if layer.input_spec and layer.input_spec.axes else \
        int(layer.kernel.shape[1]) * layer.groups
    kernel = int(layer.kernel_size[0])
    dilation = int(layer.dilation_rate[0])
    chain = [layers.Reshape((1, -1, channels), name=graph.unique_name(f"{layer.name}_to2d"))]
    padding = layer.padding
    if padding == "causal":
        # Causal = left-pad by dilation·(k − 1), then a valid convolution.
        chain.append(layers.ZeroPadding2D(((0, 0), (dilation * (kernel - 1), 0)),
                                          name=graph.unique_name(f"{layer.name}_causal_pad")))
        padding = "valid"
    conv = layers.Conv2D(layer.filters, (1, kernel), strides=(1, int(layer.strides[0])), padding=padding,
                         dilation_rate=(1, dilation), groups=layer.groups, use_bias=layer.use_bias,
                         activation=_activation_name(layer), name=layer.name)
    chain.append(conv)
    chain.append(layers.Reshape((-1, layer.filters), name=graph.unique_name(f"{layer.name}_to1d")))
    weights = layer.get_weights()
    new_weights = {conv.name: [weights[0][None, ...], *weights[1:]]}
    return Replacement(tuple(chain), new_weights, "Conv1D computed as a Conv2D with a 1×k kernel on a height-1 map")


@register_rewrite("fused-activation",
                  "Conv2D/DepthwiseConv2D/Dense(activation=…) feeding a BatchNormalization → the layer "
                  "without activation + an Activation layer")
def _fused_activation(layer, graph: Graph) -> Optional[Replacement]:
    from tf_keras import layers

    if type(layer) not in (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense, layers.Conv2DTranspose):
        return None
    activation = _activation_name(layer)
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
    if (producer is not None and type(producer).__name__ in (*_BN_FOLD_PRODUCERS, "SeparableConv2D")
            and _activation_name(producer) == "linear"):
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

def to_functional(model):
    """``model`` as a functional model (Sequential models are re-wired; subclassed ones are refused).

    Args:
        model: a ``tf_keras`` model.

    >>> import tf_keras as keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> type(to_functional(m)).__name__
    'Functional'
    """
    import tf_keras as keras

    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ModelError(f"{model.name} is a Sequential model without a known input shape; "
                             "build it (model.build(input_shape)) or give it an Input layer")
        # TFMOT mishandles Sequential models (tensorflow/model-optimization#378); a functional view shares the layers.
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not getattr(model, "_is_graph_network", False):
        raise QuantizationError(f"{model.name} is a subclassed Keras model: it has no layer graph to quantize; "
                                "rebuild it with the functional API")
    return model


def _rebuild(model, config: dict, new_weights: dict[str, list]):
    """A model from ``config``; weights by layer name from ``new_weights``, else from ``model``."""
    import tf_keras as keras

    custom = {type(layer).__name__: type(layer) for layer in model.layers}
    try:
        rebuilt = keras.Model.from_config(config, custom_objects=custom)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise QuantizationError(f"could not rebuild {model.name} after rewriting it: {first[:300]}") from None
    originals = {layer.name: layer for layer in model.layers}
    for layer in rebuilt.layers:
        if layer.name in new_weights:
            layer.set_weights(new_weights[layer.name])
        elif layer.name in originals and originals[layer.name].weights:
            layer.set_weights(originals[layer.name].get_weights())
    return rebuilt


def _rewire(structure: Any, old: str, new: str) -> None:
    """Point every reference to layer ``old``'s output at layer ``new``'s (in place)."""
    for ref in _refs(structure):
        if ref[0] == old:
            ref[0] = new


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
                _rewire(entry["inbound_nodes"], old, new)
        _rewire(config["output_layers"], old, new)
    return _rebuild(model, config, new_weights), applied


def rewrite_for_quantization(model, rules: Optional[Sequence[str]] = None,
                             max_passes: int = 4) -> tuple[Any, list[AppliedRewrite]]:
    """Apply the registered rewrite rules until none applies.

    Args:
        model: a functional or Sequential ``tf_keras`` model (not modified).
        rules: names of the rules to use (None = all of :data:`REWRITE_RULES`).
        max_passes: passes over the graph at most (a rule's output may feed another rule).

    Returns:
        (rewritten model, applied rewrites); the model itself when nothing applied.

    >>> import tf_keras as keras
    >>> i = keras.Input((8, 3)); o = keras.layers.Conv1D(4, 3, name="c")(i)
    >>> [r.rule for r in rewrite_for_quantization(keras.Model(i, o))[1]]
    ['conv1d']
    """
    names = list(REWRITE_RULES) if rules is None else list(rules)
    unknown = [n for n in names if n not in REWRITE_RULES]
    if unknown:
        raise QuantizationError(f"unknown rewrite rule(s) {', '.join(unknown)}; known: {', '.join(REWRITE_RULES)}")
    selected = [REWRITE_RULES[n] for n in names]
    current = to_functional(model)
    applied: list[AppliedRewrite] = []
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


# --------------------------------------------------------------------------- annotation and QAT

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
        if producer is not None and type(producer).__name__ in _BN_FOLD_PRODUCERS:
            return None
        return "batch norm with no convolution before it to fold into and no rewrite that fits"
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
        return tfmot.quantization.keras.quantize_apply(annotated_model, scheme)


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
    import tensorflow_model_optimization as tfmot
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
            return tfmot.quantization.keras.quantize_annotate_layer(layer)

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
    (['conv1d'], [])
    """
    if not model.trainable_weights:
        raise ModelError(f"{model.name} has no trainable weights: there is nothing for quantization-aware "
                         "training to fine-tune (use --mode ptq)")
    rewritten, applied = rewrite_for_quantization(model)
    check = np.asarray(samples[:CHECK_SAMPLES], dtype=np.float32)
    diff = check_equivalent(model, rewritten, check, tolerance) if applied else 0.0
    qat_model, float_layers = make_qat(rewritten, per_channel=per_channel, strict=strict)
    return PreparedModel(rewritten, qat_model, applied, float_layers, diff, tolerance, len(check), per_channel)
