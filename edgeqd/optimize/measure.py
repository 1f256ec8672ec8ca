"""Cheap figures, before any training: the exact artifact size and the latency on the device.

A candidate's artifact has the same graph and the same number of bytes whatever its
weights, so the untrained student is converted with the very converter that will ship it
(calibrated on a few real samples, metadata embedded as the pipeline does): its size is
the shipped size to within a few bytes (the I/O scales are also written as text into the
metadata, and their digits differ: 8 bytes in 12 KB measured). Latency does not depend on the weights either, so that artifact is
timed on the device (:func:`edgeqd.devices.bench`) before training. Only real devices
give a latency: an emulated one (qemu) is refused when a latency budget is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from edgeqd.errors import DeviceError, UsageError
from edgeqd.optimize.space import FILE_FAMILY, Candidate
from edgeqd.types import Dataset

CALIBRATION_SAMPLES = 32  # ranges of an untrained model only shape the scales, never the byte count


def build_untrained(candidate: Candidate, input_shape: Sequence[int], num_classes: int,
                    student_file: Optional[str], unsafe_deserialization: bool = False):
    """The candidate's student with fresh weights (a ``tf_keras`` model).

    Args:
        candidate: the candidate.
        input_shape: shape of one sample.
        num_classes: number of outputs.
        student_file: the user's student file, for ``family == "file"``.
        unsafe_deserialization: allow layers that carry code in the file.
    """
    if candidate.family == FILE_FAMILY:
        from edgeqd.models import load_model

        return trained_like(load_model(Path(student_file), unsafe_deserialization=unsafe_deserialization))
    from edgeqd.distillation.students import build_student

    return trained_like(build_student(candidate.family, input_shape, num_classes, candidate.width, candidate.depth))


def trained_like(model, seed: int = 0):
    """``model`` with every weight moved off its initial value, in place; returns it.

    Fresh batch norms are identities (γ 1, β 0, mean 0, variance 1) whose folded bias is all
    zeros, and the TFLite converter drops an all-zero bias: an untrained artifact was 1.4 KB
    smaller than the trained one (3 dense layers, measured). Random statistics keep every
    tensor a trained model has, so the byte count is the shipped one.

    Args:
        model: a ``tf_keras`` model.
        seed: seed of the noise.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    for variable in model.weights:
        value = variable.numpy()
        if "variance" in variable.name:  # must stay positive
            variable.assign(rng.uniform(0.5, 1.5, value.shape).astype(value.dtype))
        else:
            variable.assign((value + rng.normal(0.0, 0.05, value.shape)).astype(value.dtype))
    return model


def write_artifact(model, format_name: str, dataset: Dataset, path: Path, workdir: Path) -> int:
    """Convert ``model`` with the registered converter ``format_name`` as the pipeline would; its size in bytes.

    Args:
        model: a ``tf_keras`` model.
        format_name: a registered converter (``tflite-int8``).
        dataset: the run's data (calibration samples, labels and normalization for the metadata).
        path: where to write the artifact.
        workdir: scratch space for the converter.
    """
    from edgeqd.bundle import embed_metadata
    from edgeqd.converters import CONVERTERS, ConversionContext
    from edgeqd.pipeline import artifact_metadata

    converter = CONVERTERS[format_name]
    workdir.mkdir(parents=True, exist_ok=True)
    context = ConversionContext(model=model, calibration=dataset.x_train[:CALIBRATION_SAMPLES], workdir=workdir,
                                metadata=artifact_metadata(model, dataset))
    converter.fn(context, path)
    embed_metadata(path, converter.runtime, context.metadata)
    return path.stat().st_size


