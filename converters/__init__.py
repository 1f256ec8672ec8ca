"""Output formats, registered by name: ``CONVERTERS["tflite-int8"]``.

Each format family lives in its own module and registers its converters where
they are defined with :func:`register_converter`. A new format (float16, 16x8,
sub-8-bit, …) is a new registered function, not a branch in the pipeline.

A converter is a function ``fn(context, out_path) -> dict`` that writes one
artifact to ``out_path`` and returns extra manifest fields (may be empty).
"""

from __future__ import annotations

from edgeqd.converters.registry import (CONVERTERS, DEFAULT_FORMATS, ConversionContext, Converter, get_converter,
                                        register_converter)

# Importing the format modules registers their converters (after the registry they register into).
from edgeqd.converters import onnx as _onnx  # noqa: F401
from edgeqd.converters import tflite as _tflite  # noqa: F401
from edgeqd.converters import lowbit as _lowbit  # noqa: F401
from edgeqd.converters import lowbit_onnx as _lowbit_onnx  # noqa: F401
from edgeqd.converters import mixed as _mixed  # noqa: F401

__all__ = ["ConversionContext", "Converter", "CONVERTERS", "DEFAULT_FORMATS", "register_converter", "get_converter"]
