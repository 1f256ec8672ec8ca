"""Keras 3 → tf_keras and back, each direction proven by comparing the two models' outputs.

TFMOT works only on tf_keras (Keras 2); users bring Keras 3 files. :func:`load_keras3_file` loads
one with Keras 3 itself (safe mode, after edgeqd's own code walk), translates its configuration
layer by layer (:mod:`~edgeqd.models.keras3.to_tf`), builds the tf_keras twin, copies the weights
(:mod:`~edgeqd.models.keras3.weights`) and **proves** the translation: both models' outputs must
agree within :data:`~edgeqd.models.keras3.common.PARITY_RTOL` of the output scale, or the load stops
naming what differs. :func:`to_keras3` writes a tf_keras model (a distilled student) back as a Keras 3
``.keras`` file, reloaded with Keras 3 and verified the same way.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from .common import PARITY_RTOL, ModelError, all_layers
from .detect import load_keras3
from .to_k3 import to_k3_config
from .to_tf import Context, translate_model_config
from .weights import copy_weights, layerwise_parity, parity, sample_inputs

Samples = Union[np.ndarray, Sequence[np.ndarray], None]
# Per-layer probe threshold when the final outputs disagree: float32 reassociation alone gives single
# layers up to ~1e-4 relative (MobileNetV2 at 224 px, fused vs unfused BatchNormalization); a
# mistranslated layer is off by O(1).
LAYER_DIVERGENCE = 1e-3
# What to do when a Keras 3 model cannot become a tf_keras one.
UNTRANSLATABLE_HINT = ("rebuild those layers from ones tf_keras has (README: Bring your model); post-training "
                       "quantization still works from the model's serving signature: in Keras 3 run "
                       "model.export('DIR') and pass DIR (QAT and distillation need the layers)")


def reserve_layer_names(model) -> None:
    """Advance tf_keras' automatic layer-name counters past the names a loaded model already uses.

    A model read from a file (or translated) brings names such as ``conv2d`` without advancing the
    counters, so layers that TFMOT's transforms create get the same names, and tf_keras'
    ``reconstruct_from_config`` then requeues a node forever (``quantize_model`` never returned in
    300 s on a Conv2D + Concatenate model). Call it after every load, in every process.

    Args:
        model: a tf_keras model.
    """
    from tf_keras.src import backend
    from tf_keras.src.utils import generic_utils

    layers = all_layers(model)
    used = {layer.name for layer in layers}
    bases = {re.sub(r"_\d+$", "", name) for name in used}
    bases |= {generic_utils.to_snake_case(layer.__class__.__name__) for layer in layers}
    for base in bases:
        for _ in range(len(used) + 2):  # each call takes the next free number for this base
            if backend.unique_object_name(base, zero_based=True) not in used:
                break


def _model_kind(k3_model) -> str:
    """``"Sequential"`` or ``"Functional"``; a subclassed model has no graph config to translate."""
    import keras

    if isinstance(k3_model, keras.Sequential):
        return "Sequential"
    if isinstance(k3_model, keras.src.models.functional.Functional):
        return "Functional"
    raise ModelError(f"{k3_model.name} is a subclassed Keras 3 model ({type(k3_model).__name__}): it has no "
                     "layer graph to translate; rebuild it with the functional API or keras.Sequential, or "
                     "export it (model.export('DIR')) for post-training quantization only")


def translate_keras3_model(k3_model) -> tuple[Any, dict]:
    """Build the tf_keras twin of an in-memory Keras 3 Functional/Sequential model, weights included.

    Args:
        k3_model: the Keras 3 model.

    Returns:
        ``(tf_keras_model, info)``: ``info`` holds ``layers_translated``, ``special`` (layer →
        translator that ran), ``dropped_defaults`` and the tf_keras ``config``.

    Raises:
        ModelError: naming every layer that could not be translated, with the reason.
    """
    import tf_keras

    kind = _model_kind(k3_model)
    ctx = Context(k3_layers={})
    config = translate_model_config(kind, k3_model.get_config(), ctx, k3_model)
    if ctx.untranslatable:
        named = "; ".join(f"{name} ({why})" for name, why in ctx.untranslatable.items())
        raise ModelError(f"cannot translate Keras 3 layer(s) to tf_keras, which TFMOT needs: {named}; "
                         + UNTRANSLATABLE_HINT)
    cls = tf_keras.Sequential if kind == "Sequential" else tf_keras.Model
    try:
        model = cls.from_config(config)
    except Exception as exc:
        raise ModelError(f"tf_keras cannot build the translated {kind} ({type(exc).__name__}: "
                         f"{(str(exc).splitlines() or [''])[0][:300]}); " + UNTRANSLATABLE_HINT) from None
    failed = copy_weights(k3_model, model, src_k3=True)
    if failed:
        raise ModelError("cannot copy the weights of Keras 3 layer(s): " + "; ".join(failed))
    reserve_layer_names(model)
    return model, {"layers_translated": ctx.count, "special": dict(ctx.special), "config": config,
                   "dropped_defaults": dict(ctx.dropped)}


@dataclass
class Translation:
    """A Keras 3 model and what its tf_keras translation took, with the latest proof of parity.

    Attributes:
        keras3_model: the Keras 3 original, kept to prove the translation again on real data.
        layers_translated: layers (and operations) translated.
        special: layer → the non-default translator that ran (``op:Add->TFOpLambda``, ...).
        dropped_defaults: ``"Class.argument"`` → layers where a Keras-3-only argument at its
            default was dropped.
        parity: the latest proof: ``max_abs_diff``, ``relative_diff``, ``output_scale``,
            ``tolerance``, ``samples`` and ``sample_source``.
        seconds: time to load with Keras 3, translate and prove.
    """

    keras3_model: Any = field(repr=False)
    layers_translated: int
    special: dict[str, str]
    dropped_defaults: dict[str, int]
    parity: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def special_summary(self) -> dict[str, int]:
        """How many layers each non-default translator handled."""
        summary: dict[str, int] = {}
        for how in self.special.values():
            summary[how] = summary.get(how, 0) + 1
        return dict(sorted(summary.items()))

    def to_dict(self) -> dict[str, Any]:
        """What the manifest records (the models themselves are left out)."""
        return {"layers_translated": self.layers_translated, "special": self.special_summary(),
                "dropped_defaults": self.dropped_defaults, "parity": dict(self.parity),
                "seconds": round(self.seconds, 2)}


def _as_inputs(samples: Samples) -> Optional[list[np.ndarray]]:
    if samples is None:
        return None
    return [np.asarray(samples)] if isinstance(samples, np.ndarray) else [np.asarray(s) for s in samples]


def prove(translation: Translation, tf_model, samples: Samples = None, sample_source: Optional[str] = None,
          rtol: float = PARITY_RTOL) -> dict[str, Any]:
    """Compare the tf_keras translation with its Keras 3 original; record the figures or refuse.

    Args:
        translation: what :func:`load_keras3_file` returned with ``tf_model``.
        tf_model: the tf_keras translation.
        samples: real inputs (an array, or one per model input); None draws deterministic
            random inputs of the right shape and dtype (:func:`sample_inputs`).
        sample_source: how the manifest names the samples ("training data"); default
            "random inputs (no data given)" or "given samples".
        rtol: allowed max |Δ| relative to the largest |output| of the original.

    Returns:
        The parity figures (also stored in ``translation.parity``).

    Raises:
        ModelError: the outputs differ by more than ``rtol``; names the first layer that differs.
    """
    k3_model = translation.keras3_model
    inputs = _as_inputs(samples)
    if inputs is None:
        inputs = sample_inputs(k3_model)
        sample_source = sample_source or "random inputs (no data given)"
    figures = parity(k3_model, tf_model, inputs)
    figures.update(tolerance=rtol, samples=int(len(inputs[0])), sample_source=sample_source or "given samples")
    if not figures["relative_diff"] <= rtol:  # NaN fails too
        per_layer = layerwise_parity(k3_model, tf_model, inputs)
        first = next((name for name, diff in per_layer.items() if diff > LAYER_DIVERGENCE), None)
        raise ModelError(
            f"{k3_model.name}: the tf_keras translation differs from the Keras 3 model by max |Δ| "
            f"{figures['max_abs_diff']:.3g} ({figures['relative_diff']:.3g} of the output scale "
            f"{figures['output_scale']:.3g}; allowed {rtol:g}) on {figures['samples']} "
            f"{figures['sample_source']}; first layer that differs: "
            f"{first or 'none found among single-call layers'}; translated specially: "
            f"{translation.special_summary() or 'none'}; " + UNTRANSLATABLE_HINT)
    translation.parity = figures
    return figures


def load_keras3_file(path: Path, info: dict, unsafe: bool = False, custom_objects: Optional[dict] = None,
                     samples: Samples = None) -> tuple[Any, Translation]:
    """Load a Keras 3 file with Keras 3, translate it to tf_keras and prove the translation.

    Args:
        path: a Keras 3 ``.keras`` or ``.h5`` file, already walked for code by edgeqd's safety check.
        info: :func:`~edgeqd.models.keras3.detect.detect_flavour`'s answer for it.
        unsafe: load with Keras' ``safe_mode`` off.
        custom_objects: extra classes Keras 3 needs (they must still translate).
        samples: real inputs for the proof; None uses random ones (and says so).

    Returns:
        ``(tf_keras_model, translation)``.
    """
    started = time.perf_counter()
    k3_model = load_keras3(path, info, unsafe, custom_objects)
    model, details = translate_keras3_model(k3_model)
    translation = Translation(k3_model, details["layers_translated"], details["special"],
                              details["dropped_defaults"])
    prove(translation, model, samples)
    translation.seconds = time.perf_counter() - started
    return model, translation


def tf_keras_to_keras3(tf_model):
    """The Keras 3 twin of an in-memory tf_keras Sequential/functional model, weights included.

    Args:
        tf_model: a tf_keras model without TFMOT wrappers.

    Raises:
        ModelError: a subclassed model, a QAT model, or a layer with no Keras 3 translation.
    """
    import keras
    import tf_keras

    kind = "Sequential" if isinstance(tf_model, tf_keras.Sequential) else "Functional"
    if not getattr(tf_model, "_is_graph_network", False) and kind != "Sequential":
        raise ModelError(f"{tf_model.name} is a subclassed tf_keras model; it cannot be written for Keras 3")
    if any(layer.__class__.__name__.startswith("Quantize") for layer in all_layers(tf_model)):
        raise ModelError(f"{tf_model.name} holds TFMOT quantization wrappers; Keras 3 has no QAT layers, so "
                         "a QAT model's deliverables are its int8 TFLite/ONNX artifacts")
    config = to_k3_config(kind, tf_model.get_config(), tf_model)
    cls = keras.Sequential if kind == "Sequential" else keras.Model
    try:
        model = cls.from_config(config)
    except Exception as exc:
        raise ModelError(f"Keras 3 cannot build {tf_model.name} ({type(exc).__name__}: "
                         f"{(str(exc).splitlines() or [''])[0][:300]})") from None
    failed = copy_weights(tf_model, model, src_k3=False)
    if failed:
        raise ModelError("cannot copy weights to Keras 3 for layer(s): " + "; ".join(failed))
    return model


def to_keras3(tf_model, path: str | Path, samples: Samples = None, rtol: float = PARITY_RTOL) -> dict[str, Any]:
    """Write a tf_keras model as a Keras 3 ``.keras`` file, reload it with Keras 3 (safe mode) and verify.

    Args:
        tf_model: a tf_keras Sequential or functional model (no TFMOT wrappers).
        path: the ``.keras`` file to write (overwritten: atomic writing is the caller's job).
        samples: inputs for the check (an array or one per input); None uses random ones.
        rtol: allowed max |Δ| relative to the tf_keras model's largest |output|.

    Returns:
        The parity figures of the reloaded file against ``tf_model`` (with ``samples``).

    Raises:
        ModelError: not translatable, or the reloaded file computes something else.
    """
    import keras

    path = Path(path)
    if path.suffix != ".keras":
        raise ModelError(f"{path}: Keras 3 models are written as .keras")
    model = tf_keras_to_keras3(tf_model)
    model.save(path)
    reloaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    inputs = _as_inputs(samples) or sample_inputs(tf_model)
    figures = parity(tf_model, reloaded, inputs)
    figures.update(tolerance=rtol, samples=int(len(inputs[0])))
    if not figures["relative_diff"] <= rtol:
        raise ModelError(f"{path}: the Keras 3 file differs from the tf_keras model by max |Δ| "
                         f"{figures['max_abs_diff']:.3g} (relative {figures['relative_diff']:.3g}, allowed {rtol:g})")
    return figures
