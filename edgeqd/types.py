"""The shared vocabulary: enums and frozen dataclasses used across edgeqd.

Everything that crosses a module boundary (a dataset, a tensor's description, an
evaluation, one row of results) is defined here once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Optional

import numpy as np


class QuantMode(str, Enum):
    """How a model's quantization parameters are obtained."""

    PTQ = "ptq"  # post-training: ranges calibrated on representative samples
    QAT = "qat"  # quantization-aware training: ranges learnt during fine-tuning


class Status(str, Enum):
    """Outcome of one row of results (an artifact, or an artifact on a device)."""

    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class Dataset:
    """Arrays for one job, already validated for shape, finiteness and labels.

    Attributes:
        name: where the data came from ("fashion-mnist", a path).
        x_train: training / calibration inputs, float32, shape (N, ...).
        y_train: integer class labels for ``x_train``, or None (unlabelled data).
        x_eval: held-out inputs used for every accuracy figure.
        y_eval: integer labels for ``x_eval``, or None.
        class_names: one name per class, in label order (empty when unknown).
        normalization: how raw inputs were scaled before reaching the model
            ({"scale": s, "offset": o} meaning x = raw * scale + offset).
    """

    name: str
    x_train: np.ndarray
    y_train: Optional[np.ndarray]
    x_eval: np.ndarray
    y_eval: Optional[np.ndarray]
    class_names: tuple[str, ...] = ()
    normalization: dict = field(default_factory=lambda: {"scale": 1.0, "offset": 0.0})

    @property
    def labelled(self) -> bool:
        """Whether both splits carry labels."""
        return self.y_train is not None and self.y_eval is not None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(self.x_train.shape[1:])


@dataclass(frozen=True)
class TensorInfo:
    """One input or output tensor of an artifact.

    Attributes:
        name: the tensor's name in the artifact.
        shape: its shape; -1 marks a dynamic dimension.
        dtype: numpy dtype name ("int8", "float32").
        scale: quantization scale(s); empty for float tensors. One entry per
            channel for per-channel tensors.
        zero_point: quantization zero point(s), aligned with ``scale``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scale": list(self.scale), "zero_point": list(self.zero_point)}


@dataclass(frozen=True)
class Evaluation:
    """How an artifact's predictions compare with the labels and the float model.

    Attributes:
        samples: how many held-out samples were evaluated.
        accuracy: top-1 accuracy against the labels, or None without labels.
        agreement: fraction of samples whose top-1 class equals the float Keras model's.
        mean_abs_diff: mean absolute difference of the (dequantized) outputs from
            the float Keras model's outputs.
    """

    samples: int
    accuracy: Optional[float]
    agreement: float
    mean_abs_diff: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class ArtifactResult:
    """One row of ``edgeqd convert``: an artifact, verified in its runtime, or a failure.

    Attributes:
        format: the converter's registry name ("tflite-int8").
        file: the artifact's file name in the output folder ("" when it failed).
        runtime: "tflite" or "onnx".
        status: ok or failed.
        reason: why it failed ("" when ok).
        dtype: "int8" for quantized artifacts, else "float32".
        bytes: file size.
        sha256: file digest.
        inputs: input tensors with quantization parameters.
        outputs: output tensors with quantization parameters.
        evaluation: accuracy and agreement on the held-out split.
        accuracy_drop_pts: float Keras accuracy minus this artifact's, in points.
        seconds: time spent converting and verifying.
        details: converter-specific facts (per-channel, calibration method, opset, …).
    """

    format: str
    file: str
    runtime: str
    status: Status
    reason: str = ""
    dtype: str = ""
    bytes: int = 0
    sha256: str = ""
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()
    evaluation: Optional[Evaluation] = None
    accuracy_drop_pts: Optional[float] = None
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the manifest's per-artifact entry)."""
        return {"format": self.format, "file": self.file, "runtime": self.runtime,
                "status": self.status.value, "reason": self.reason, "dtype": self.dtype,
                "bytes": self.bytes, "sha256": self.sha256,
                "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs],
                "evaluation": self.evaluation.to_dict() if self.evaluation else None,
                "accuracy_drop_pts": self.accuracy_drop_pts, "seconds": round(self.seconds, 3),
                "details": self.details}
