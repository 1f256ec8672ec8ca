"""A functional Keras model's layer graph, as its config: read it, rewire it, rebuild a model from it.

The rewrite rules (:mod:`edgeqd.quantization.rewrite`) inspect a model through :class:`Graph`
and the rewriter edits the config's ``inbound_nodes`` with :func:`refs`/:func:`rewire`, then
:func:`rebuild` makes a model of the edited config with the original weights carried over.

>>> config = {"inbound_nodes": [[["conv", 0, 0, {}], ["skip", 0, 0, {}]]]}
>>> [ref[0] for ref in refs(config["inbound_nodes"])]
['conv', 'skip']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeqd.errors import ModelError, QuantizationError

__all__ = ["Graph", "refs", "rewire", "to_functional", "rebuild", "activation_name", "channels_last",
           "restore_layer_state"]


def _is_ref(item: Any) -> bool:
    """A reference to a layer output in a functional config: [name, node_index, tensor_index, ...]."""
    return (isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str)
            and isinstance(item[1], int) and isinstance(item[2], int))


def refs(structure: Any) -> list[list]:
    """Every layer-output reference inside an ``inbound_nodes`` structure (kwargs included).

    Args:
        structure: a layer entry's ``inbound_nodes`` (or any part of it, or ``output_layers``).

    Returns:
        The references themselves (lists, not copies), so that editing them edits the config.

    >>> refs([[["dense", 0, 0, {"mask": ["masking", 0, 0]}]]])
    [['dense', 0, 0, {'mask': ['masking', 0, 0]}], ['masking', 0, 0]]
    """
    found: list[list] = []
    if _is_ref(structure):
        found.append(structure)
        structure = structure[3:]
    if isinstance(structure, list):
        for item in structure:
            found.extend(refs(item))
    elif isinstance(structure, dict):
        for item in structure.values():
            found.extend(refs(item))
    return found


def rewire(structure: Any, old: str, new: str) -> None:
    """Point every reference to layer ``old``'s output at layer ``new``'s (in place).

    Args:
        structure: an ``inbound_nodes`` structure or ``output_layers``.
        old: the name of the layer whose output is replaced.
        new: the name of the layer whose output takes its place.

    >>> nodes = [[["conv", 0, 0, {}]]]
    >>> rewire(nodes, "conv", "conv_relu"); nodes
    [[['conv_relu', 0, 0, {}]]]
    """
    for ref in refs(structure):
        if ref[0] == old:
            ref[0] = new


@dataclass
class Graph:
    """A functional model's config with producer/consumer look-ups, for rules to inspect.

    Attributes:
        model: the functional model.
        config: its ``get_config()``.
        entries: layer config entries by name.
        producers: names of the layers feeding each layer.
        consumers: names of the layers each layer feeds.
        taken: names handed out by :meth:`unique_name` that no layer has yet.
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

        >>> import tf_keras as keras
        >>> i = keras.Input((3,), name="x"); o = keras.layers.Dense(2, name="d")(i)
        >>> Graph.of(keras.Model(i, o)).consumers["x"]
        ['d']
        """
        config = model.get_config()
        entries = {entry["name"]: entry for entry in config["layers"]}
        producers = {name: list(dict.fromkeys(r[0] for r in refs(entry["inbound_nodes"])))
                     for name, entry in entries.items()}
        consumers: dict[str, list[str]] = {name: [] for name in entries}
        for name, sources in producers.items():
            for source in sources:
                consumers.setdefault(source, []).append(name)
        return cls(model, config, entries, producers, consumers)

    def layer(self, name: str):
        """The layer object called ``name``.

        Args:
            name: the layer's name.
        """
        return self.model.get_layer(name)

    def single_producer(self, name: str):
        """The one layer feeding ``name``, or None when it has zero or several inputs.

        Args:
            name: the consuming layer's name.
        """
        sources = self.producers.get(name, [])
        return self.layer(sources[0]) if len(sources) == 1 else None

    def shared(self, name: str) -> bool:
        """Whether layer ``name`` is called more than once (a shared layer).

        Args:
            name: the layer's name.
        """
        return len(self.entries[name]["inbound_nodes"]) > 1

    def unique_name(self, base: str) -> str:
        """``base``, or ``base_2``, ``base_3``, … whichever no layer uses yet.

        Args:
            base: the name wanted.
        """
        name, i = base, 1
        while name in self.entries or name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name


def conv1d_as_conv2d(layer, graph: "Graph") -> tuple[list, dict[str, list]]:
    """A Conv1D's 2-D twin on a height-1 map: [causal padding,] a Conv2D with a 1×k kernel, and its weights.

    The Conv2D keeps the layer's name (its output is the original layer's output); causal padding
    becomes a left ZeroPadding2D of dilation·(k − 1) before a valid convolution.

    Args:
        layer: a channels-last ``tf_keras`` Conv1D.
        graph: the graph the new layers join (for unique names).
    """
    from tf_keras import layers

    kernel, dilation = int(layer.kernel_size[0]), int(layer.dilation_rate[0])
    chain, padding = [], layer.padding
    if padding == "causal":
        chain.append(layers.ZeroPadding2D(((0, 0), (dilation * (kernel - 1), 0)),
                                          name=graph.unique_name(f"{layer.name}_causal_pad")))
        padding = "valid"
    conv = layers.Conv2D(layer.filters, (1, kernel), strides=(1, int(layer.strides[0])), padding=padding,
                         dilation_rate=(1, dilation), groups=layer.groups, use_bias=layer.use_bias,
                         activation=activation_name(layer), name=layer.name)
    weights = layer.get_weights()
    return [*chain, conv], {conv.name: [weights[0][None, ...], *weights[1:]]}


def activation_name(layer) -> str:
    """The name of ``layer``'s activation ("linear" when it has none).

    Args:
        layer: a ``tf_keras`` layer.

    >>> import tf_keras as keras
    >>> activation_name(keras.layers.Dense(2, activation="relu")), activation_name(keras.layers.Flatten())
    ('relu', 'linear')
    """
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    import tf_keras as keras

    name = keras.activations.serialize(activation)
    return name if isinstance(name, str) else str(getattr(activation, "__name__", name))


def channels_last(layer) -> bool:
    """Whether ``layer`` works on channels-last tensors (layers without ``data_format`` do).

    Args:
        layer: a ``tf_keras`` layer.

    >>> import tf_keras as keras
    >>> channels_last(keras.layers.Conv2D(2, 3, data_format="channels_first"))
    False
    """
    return getattr(layer, "data_format", "channels_last") == "channels_last"


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


def rebuild(model, config: dict, new_weights: dict[str, list]):
    """A model from ``config``; weights by layer name from ``new_weights``, else from ``model``.

    Args:
        model: the model ``config`` was edited from (its layers' classes and weights are reused).
        config: the edited functional config.
        new_weights: weights of the new or changed layers, by layer name.

    >>> import numpy as np, tf_keras as keras
    >>> i = keras.Input((2,)); m = keras.Model(i, keras.layers.Dense(1, name="d")(i))
    >>> copy = rebuild(m, m.get_config(), {})
    >>> bool(np.array_equal(copy.get_layer("d").get_weights()[0], m.get_layer("d").get_weights()[0]))
    True
    """
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
    restore_layer_state(rebuilt)
    return rebuilt


def restore_layer_state(model) -> int:
    """Re-derive the state layers cache from their weights (``finalize_state``), in place.

    A ``Normalization`` layer computes its ``mean``/``variance`` tensors from its adapted
    weights in ``finalize_state()``, which ``set_weights`` calls — but TFMOT's
    ``quantize_apply`` restores weights with ``K.batch_set_value``, which does not: the
    quantization-aware model then normalizes with mean 0 and variance 1 (every artifact
    at chance, marked ok). Call this after any rebuild; it is cheap and idempotent, and
    must run before the model is first traced (``predict``, the converter).

    Args:
        model: a ``tf_keras`` model (layers inside TFMOT's wrappers are reached too).

    Returns:
        How many layers were finalized.

    >>> import numpy as np, tf_keras as keras
    >>> norm = keras.layers.Normalization(); norm.adapt(np.array([[1.0], [3.0]]))
    >>> restore_layer_state(keras.Sequential([keras.Input((1,)), norm]))
    1
    """
    import tf_keras as keras

    count = 0
    for layer in model.submodules:
        if isinstance(layer, keras.layers.Layer) and not isinstance(layer, keras.Model) and \
                type(layer).finalize_state is not keras.layers.Layer.finalize_state and layer.built:
            layer.finalize_state()
            count += 1
    return count
