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
        x_train: training / calibration inputs, shape (N, ...): float32, or the model's integer
            dtype (token ids, indices) when its input is integer.
        y_train: integer class labels for ``x_train`` (classification), float32 targets of
            shape (N,) or (N, k) (regression), or None (unlabelled data).
        x_eval: held-out inputs used for every accuracy figure.
        y_eval: integer labels for ``x_eval``, or None.
        class_names: one name per class, in label order (empty when unknown).
        normalization: how raw inputs were scaled before reaching the model
            ({"scale": s, "offset": o} meaning x = raw * scale + offset).
        label_width: the number of columns of one-hot labels as given (None for integer
            labels); it must equal the model's number of outputs.
        task: "classification" (integer or one-hot labels, or none) or "regression" (real-valued
            targets: accuracy is replaced by MAE, RMSE and max |error|).
    """

    name: str
    x_train: np.ndarray
    y_train: Optional[np.ndarray]
    x_eval: np.ndarray
    y_eval: Optional[np.ndarray]
    class_names: tuple[str, ...] = ()
    normalization: dict = field(default_factory=lambda: {"scale": 1.0, "offset": 0.0})
    label_width: Optional[int] = None
    task: str = "classification"

    @property
    def regression(self) -> bool:
        """Whether the targets are real values (:attr:`task` "regression")."""
        return self.task == "regression"

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
    """How an artifact's predictions compare with the labels (or targets) and the float model.

    Attributes:
        samples: how many held-out samples were evaluated.
        accuracy: top-1 accuracy against the labels, or None without labels (and for regression).
        agreement: fraction of samples whose top-1 class equals the float Keras model's; None
            where top-1 means nothing (regression, or a model with one output).
        mean_abs_diff: mean absolute difference of the (dequantized) outputs from
            the float Keras model's outputs.
        max_abs_diff: the largest such difference.
        mae: regression: mean absolute error against the targets (None without targets).
        rmse: regression: root mean squared error against the targets.
        max_abs_error: regression: the largest absolute error against the targets.
    """

    samples: int
    accuracy: Optional[float]
    agreement: Optional[float]
    mean_abs_diff: float
    max_abs_diff: Optional[float] = None
    mae: Optional[float] = None
    rmse: Optional[float] = None
    max_abs_error: Optional[float] = None

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
        mae_increase_pct: regression: how much larger this artifact's MAE is than the float
            Keras model's, in percent of it (what ``--max-drop`` limits for regression).
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
    mae_increase_pct: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the manifest's per-artifact entry)."""
        return {"format": self.format, "file": self.file, "runtime": self.runtime,
                "status": self.status.value, "reason": self.reason, "dtype": self.dtype,
                "bytes": self.bytes, "sha256": self.sha256,
                "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs],
                "evaluation": self.evaluation.to_dict() if self.evaluation else None,
                "accuracy_drop_pts": self.accuracy_drop_pts, "mae_increase_pct": self.mae_increase_pct,
                "seconds": round(self.seconds, 3),
                "details": self.details}


class FeatureLoss(str, Enum):
    """How a student's intermediate feature is compared with the teacher's."""

    MSE = "mse"  # mean squared error of the (projected) activations
    COSINE = "cosine"  # 1 − cosine similarity per sample: ignores the features' scale


class DistributionStrategy(str, Enum):
    """Which ``tf.distribute`` strategy trains the student."""

    MIRRORED = "mirrored"  # all local devices of one machine
    MULTIWORKER = "multiworker"  # several processes/machines, cluster described by TF_CONFIG


@dataclass(frozen=True)
class LayerPair:
    """A teacher layer matched with a student layer (``--feature t:s`` / ``--attention t:s``).

    Attributes:
        teacher_layer: name of the layer in the teacher whose output is the target.
        student_layer: name of the layer in the student whose output is trained towards it.
    """

    teacher_layer: str
    student_layer: str

    def __str__(self) -> str:
        return f"{self.teacher_layer}:{self.student_layer}"


