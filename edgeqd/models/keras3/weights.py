"""Copying weights layer by layer, and proving a translation by comparing outputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import ModelError, all_layers


# (layer class, Keras 3 variable path below the layer) -> tf_keras path, where the two differ
_K3_TO_TF_VARIABLE = {("DepthwiseConv2D", "kernel"): "depthwise_kernel"}


def _relative_names(layer, variables, k3: bool) -> list[str]:
    names = []
    for var in variables:
        full = var.path if k3 else var.name.rsplit(":", 1)[0]
        parts = full.split("/")
        if layer.name in parts:
            parts = parts[len(parts) - 1 - parts[::-1].index(layer.name) + 1:]
        name = "/".join(parts)
        if k3:
            name = _K3_TO_TF_VARIABLE.get((layer.__class__.__name__, name), name)
        names.append(name)
    return names


def _pairs(src_layer, dst_layer, src_k3: bool) -> list[tuple[Any, Any]]:
    """(source variable, destination variable) pairs for one layer, or ValueError."""
    src_vars = list(src_layer.weights)
    dst_vars = list(dst_layer.weights)
    src_names = _relative_names(src_layer, src_vars, src_k3)
    dst_names = _relative_names(dst_layer, dst_vars, not src_k3)
    if len(src_vars) != len(dst_vars):
        raise ValueError(f"{len(src_vars)} variables {src_names} vs {len(dst_vars)} {dst_names}")
    by_name = dict(zip(src_names, src_vars))
    if set(by_name) == set(dst_names) and len(by_name) == len(dst_names):
        pairs = [(by_name[n], v) for n, v in zip(dst_names, dst_vars)]
    else:
        last = [n.split("/")[-1] for n in src_names]
        dst_last = [n.split("/")[-1] for n in dst_names]
        if last != dst_last:  # neither the paths nor the order line up: refuse rather than guess
            raise ValueError(f"variables do not line up: {src_names} vs {dst_names}")
        pairs = list(zip(src_vars, dst_vars))
    for (s, d), name in zip(pairs, dst_names):
        if tuple(s.shape) != tuple(d.shape):
            raise ValueError(f"variable {name}: shape {tuple(s.shape)} vs {tuple(d.shape)}")
    return pairs


def copy_weights(src_model, dst_model, src_k3: bool) -> list[str]:
    """Copy every layer's variables from ``src_model`` to ``dst_model`` (layers matched by name).

    Variables are matched by their path below the layer (``lstm_cell/kernel``), else by order when
    the last path components agree; shapes are always checked. Normalization layers are finalized
    afterwards: both Kerases compute with tensors derived from the variables in ``finalize_state()``,
    and without it the layer keeps its freshly built mean 0 / variance 1 (0.225 off, measured).

    Args:
        src_model: the model the weights come from.
        dst_model: its twin in the other Keras.
        src_k3: whether ``src_model`` is the Keras 3 one.

    Returns:
        Names of layers that could not be matched (empty when all went over).
    """
    failed = []
    dst_layers = {layer.name: layer for layer in dst_model.layers}
    for src_layer in src_model.layers:
        dst_layer = dst_layers.get(src_layer.name)
        if dst_layer is None:
            if src_layer.weights:
                failed.append(f"{src_layer.name}: missing in the translated model")
            continue
        if hasattr(src_layer, "layers") and hasattr(dst_layer, "layers") and src_layer.__class__.__name__ in (
                "Functional", "Sequential"):
            failed += copy_weights(src_layer, dst_layer, src_k3)
            continue
        try:
            pairs = _pairs(src_layer, dst_layer, src_k3)
        except ValueError as exc:
            failed.append(f"{src_layer.name} ({src_layer.__class__.__name__}): {exc}")
            continue
        for src_var, dst_var in pairs:
            dst_var.assign(np.asarray(src_var.numpy() if hasattr(src_var, "numpy") else src_var))
        if hasattr(dst_layer, "finalize_state") and dst_layer.__class__.__name__ == "Normalization":
            dst_layer.finalize_state()  # mean/variance tensors are derived from the variables
    return failed


def sample_inputs(model, n: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Deterministic inputs for a parity check when no real data is at hand.

    Integers below the smallest Embedding vocabulary, floats in [0, 255] when the model starts by
    rescaling pixels, else in [-1, 1]; free dimensions are 16.

    Args:
        model: a Keras 3 or tf_keras model.
        n: samples per input.
        seed: seed of the draw.

    Returns:
        One array per model input.
    """
    rng = np.random.default_rng(seed)
    inputs = []
    vocab = min([layer.input_dim for layer in all_layers(model) if hasattr(layer, "input_dim")
                 and isinstance(getattr(layer, "input_dim", None), int)] or [10])
    pixels = any(layer.__class__.__name__ == "Rescaling" and np.all(np.abs(np.asarray(layer.scale)) < 0.05)
                 for layer in all_layers(model)[:4])
    for tensor in model.inputs:
        shape = [n] + [d if d is not None else 16 for d in tuple(tensor.shape)[1:]]
        dtype = str(getattr(tensor.dtype, "name", tensor.dtype))
        if "int" in dtype:
            inputs.append(rng.integers(0, vocab, size=shape).astype(dtype))
        elif pixels:
            inputs.append(rng.uniform(0, 255, size=shape).astype("float32"))
        else:
            inputs.append(rng.uniform(-1, 1, size=shape).astype("float32"))
    return inputs


