"""Lift a model's 1-D convolution trunk to height-1 2-D layers in one pass over the graph.

TFMOT has no Conv1D. Rewriting each Conv1D alone as Reshape → Conv2D(1×k) → Reshape (the
``conv1d`` rule) leaves every following batch norm after a Reshape instead of a conv, so
TFMOT cannot fold it (it becomes a 1×1 depthwise conv of its own), the ReLU after it
cannot fuse into the conv, and every Keras Reshape carries dynamic-shape plumbing
(SHAPE, STRIDED_SLICE, PACK, RESHAPE) into the TFLite model: 68 ops where PTQ has 20 on
edgeqd's own ``conv1d`` student. :func:`lift_1d` instead keeps each rank-3 tensor as
(N, 1, T, C) for as long as its consumers have 2-D twins — Conv1D (causal ones with a
left ZeroPadding2D), BatchNormalization, activations, Dropout, pooling, ZeroPadding1D,
Add/Multiply/… and channel Concatenate — with one static Reshape where a 1-D region starts
and one where it ends. TFMOT then sees Conv2D → BN → ReLU, folds it, and the converter
fuses the ReLU: 9 ops.

The pass edits the functional config (as the rewrite rules do) and rebuilds the model
with the weights carried over (a Conv1D kernel (k, C, F) becomes (1, k, C, F)).

>>> import tf_keras as keras
>>> i = keras.Input((16, 3)); x = keras.layers.Conv1D(4, 3, name="c")(i)
>>> x = keras.layers.BatchNormalization(name="bn")(x); o = keras.layers.GlobalAveragePooling1D(name="gap")(x)
>>> lifted, done = lift_1d(keras.Model(i, o))
>>> [type(lifted.get_layer(n)).__name__ for n in ("c", "gap")], [d[0] for d in done]
(['Conv2D', 'GlobalAveragePooling2D'], ['c'])
"""

from __future__ import annotations

from typing import Any, Optional

from edgeqd.quantization.graph import Graph, channels_last, conv1d_as_conv2d, rebuild, refs

__all__ = ["lift_1d", "LIFT_RULE"]

LIFT_RULE = "lift-1d"
# Layers that compute the same thing per position on (N, 1, T, C) as on (N, T, C).
_ELEMENTWISE = ("ReLU", "Activation", "LeakyReLU", "ELU", "ThresholdedReLU", "Dropout")
_MERGES = ("Add", "Multiply", "Subtract", "Average", "Maximum", "Minimum")


def _static(dims) -> tuple:
    """A Reshape target from a Keras shape without its batch dimension (unknown sizes → -1)."""
    return tuple(-1 if d is None else int(d) for d in dims)


def _serialized(layer, inbound: list) -> dict:
    import tf_keras as keras

    entry = keras.layers.serialize(layer)
    entry["name"] = layer.name
    entry["inbound_nodes"] = inbound
    return entry


def _conv1d_liftable(layer) -> bool:
    from tf_keras import layers

    return type(layer) is layers.Conv1D and channels_last(layer)


def _shape(layer) -> Optional[tuple]:
    """The layer's one output shape (an InputLayer's comes as a one-element list), or None."""
    shape = getattr(layer, "output_shape", None)
    if isinstance(shape, list):
        shape = shape[0] if len(shape) == 1 else None
    return shape if isinstance(shape, tuple) else None


def _rank3(layer) -> bool:
    shape = _shape(layer)
    return shape is not None and len(shape) == 3


def _twin(layer, graph: Graph) -> Optional[tuple[list, dict, str]]:
    """The 2-D twin of ``layer`` on lifted inputs: (new layers in order, new weights, "lifted"/"ends"), or None."""
    from tf_keras import layers

    kind = type(layer).__name__
    config = layer.get_config()
    if kind == "Conv1D" and _conv1d_liftable(layer):
        return (*conv1d_as_conv2d(layer, graph), "lifted")
    if kind == "BatchNormalization" and config.get("axis") in (-1, 2, [-1], [2]):
        return [type(layer).from_config({**config, "axis": -1})], {}, "lifted"
    if kind in _ELEMENTWISE and not config.get("noise_shape"):
        return [type(layer).from_config(config)], {}, "lifted"
    if kind in ("MaxPooling1D", "AveragePooling1D") and channels_last(layer):
        twin = layers.MaxPooling2D if kind == "MaxPooling1D" else layers.AveragePooling2D
        return [twin((1, int(layer.pool_size[0])), strides=(1, int(layer.strides[0])), padding=layer.padding,
                     name=layer.name)], {}, "lifted"
    if kind in ("GlobalAveragePooling1D", "GlobalMaxPooling1D") and channels_last(layer) \
            and not config.get("keepdims"):
        twin = layers.GlobalAveragePooling2D if kind == "GlobalAveragePooling1D" else layers.GlobalMaxPooling2D
        return [twin(name=layer.name)], {}, "ends"
    if kind == "Flatten":  # (N, 1, T, C) flattens in the same order as (N, T, C)
        return [type(layer).from_config(config)], {}, "ends"
    if kind == "ZeroPadding1D":
        left, right = (int(p) for p in layer.padding)
        return [layers.ZeroPadding2D(((0, 0), (left, right)), name=layer.name)], {}, "lifted"
    if kind in _MERGES or (kind == "Concatenate" and config.get("axis") in (-1, 2)):
        if kind == "Concatenate":
            config = {**config, "axis": -1}
        return [type(layer).from_config(config)], {}, "lifted"
    return None


