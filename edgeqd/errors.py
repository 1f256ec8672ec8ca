"""Typed errors. Each carries the process exit code the CLI uses for it.

Exit codes (documented in the README):
    0 ok, 2 usage, 3 bad input data or model, 4 conversion failure, 5 device failure;
    130 / 143 when interrupted by SIGINT / SIGTERM (see :mod:`edgeqd.interrupts`).
Messages name the problem, carry the numbers, and say what to do about it.
"""

from __future__ import annotations


class EdgeqdError(Exception):
    """Base class of every error edgeqd raises on purpose.

    Args:
        message: one line naming the problem and the fix.
    """

    exit_code = 1


class UsageError(EdgeqdError):
    """Options that contradict each other or an output that already exists."""

    exit_code = 2


class DataError(EdgeqdError):
    """Unreadable, empty, non-finite or mislabelled data, or data that does not fit the model."""

    exit_code = 3


class ModelError(EdgeqdError):
    """A model file that is missing, corrupt, unsafe to load or unusable for the job."""

    exit_code = 3


class ConversionError(EdgeqdError):
    """A converter failed, or an artifact lost more accuracy than allowed."""

    exit_code = 4


class QuantizationError(ConversionError):
    """Quantization (PTQ or QAT) could not be applied as asked."""


class DistillationError(EdgeqdError):
    """Teacher and student (or the distillation settings) do not fit together."""

    exit_code = 3


class DeviceError(EdgeqdError):
    """A device could not be reached, set up or run on."""

    exit_code = 5


class ArtifactError(ModelError):
    """An artifact (``.tflite``/``.onnx``) that is missing, truncated, corrupt or of an unknown kind."""


class NativeCrashError(ConversionError):
    """A stage run in a child process (:mod:`edgeqd.isolate`) died in native code (a signal, no exception).

    Args:
        message: one line naming the stage, the signal and what to try.
    """