@dataclass
class Devices:
    """Where latency is measured: a device spec or a devices file, resolved once.

    Attributes:
        spec: what the user gave (``local``, ``ssh://pi@host``, ``fleet.yaml``), or None.
        entries: the devices (``DeviceConfig`` or spec strings) that :func:`edgeqd.devices.bench` takes.
        emulated: names of emulated devices among them.
        runs: timed runs per measurement.
    """

    spec: Optional[str]
    entries: list = field(default_factory=list)
    emulated: list = field(default_factory=list)
    runs: int = 30

    @property
    def measures_latency(self) -> bool:
        """Whether latency is an objective: a device is given and none of it is emulated."""
        return bool(self.entries) and not self.emulated

    def latency_ms(self, artifact: Path) -> Optional[float]:
        """The artifact's median latency at 1 thread; on a fleet the slowest device's. None without a device.

        Args:
            artifact: a ``.tflite`` file.

        Raises:
            DeviceError: the device could not run it (exit 5), with the device's reason.
        """
        if not self.measures_latency:
            return None
        from edgeqd.devices import bench
        from edgeqd.settings import BenchSettings

        settings = BenchSettings(runs=self.runs, warmup=3, min_seconds=0.2, max_seconds=20.0, reference="none",
                                 threads=(1,), timeout=300.0)
        rows = bench([artifact], self.entries, None, settings)
        failed = [r for r in rows if not r.ok]
        if failed:
            raise DeviceError(f"latency of {artifact.name} on {failed[0].device} failed: {failed[0].reason}")
        return max(float(r.p50_ms) for r in rows)


def resolve_devices(spec: Optional[str], max_latency_ms: Optional[float], runs: int) -> Devices:
    """The devices behind ``--device``; an emulated one with a latency budget is a usage error.

    Args:
        spec: a device spec, a devices file (``.yaml``/``.yml``), or None.
        max_latency_ms: the latency budget, if any.
        runs: timed runs per measurement.

    Raises:
        UsageError: a latency budget without a device, or with an emulated one (exit 2).

    >>> resolve_devices(None, None, 10).measures_latency
    False
    """
    if spec is None:
        if max_latency_ms is not None:
            raise UsageError("--max-latency-ms needs --device: latency is measured on the device, never guessed")
        return Devices(None, runs=runs)
    from edgeqd.devices import device_from_spec, load_devices_file

    entries: list[Any]
    if Path(spec).suffix in (".yaml", ".yml"):
        entries = list(load_devices_file(spec))
        devices = [entry.device() for entry in entries]
    else:
        entries, devices = [spec], [device_from_spec(spec)]
    emulated = [d.name for d in devices if type(d).emulated]
    if emulated and max_latency_ms is not None:
        raise UsageError(f"--device {', '.join(emulated)} is emulated: its latency is not a device latency, so it "
                         "cannot satisfy --max-latency-ms; measure on a real device (local, ssh://HOST, adb:SERIAL, "
                         "a devices file) or drop the latency budget")
    return Devices(spec, entries, emulated, runs)


@dataclass(frozen=True)
class Teacher:
    """The teacher's figures, for the accuracy drop and for scale in the report.

    Attributes:
        accuracy_selection: accuracy on the held-out part the search selects on.
        accuracy_test: accuracy on the held-out part the search never sees.
        params: parameter count.
        size_bytes: its float ``.tflite`` (tflite-fp32).
        latency_ms: that artifact's median latency on the device, or None.
    """

    accuracy_selection: float
    accuracy_test: float
    params: int
    size_bytes: int
    latency_ms: Optional[float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return dict(self.__dict__)


def accuracy(model, x, y) -> float:
    """Top-1 accuracy of a Keras model.

    Args:
        model: a ``tf_keras`` model.
        x: inputs.
        y: integer labels.
    """
    return float((model.predict(x, batch_size=256, verbose=0).argmax(-1) == y).mean())


def teacher_figures(teacher, selection: Dataset, test: Dataset, devices: Devices, workdir: Path) -> Teacher:
    """Measure the teacher once: accuracies on both held-out parts, float size and latency.

    Args:
        teacher: the ``tf_keras`` teacher.
        selection: the data whose held-out split the search selects on.
        test: the same data with the held-out split the search never sees.
        devices: where latency is measured.
        workdir: scratch space.
    """
    path = workdir / "teacher_fp32.tflite"
    size = write_artifact(teacher, "tflite-fp32", selection, path, workdir / "teacher")
    return Teacher(accuracy(teacher, selection.x_eval, selection.y_eval), accuracy(teacher, test.x_eval, test.y_eval),
                   int(teacher.count_params()), size, devices.latency_ms(path))


def check_classification(dataset: Dataset) -> None:
    """Refuse data ``optimize`` cannot score: regression targets or no labels.

    Args:
        dataset: the loaded data.
    """
    if dataset.regression:
        raise UsageError("edgeqd optimize scores candidates by accuracy: regression targets are not supported yet")
    if not dataset.labelled:
        raise UsageError("edgeqd optimize needs labelled data (y and y_val): accuracy drop is measured on labels")
