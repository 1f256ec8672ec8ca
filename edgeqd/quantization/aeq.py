"""Running ai-edge-quantizer on a float ``.tflite``: calibration in one step, outputs with every buffer inside.

Two things the quantizer does by default that edgeqd must not ship:

* **Calibration by moving average.** The quantizer merges each calibration *step*'s
  min/max into the running range with a moving average (0.95). Fed one sample per step,
  the ranges come out too narrow (an MLP's int8 logits: 13.5 dB SQNR against the
  TFLite converter's 36.3 dB). One step holding the whole calibration batch gives the
  global min/max, which reproduces the converter's int8 model bit for bit.
  :func:`calibrate` does that.
* **Weights after the flatbuffer.** Once the packed weights reach 256 KiB it writes them
  after the flatbuffer (``Buffer.offset``/``size``). LiteRT reads that; TensorFlow Lite
  Micro silently does not (it runs with empty weights). :func:`inline_buffers` puts them
  back inside — LiteRT's outputs are identical before and after.

The functions take and return plain data (bytes, arrays, recipes as dicts), so that the
pipeline can run them in its child process (:mod:`edgeqd.isolate`) like TFLite's own
calibration. ai-edge-quantizer is imported here only (it loads LiteRT and SciPy).

>>> quantize_tflite(float_bytes, w4a8_recipe(), samples)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Any, Optional

import numpy as np

from edgeqd.errors import ConversionError

__all__ = ["signature_input", "calibrate", "quantize_tflite", "quantize_with", "inline_buffers", "CALIBRATION_KEY"]

# The serving signature every edgeqd export has (edgeqd.converters.export.SIGNATURE_KEY).
CALIBRATION_KEY = "serving_default"


def signature_input(model: bytes) -> str:
    """The name of the float model's (single) input in its serving signature.

    Args:
        model: a ``.tflite`` file's bytes.
    """
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=bytes(model)).get_signature_list()
    if CALIBRATION_KEY not in signatures:
        raise ConversionError(f"the float TFLite model has no {CALIBRATION_KEY!r} signature "
                              f"({', '.join(signatures) or 'none'}): the quantizer calibrates through it")
    inputs = signatures[CALIBRATION_KEY]["inputs"]
    if len(inputs) != 1:
        raise ConversionError(f"low-bit formats take single-input models; this one has {len(inputs)} inputs")
    return inputs[0]


@contextlib.contextmanager
def _quiet():
    """The quantizer's progress prints and its debugging-mode warning kept off stdout (``--json``)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        yield


def _error(what: str, exc: Exception) -> ConversionError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ConversionError(f"ai-edge-quantizer could not {what}: {first[:400]}")


def calibrate(model: bytes, recipe: list[dict], samples: np.ndarray) -> dict[str, Any]:
    """Activation ranges for ``recipe`` over ``samples``, from ONE calibration step (global min/max).

    The result holds a range per tensor the recipe quantizes; one from an all-w8a8 recipe
    serves every recipe that quantizes the same tensors (int4 weights, int16 activations).

    Args:
        model: the float ``.tflite`` bytes.
        recipe: an ai-edge-quantizer recipe that needs calibration.
        samples: representative inputs (N, ...), float32.
    """
    from ai_edge_quantizer import quantizer

    name = signature_input(model)
    dtype = samples.dtype if samples.dtype.kind in "iu" else np.float32
    try:
        with _quiet():
            qt = quantizer.Quantizer(bytes(model), recipe)
            return qt.calibrate({CALIBRATION_KEY: [{name: np.asarray(samples, dtype)}]}, num_threads=1)
    except Exception as exc:
        raise _error("calibrate the float model", exc) from None


def quantize_with(model: bytes, recipe: list[dict], calibration: Optional[dict[str, Any]]) -> bytes:
    """Quantize with ``recipe`` and ranges already calibrated (None for recipes that need none); inlined.

    Args:
        model: the float ``.tflite`` bytes.
        recipe: an ai-edge-quantizer recipe.
        calibration: :func:`calibrate`'s result, or None.
    """
    from ai_edge_quantizer import quantizer

    try:
        with _quiet():
            qt = quantizer.Quantizer(bytes(model), recipe)
            if qt.need_calibration and calibration is None:
                raise ValueError("the recipe needs calibration and no ranges were given")
            result = qt.quantize(calibration if qt.need_calibration else None, enable_progress_report=False)
    except Exception as exc:
        raise _error("quantize the float model", exc) from None
    return inline_buffers(bytes(result.quantized_model))


def quantize_tflite(model: bytes, recipe: list[dict], samples: Optional[np.ndarray]) -> bytes:
    """Calibrate (in one step, when the recipe needs it) and quantize: the bytes to ship.

    A module-level function of plain data: the pipeline runs it in its child process.

    Args:
        model: the float ``.tflite`` bytes.
        recipe: an ai-edge-quantizer recipe.
        samples: representative inputs for static recipes (None for dynamic ones).
    """
    from ai_edge_quantizer import recipe_manager

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    calibration = None
    if manager.need_calibration():
        if samples is None or not len(samples):
            raise ConversionError("this recipe quantizes activations: it needs calibration samples")
        calibration = calibrate(model, recipe, samples)
    return quantize_with(model, recipe, calibration)


def inline_buffers(model: bytes) -> bytes:
    """``model`` with every buffer stored inside the flatbuffer (none at ``Buffer.offset``).

    Args:
        model: a ``.tflite`` file's bytes (written by ai-edge-quantizer).
    """
    from edgeqd.artifact_info.tflite import tflite_schema

    root = tflite_schema().Model.GetRootAs(model, 0)
    if not any(root.Buffers(b).Offset() > 1 for b in range(root.BuffersLength())):
        return model
    from ai_edge_litert.tools import flatbuffer_utils

    # Reading the object model resolves offset buffers into data; writing it back stores them inline.
    return bytes(flatbuffer_utils.convert_object_to_bytearray(
        flatbuffer_utils.read_model_from_bytearray(bytearray(model))))
