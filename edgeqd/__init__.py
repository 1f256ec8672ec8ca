"""edgeqd: distil, quantize, convert and measure Keras models for edge devices.

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is
imported anywhere, because TensorFlow Model Optimization works only with the
legacy Keras 2 (``tf_keras``). Code in edgeqd writes ``import tf_keras as keras``.
"""

import os as _os

# TFMOT needs Keras 2; this must happen before the first `import tensorflow`.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notes) buries our own
# output on CPU-only machines; a user who wants it sets the variable themselves.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

__all__ = ["__version__"]
