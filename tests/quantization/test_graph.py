"""edgeqd.quantization.graph: reading, rewiring and rebuilding a functional model's config."""

from __future__ import annotations

import edgeqd  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np
import pytest

from edgeqd.errors import ModelError, QuantizationError
from edgeqd.quantization.graph import Graph, rebuild, refs, rewire, to_functional


def _residual_model():
    """input → conv_a → add ← conv_b (shared, called twice) — branches, a join and a shared layer."""
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 2), name="image")
    shared = layers.Conv2D(2, 1, name="shared")
    a = layers.Conv2D(2, 3, padding="same", name="conv_a")(inputs)
    b = shared(shared(inputs))
    joined = layers.Add(name="add")([a, b])
    return keras.Model(inputs, layers.Flatten(name="flat")(joined), name="residual")


def test_graph_reads_producers_consumers_and_shared_layers():
    graph = Graph.of(_residual_model())
    assert graph.producers["add"] == ["conv_a", "shared"]
    assert sorted(graph.consumers["image"]) == ["conv_a", "shared"]
    assert graph.shared("shared") and not graph.shared("conv_a")
    assert graph.single_producer("flat").name == "add"
    assert graph.single_producer("add") is None  # two inputs
    # unique_name never hands out a layer's name, nor the same new name twice.
    assert graph.unique_name("conv_a") == "conv_a_2"
    assert graph.unique_name("conv_a") == "conv_a_3"


def test_rewire_moves_only_the_references_to_the_old_layer():
    config = _residual_model().get_config()
    add = next(entry for entry in config["layers"] if entry["name"] == "add")
    rewire(add["inbound_nodes"], "conv_a", "conv_a_relu")
    assert [ref[0] for ref in refs(add["inbound_nodes"])] == ["conv_a_relu", "shared"]


def test_rebuild_keeps_the_weights_and_the_function():
    model = _residual_model()
    copy = rebuild(model, model.get_config(), {})
    x = np.random.default_rng(0).random((4, 8, 8, 2)).astype("float32")
    np.testing.assert_array_equal(copy(x, training=False), model(x, training=False))


def test_rebuild_of_a_broken_config_is_a_typed_error_naming_the_model():
    model = _residual_model()
    config = model.get_config()
    rewire(config["output_layers"], "flat", "no_such_layer")
    with pytest.raises(QuantizationError, match="could not rebuild residual after rewriting it"):
        rebuild(model, config, {})


def test_to_functional_refuses_what_has_no_graph():
    import tf_keras as keras

    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ModelError, match="without a known input shape"):
        to_functional(unbuilt)

    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(QuantizationError, match="subclassed"):
        to_functional(Net())
