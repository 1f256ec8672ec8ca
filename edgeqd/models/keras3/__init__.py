"""The Keras 3 ⇄ tf_keras bridge: Keras 3 models in, proven tf_keras twins for TFMOT, Keras 3 students out.

In TF 2.21 ``import keras`` (and ``tf.keras`` without ``TF_USE_LEGACY_KERAS``) is Keras 3, which
is what users save; TFMOT works only on tf_keras. Both live in one process (edgeqd sets
``TF_USE_LEGACY_KERAS=1``, which redirects only ``tf.keras``), so the bridge loads the original
with Keras 3, builds the tf_keras twin and compares the two in one go.

Modules: :mod:`.detect` (which Keras wrote a file; loading Keras 3 files), :mod:`.to_tf` (Keras 3
config → tf_keras, the per-class :data:`TRANSLATORS` registry), :mod:`.ops` (Keras 3 operations,
mask plumbing), :mod:`.to_k3` (the reverse), :mod:`.activations` (Keras 3 activations tf_keras
lacks or computes differently), :mod:`.weights` (weight copy and parity), :mod:`.bridge` (load,
translate, prove, write back), :mod:`.serving` (layer-less SavedModels). Nothing here imports
TensorFlow or Keras until a function needs it.

>>> detect_flavour("missing.keras")
Traceback (most recent call last):
edgeqd.errors.ModelError: model not found: missing.keras
"""

from edgeqd.models.keras3.activations import register_activations
from edgeqd.models.keras3.bridge import (Translation, load_keras3_file, prove, reserve_layer_names, to_keras3,
                                         tf_keras_to_keras3, translate_keras3_model)
from edgeqd.models.keras3.common import KERAS3, PARITY_RTOL, SERVING, TF_KERAS
from edgeqd.models.keras3.detect import detect_flavour
from edgeqd.models.keras3.serving import serving_model, serving_signature
from edgeqd.models.keras3.to_tf import TRANSLATORS, translator
from edgeqd.models.keras3.weights import layerwise_parity, parity, sample_inputs

__all__ = ["KERAS3", "TF_KERAS", "SERVING", "PARITY_RTOL", "detect_flavour", "load_keras3_file", "prove",
           "Translation", "translate_keras3_model", "tf_keras_to_keras3", "to_keras3", "reserve_layer_names",
           "register_activations", "serving_model", "serving_signature", "TRANSLATORS", "translator", "parity",
           "layerwise_parity", "sample_inputs"]
