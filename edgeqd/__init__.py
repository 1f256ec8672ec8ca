"""edgeqd: distil, quantize, convert and measure Keras models for edge devices.

The public API, grouped by intent (imported lazily, so ``import edgeqd`` stays fast
and does not load TensorFlow until a function is used):

* run the pipeline: :func:`convert` ([distil] → [QAT] → verified TFLite/ONNX,
  manifest, bundle) and its QAT preset :func:`quantize`;
* train: :func:`distill` (a student from a teacher);
* measure: :func:`bench` (latency, memory, accuracy on devices);
* look: :func:`inspect_artifact`, :func:`write_report`;
* settings (validated dataclasses): :class:`ConvertSettings`, :class:`CalibrationSettings`,
  :class:`VerifySettings`, :class:`QATSettings`, :class:`DistillSettings`, :class:`BenchSettings`.

>>> import edgeqd
>>> settings = edgeqd.ConvertSettings(qat=edgeqd.QATSettings(epochs=1))
>>> settings.mode
'qat'
>>> edgeqd.convert("model.keras", "fashion-mnist", "out/", settings)  # doctest: +SKIP

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported
anywhere, because TensorFlow Model Optimization works only with the legacy Keras 2
(``tf_keras``); code in edgeqd writes ``import tf_keras as keras``. Users' Keras 3
models are translated at the boundary. It also caps oneDNN at AVX2
(``ONEDNN_MAX_CPU_ISA=AVX2``, unless set already): oneDNN's AVX-512 weight-gradient
kernel for some 1x1 convolutions crashes training natively (see the comment below).
"""

import importlib as _importlib
import os as _os

# TFMOT needs Keras 2; this must happen before the first `import tensorflow`.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notes) buries our own
# output on CPU-only machines; a user who wants it sets the variable themselves.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN 3.7.3 (TensorFlow 2.21) corrupts the heap in its AVX-512 1x1-convolution
# weight-gradient kernel (jit_1x1:avx512_core backward_weights; e.g. a 1x1 stride-2 conv
# with 8 input channels on a 60x60 map, as in fer's mini-Xception), so any training of
# such a model dies with SIGSEGV/SIGABRT on AVX-512 CPUs. Capping oneDNN at AVX2 avoids
# it (0 crashes in 6 tries against 6 in 6) at about half the cost of turning oneDNN off
# (TF_ENABLE_ONEDNN_OPTS=0, which also works). oneDNN reads the variable when it creates
# its first primitive; the user's own value wins.
_os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

__version__ = "0.1.0"

# name → module that defines it. The stage packages are nouns (distillation, quantization,
# reporting) so that importing one never binds a module over the function of the same verb.
_API = {
    "convert": "edgeqd.pipeline", "ConvertResult": "edgeqd.pipeline",
    "quantize": "edgeqd.quantization",
    "distill": "edgeqd.distillation",
    "bench": "edgeqd.devices",
    "inspect_artifact": "edgeqd.artifact_info",
    "write_report": "edgeqd.reporting",
    "load_model": "edgeqd.models",
    "ConvertSettings": "edgeqd.settings", "CalibrationSettings": "edgeqd.settings",
    "VerifySettings": "edgeqd.settings", "QATSettings": "edgeqd.settings",
    "DistillSettings": "edgeqd.settings", "BenchSettings": "edgeqd.settings",
    "EdgeqdError": "edgeqd.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    """Import a public name on first use (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module 'edgeqd' has no attribute {name!r}")
    value = getattr(_importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_API))
