"""The converter registry: :data:`CONVERTERS` keyed by ``--formats`` name, and what a converter gets.

The format modules (:mod:`edgeqd.converters.tflite`, :mod:`edgeqd.converters.onnx`) import
:func:`register_converter` from here, and :mod:`edgeqd.converters` imports them after this
module, so the registry is filled by importing the package and no module imports its own package.

>>> from edgeqd.converters import CONVERTERS  # importing the package registers every format
>>> CONVERTERS["tflite-int8"].precision
'int8'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

# The default --formats list is a setting; re-exported here for code that thinks of it as the registry's.
from edgeqd.settings import DEFAULT_FORMATS

__all__ = ["ConversionContext", "Converter", "CONVERTERS", "DEFAULT_FORMATS", "register_converter", "get_converter"]


@dataclass
class ConversionContext:
    """What every converter gets: the model, calibration data and the settings.

    Attributes:
        model: the float Keras model the user brought (or the distilled student): float
            artifacts are always converted from it, quantized ones too unless QAT ran.
        calibration: representative inputs for calibration, float32 (N, ...).
        workdir: a scratch folder for intermediate files (removed by the caller).
        qat_model: the quantization-aware (fake-quant) model after QAT, or None; the int8
            converters ship the ranges it learnt.
        per_channel: per-channel weight scales (True) or one scale per tensor.
        calibration_method: "minmax", "percentile" or "entropy" (ONNX Runtime calibrators).
        cache: intermediate results shared between converters (e.g. the float ONNX graph).
        metadata: what apps need (labels, normalization, task), embedded in each artifact.
        qat_export: the QAT model already exported for conversion (a SavedModel folder,
            :func:`edgeqd.converters.export.export_saved_model`), e.g. by the child process
            that trained it; used instead of ``qat_model``.
        qat_softmax: the user's model ends in a softmax the QAT model leaves out (its
            artifacts add it back).
        qat_float_layers: "name (Kind)" of each layer TFMOT left float: the int8
            conversion calibrates them on the representative samples (not trained).
        run: ``run(stage, fn, *args)`` runs a stage that may crash natively (TFLite
            calibration) in a child process (:meth:`edgeqd.isolate.Worker.call`); None
            runs it here.
    """

    model: Any
    calibration: np.ndarray
    workdir: Path
    qat_model: Any = None
    per_channel: bool = True
    calibration_method: str = "minmax"
    cache: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    qat_export: Optional[Path] = None
    qat_softmax: bool = False
    qat_float_layers: tuple = ()
    run: Optional[Callable[..., Any]] = None
    # A SavedModel without Keras layers (Keras 3 model.export()): the float formats and PTQ convert
    # its serving signature (converters/serving.py); ``model`` then only wraps it for reference outputs.
    saved_model_dir: Optional[Path] = None
    # Mixed precision (tflite-mixed, onnx-mixed): labelled samples the search may use (never the
    # held-out evaluation split) as (x, y or None), and the accuracy budget (--max-drop) in points.
    search_samples: Optional[tuple] = None
    max_drop: Optional[float] = None

    @property
    def quantization_aware(self) -> bool:
        """Whether QAT ran: the int8 artifacts ship its ranges."""
        return self.qat_model is not None or self.qat_export is not None

    def run_stage(self, stage: str, fn: Callable, *args: Any) -> Any:
        """``fn(*args)``, in the child process when :attr:`run` is set.

        Args:
            stage: what runs, for a crash message ("TFLite int8 conversion").
            fn: an importable module-level function.
            *args: its arguments (picklable).
        """
        return fn(*args) if self.run is None else self.run(stage, fn, *args)


@dataclass(frozen=True)
class Converter:
    """One registered output format.

    Attributes:
        name: registry key, also the ``--formats`` value.
        filename: the artifact's file name in the output folder.
        runtime: "tflite" or "onnx": which runtime loads and verifies it.
        quantized: whether it is an integer-quantized artifact (``--max-drop`` applies).
        description: one line for ``--help`` and tables.
        fn: the function that writes it.
        dtype: the artifact's compute precision as shown to users ("int8", "float16", "int16x8").
    """

    name: str
    filename: str
    runtime: str
    quantized: bool
    description: str
    fn: Callable[[ConversionContext, Path], dict]
    dtype: str = ""

    @property
    def precision(self) -> str:
        """``dtype``, defaulting to "int8" for quantized and "float32" for float artifacts."""
        return self.dtype or ("int8" if self.quantized else "float32")


CONVERTERS: dict[str, Converter] = {}


def register_converter(name: str, *, filename: str, runtime: str, quantized: bool,
                       description: str, dtype: str = "") -> Callable:
    """Register the decorated function as the converter ``name``.

    Args:
        name: registry key (``--formats`` value).
        filename: artifact file name in the output folder.
        runtime: "tflite" or "onnx".
        quantized: whether ``--max-drop`` applies to it.
        description: one line shown in help and tables.
        dtype: compute precision shown to users; default "int8" or "float32" from ``quantized``.

    >>> @register_converter("doc-example", filename="x.bin", runtime="tflite", quantized=False,
    ...                     description="example")
    ... def _example(context, out_path):
    ...     return {}
    >>> CONVERTERS.pop("doc-example").filename
    'x.bin'
    """

    def decorator(fn: Callable[[ConversionContext, Path], dict]) -> Callable:
        if name in CONVERTERS:
            raise ValueError(f"converter {name!r} registered twice")
        CONVERTERS[name] = Converter(name, filename, runtime, quantized, description, fn, dtype)
        return fn

    return decorator


def get_converter(name: str) -> Optional[Converter]:
    """The converter registered as ``name``, or None.

    Args:
        name: registry key.

    >>> get_converter("no-such-format") is None
    True
    """
    return CONVERTERS.get(name)