PREDICT_BATCH = 32  # samples per call: bounds memory on real data sets


def _predict(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The model's outputs (a list, one array per output) on ``inputs``, called in eager batches."""
    chunks = []
    for start in range(0, len(inputs[0]), PREDICT_BATCH):
        part = [x[start:start + PREDICT_BATCH] for x in inputs]
        y = model(part[0] if len(part) == 1 else part, training=False)
        chunks.append([np.asarray(t) for t in (y if isinstance(y, (list, tuple)) else [y])])
    return [np.concatenate(outputs) for outputs in zip(*chunks)]


def parity(reference, candidate, inputs: list[np.ndarray]) -> dict[str, float]:
    """max |Δ| between two models' outputs, and that figure relative to the reference's output scale.

    Args:
        reference: the model whose outputs are the truth (either Keras).
        candidate: the model checked against it.
        inputs: one array per model input.

    Returns:
        ``{"max_abs_diff", "output_scale", "relative_diff"}``.
    """
    ref, got = _predict(reference, inputs), _predict(candidate, inputs)
    if len(ref) != len(got):
        raise ModelError(f"translated model has {len(got)} outputs, the original {len(ref)}")
    diff = max(float(np.max(np.abs(a.astype("float64") - b.astype("float64")))) for a, b in zip(ref, got))
    scale = max(float(np.max(np.abs(a))) for a in ref)
    return {"max_abs_diff": diff, "output_scale": scale, "relative_diff": diff / max(scale, 1e-12)}


def layerwise_parity(reference, candidate, inputs: list[np.ndarray]) -> dict[str, float]:
    """Per-layer output difference (relative to that layer's largest |output|) between a Keras 3
    model and its tf_keras translation (either way round), for every top-level layer with a single
    output called once. Catches a wrong layer even where the final output saturates (a softmax over
    near-constant logits), and names the first one that diverges. Where Keras marks an output with a
    padding mask, only the unmasked positions count: values at padded steps are never used downstream
    and do differ between the two (e.g. Attention, TimeDistributed).

    Args:
        reference: the Keras 3 model or its tf_keras translation.
        candidate: the other one.
        inputs: one array per model input.

    Returns:
        Layer name → max |Δ| relative to that layer's largest |output|.
    """
    import keras
    import tf_keras
    from keras.src import backend

    k3_first = isinstance(reference, keras.Model)
    k3_model, tf_model = (reference, candidate) if k3_first else (candidate, reference)
    names, k3_outputs, tf_outputs, masks = [], [], [], []
    for layer in k3_model.layers:
        if layer.__class__.__name__ == "InputLayer" or hasattr(layer, "layers"):
            continue  # a nested model's .output is its own graph's, not the outer call's
        try:
            k3_out = layer.output  # raises for a layer called more than once
            tf_out = tf_model.get_layer(layer.name).output
        except (AttributeError, ValueError, RuntimeError):
            continue
        if isinstance(k3_out, (list, tuple)) or isinstance(tf_out, (list, tuple)):
            continue
        names.append(layer.name)
        k3_outputs.append(k3_out)
        tf_outputs.append(tf_out)
        masks.append(backend.get_keras_mask(k3_out))
    if not names:
        return {}
    mask_outputs = [m for m in masks if m is not None]
    k3_values = _predict(keras.Model(k3_model.inputs, k3_outputs + mask_outputs), inputs)
    tf_values = _predict(tf_keras.Model(tf_model.inputs, tf_outputs), inputs)
    mask_values = iter(k3_values[len(names):])
    out = {}
    for name, a, b, mask in zip(names, k3_values, tf_values, masks):
        if mask is not None:
            keep = next(mask_values).astype(bool)
            a, b = a[keep], b[keep]  # (batch, steps) mask selects whole feature vectors
        if a.size == 0:
            continue
        scale = max(float(np.max(np.abs(a))), 1e-12)
        out[name] = float(np.max(np.abs(a.astype("float64") - b.astype("float64")))) / scale
    return out