def _applies(graph: Graph) -> bool:
    """Whether lifting is possible and useful: a liftable Conv1D, no shared layers, single outputs."""
    layers_ = [graph.layer(name) for name in graph.entries]
    if not any(_conv1d_liftable(layer) for layer in layers_):
        return False
    return not any(graph.shared(name) for name in graph.entries) and all(
        _shape(layer) is not None for layer in layers_)


def lift_1d(model) -> tuple[Any, list[tuple[str, tuple[str, ...], str]]]:
    """A twin of ``model`` whose 1-D conv trunk runs as height-1 2-D layers (weights copied).

    Args:
        model: a functional ``tf_keras`` model (not modified).

    Returns:
        (the lifted model, one (Conv1D name, names replacing it, detail) per lifted Conv1D);
        the model itself and [] when there is nothing to lift (or shared layers make the
        pass unsafe: the per-layer ``conv1d`` rule handles those).
    """
    graph = Graph.of(model)
    if not _applies(graph):
        return model, []
    lifted: set[str] = set()  # layers whose output is the (N, 1, T, C) form of a rank-3 tensor
    to1d: dict[str, str] = {}  # lifted layer → its Reshape back to rank 3 (made on first need)
    to2d: dict[str, str] = {}  # rank-3 layer → its Reshape to (N, 1, T, C)
    new_layers: list[dict] = []
    new_weights: dict[str, list] = {}
    done: list[tuple[str, tuple[str, ...], str]] = []

    def reshape(source: str, target: tuple, suffix: str, memo: dict) -> str:
        from tf_keras import layers

        if source not in memo:
            layer = layers.Reshape(target, name=graph.unique_name(f"{source}_{suffix}"))
            new_layers.append(_serialized(layer, [[[source, 0, 0, {}]]]))
            memo[source] = layer.name
        return memo[source]

    for entry in graph.config["layers"]:
        name = entry["name"]
        layer = graph.layer(name)
        sources = graph.producers[name]
        twin = None
        if sources and (_conv1d_liftable(layer) or any(s in lifted for s in sources)):
            if all(s in lifted or _rank3(graph.layer(s)) for s in sources):
                twin = _twin(layer, graph)
        if twin is None:  # this layer sees rank-3 tensors again
            for ref in refs(entry["inbound_nodes"]):
                if ref[0] in lifted:
                    ref[0] = reshape(ref[0], _static(_shape(graph.layer(ref[0]))[1:]), "to1d", to1d)
            new_layers.append(entry)
            continue
        chain, weights, state = twin
        for ref in refs(entry["inbound_nodes"]):
            if ref[0] not in lifted:
                ref[0] = reshape(ref[0], (1, *_static(_shape(graph.layer(ref[0]))[1:])), "to2d", to2d)
        inbound = entry["inbound_nodes"]
        for new in chain:
            new_layers.append(_serialized(new, inbound))
            inbound = [[[new.name, 0, 0, {}]]]
        new_weights.update(weights)
        if state == "lifted":
            lifted.add(name)
        if type(layer).__name__ == "Conv1D":
            done.append((name, tuple(n.name for n in chain), "Conv1D computed as a 1×k Conv2D on a height-1 map; "
                         "the 1-D trunk around it stays 2-D (static reshapes only where it starts and ends)"))
    config = dict(graph.config, layers=new_layers)
    for ref in refs(config["output_layers"]):
        if ref[0] in lifted:
            ref[0] = reshape(ref[0], _static(_shape(graph.layer(ref[0]))[1:]), "to1d", to1d)
            config["layers"] = new_layers
    return rebuild(model, config, new_weights), done