@dataclass(frozen=True)
class DistillResult:
    """What ``distill`` produced.

    Attributes:
        student_path: where the student was saved, or None when not saved.
        report_path: the JSON with settings and figures next to it, or None.
        student_params: the student's parameter count.
        teacher_params: the teacher's parameter count.
        student_accuracy: the best student's top-1 accuracy on the evaluation split
            (None without labels).
        teacher_accuracy: the teacher's top-1 accuracy on the same split (None without labels).
        agreement: fraction of evaluation samples where student and teacher pick the same class.
        best_epoch: the epoch (1-based) whose weights were kept.
        epochs_run: epochs trained in total (resumed runs included).
        seconds: wall-clock training time of this run.
        history: one dict of figures per epoch.
        settings: the run's settings, as written to the JSON.
        notes: remarks about the run (e.g. a teacher softmax that was skipped).
        student: the trained ``tf_keras`` student (not part of ``to_dict``).
    """

    student_path: Optional[str]
    report_path: Optional[str]
    student_params: int
    teacher_params: int
    student_accuracy: Optional[float]
    teacher_accuracy: Optional[float]
    agreement: float
    best_epoch: int
    epochs_run: int
    seconds: float
    history: tuple = ()
    settings: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    student: Any = field(default=None, repr=False, compare=False)

    @property
    def param_ratio(self) -> float:
        """How many times smaller the student is than the teacher."""
        return self.teacher_params / max(1, self.student_params)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the model itself left out)."""
        # Not asdict(): it would deep-copy the Keras model too.
        out = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "student"}
        out["history"] = list(self.history)
        out["notes"] = list(self.notes)
        out["param_ratio"] = self.param_ratio
        return out


EMULATED_LATENCY_NOTE = "emulated — not a device latency"


@dataclass(frozen=True)
class BenchResult:
    """One row of ``edgeqd bench``: an artifact on a device at a thread count, or a failure.

    Latency figures are milliseconds and named like TFLite's ``benchmark_model``
    (init, first inference, warmup average, then count/mean/std/min/max and the
    p50/p90/p99 percentiles of the timed runs). Rows from emulated devices carry
    ``emulated=True`` and ``latency_note`` = :data:`EMULATED_LATENCY_NOTE`: their
    latency is not a device latency and is never compared.

    Attributes:
        artifact: the artifact's file name.
        device: the device's name (its spec, or its name in a devices file).
        kind: the registered device kind ("local", "qemu-aarch64", "ssh", "adb").
        threads: CPU threads given to the runtime.
        status: ok or failed.
        reason: why the row failed ("" when ok).
        emulated: whether the device is emulated (qemu-user).
        latency_note: "", :data:`EMULATED_LATENCY_NOTE`, or the kind's own (``tflm``: host reference kernels).
        runtime: the runtime that ran the artifact ("ai_edge_litert", "onnxruntime", "benchmark_model").
        runtime_version: its version.
        xnnpack: whether LiteRT's XNNPACK delegate was on (None where not applicable).
        init_ms: model load and tensor allocation.
        first_inference_ms: the first invocation.
        warmup_avg_ms: mean of the warmup runs (the first included, as benchmark_model does).
        count: timed runs.
        mean_ms: mean of the timed runs.
        std_ms: their population standard deviation.
        min_ms: fastest timed run.
        max_ms: slowest timed run.
        p50_ms: median timed run.
        p90_ms: 90th percentile (MLPerf's single-stream metric).
        p99_ms: 99th percentile.
        peak_rss_mb: peak resident memory of the runner process (VmHWM).
        rss_increase_mb: how much of that peak came after the runtime's import.
        artifact_bytes: the artifact's size.
        samples: evaluation samples run on the device.
        accuracy: top-1 accuracy on them (None without labels, and for regression).
        mae: regression: mean absolute error against the targets (None otherwise).
        agreement: share of samples whose top-1 equals the reference float model's (None without one,
            and for a single output).
        device_info: the device's identity as the runner saw it (machine, cpu, cores, os, …).
        attempts: how many tries the row took (``--retries``).
        seconds: wall time of the row, transfers included.
        notes: free-form notes from a devices file (thermal state, governor).
        profile: the per-op profile (``by_op_type``, ``top_nodes``) when one was asked for:
            ``{"available": False, "reason": …}`` where the runtime offers none.
        micro: ``tflm`` rows: the tensor arena TFLM allocated (``arena_bytes``), ``flash_bytes`` and
            TFLM's ops (:func:`edgeqd.devices.tflm.micro_figures`); None elsewhere.
        raw: the runner's JSON document (or the parsed benchmark_model output).
    """

    artifact: str
    device: str
    kind: str
    threads: int
    status: Status
    reason: str = ""
    emulated: bool = False
    latency_note: str = ""
    runtime: str = ""
    runtime_version: str = ""
    xnnpack: Optional[bool] = None
    init_ms: Optional[float] = None
    first_inference_ms: Optional[float] = None
    warmup_avg_ms: Optional[float] = None
    count: int = 0
    mean_ms: Optional[float] = None
    std_ms: Optional[float] = None
    min_ms: Optional[float] = None
    max_ms: Optional[float] = None
    p50_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    peak_rss_mb: Optional[float] = None
    rss_increase_mb: Optional[float] = None
    artifact_bytes: int = 0
    samples: int = 0
    accuracy: Optional[float] = None
    agreement: Optional[float] = None
    device_info: dict = field(default_factory=dict)
    mae: Optional[float] = None
    attempts: int = 1
    seconds: float = 0.0
    notes: str = ""
    profile: Optional[dict] = None
    micro: Optional[dict] = None
    raw: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the row succeeded."""
        return self.status == Status.OK

    def to_dict(self, raw: bool = False) -> dict[str, Any]:
        """A JSON-ready dict; ``raw=True`` keeps the runner's full document.

        Args:
            raw: include the ``raw`` runner output.
        """
        data = asdict(self)
        data["status"] = self.status.value
        if not raw:
            data.pop("raw")
        return data
