"""Low-bit QAT with the teacher in every step: int4/int2 weights trained, then stored without rounding again.

``edgeqd quantize --weight-bits 4|2 [--teacher T] [--progressive 8,4,2]``. The weights of every
Conv2D and Dense layer (not depthwise: it stays int8 in every low-bit format; Conv2D at 4 bits at
least, as ``tflite-w2`` stores it) are fake-quantized
in the forward pass — per output channel, symmetric, narrow range: levels −q..q with
q = 2^(bits−1) − 1, scale max|w|/q — and the gradient passes straight through to the float
weights (STE). Batch norms stay frozen (their moving statistics as calibrated by training), as
in edgeqd's int8 QAT. Each step's loss distils from the teacher (``T²·KL`` at temperature T,
weight ``alpha``) and learns the labels (weight 1 − alpha): the teacher is ``--teacher``, or the
float model itself; with ``--progressive`` each stage (e.g. 8 → 4 → 2 bits) starts from the
previous stage's weights and distils from the previous stage's quantized model.

Export is lossless by construction: the trained weights are replaced by their fake-quantized
values in a float copy of the model, converted to the float ``.tflite`` and quantized by
ai-edge-quantizer's symmetric min-max recipe, whose grid (max|w|/7 for int4, max|w|/1 for int2
per channel) is exactly the one trained; a batch norm the converter folds into the kernel scales
each output channel, which moves the grid with it (tests/quantization/test_lowbit_qat.py checks it).

The best of the stages' epochs on the validation split (epoch 0 = the rounded float model,
i.e. post-training quantization) is kept, so QAT never ships worse than PTQ on that split.

>>> import numpy as np
>>> fake_quant(np.array([[0.7, -0.1], [0.35, 0.2]], np.float32), 2, (0,)).numpy().tolist()
[[0.699999988079071, -0.0], [0.0, 0.20000000298023224]]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["LEARNING_RATE", "fake_quant", "LowBitResult", "train_lowbit", "folded_model", "run_lowbit_stage"]

# Adam's rate for low-bit fine-tuning: at 1e-3 float and QAT fine-tuning both moved accuracy by
# ±1-2 pts on Fashion-MNIST models; 1e-4 trained without that drift (scratch/lowbit/FINDINGS.md C).
LEARNING_RATE = 1e-4


def fake_quant(weights, bits: int, axes: Sequence[int]):
    """Symmetric narrow-range fake quantization per channel (``axes`` are reduced: max|w| over them).

    Args:
        weights: a kernel (tensor or array).
        bits: 2, 4 or 8.
        axes: the axes NOT holding the output channel.
    """
    import tensorflow as tf

    levels = float(2 ** (bits - 1) - 1)
    scale = tf.reduce_max(tf.abs(weights), axis=list(axes), keepdims=True) / levels
    scale = tf.where(scale > 0, scale, tf.ones_like(scale))
    return tf.round(weights / scale) * scale


def _quantized_kernels(model, bits: int) -> list[tuple[Any, tuple, int]]:
    """(kernel variable, reduced axes, bits) of every Conv2D and Dense: the layers stored below 8 bits.

    A Conv2D trains at 4 bits at least: ``tflite-w2`` stores convolutions as int4 (LiteRT 2.3's int2
    convolution is wrong), and ternary convolutions would cost accuracy the file does not need to lose.
    """
    import tf_keras as keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            continue
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and getattr(layer, "kernel", None) is not None:
            own = max(bits, 4) if isinstance(layer, keras.layers.Conv2D) else bits
            found.append((layer.kernel, tuple(range(len(layer.kernel.shape) - 1)), own))
    return found


def folded_model(model, bits: int):
    """A float copy of ``model`` whose Conv2D/Dense kernels are their fake-quantized values.

    Args:
        model: the (trained) float model.
        bits: the weight bits.
    """
    import tf_keras as keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for variable, axes, own in _quantized_kernels(copy, bits):
        variable.assign(fake_quant(variable, own, axes))
    return copy


@dataclass
class LowBitResult:
    """What low-bit QAT hands the converters.

    Attributes:
        model: the float model with its kernels on the trained grid (:func:`folded_model`).
        bits: the final weight bits.
        section: the manifest's record (stages, epochs, validation accuracy per epoch).
    """

    model: Any
    bits: int
    section: dict = field(default_factory=dict)


def _logits(model):
    """``model`` without a final softmax (training distils logits), or ``model`` itself."""
    from edgeqd.distillation import logits_model

    return logits_model(model, "student")[0]


def _accuracy(model, bits: int, x: np.ndarray, y: np.ndarray) -> float:
    folded = folded_model(model, bits)
    return float((folded.predict(x, batch_size=512, verbose=0).argmax(-1) == y).mean())


def _train_stage(student, teacher, bits: int, x, y, epochs: int, batch: int, temperature: float, alpha: float,
                 seed: int):
    import tensorflow as tf

    kernels = _quantized_kernels(student, bits)
    optimizer = tf.keras.optimizers.Adam(LEARNING_RATE)
    t2 = temperature ** 2

    @tf.function
    def step(xb, yb):
        saved = [v.read_value() for v, _, _ in kernels]
        for v, axes, own in kernels:
            v.assign(fake_quant(v, own, axes))
        with tf.GradientTape() as tape:
            logits = student(xb, training=False)  # batch norms frozen
            loss = (1.0 - alpha) * tf.reduce_mean(
                tf.keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True))
            if alpha > 0:
                soft = tf.nn.softmax(teacher(xb, training=False) / temperature)
                loss += alpha * t2 * tf.reduce_mean(tf.keras.losses.kl_divergence(
                    soft, tf.nn.softmax(logits / temperature)))
        grads = tape.gradient(loss, student.trainable_variables)
        for (v, _, _), value in zip(kernels, saved):
            v.assign(value)  # the straight-through estimator: the float weights take the step
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, student.trainable_variables) if g is not None])
        return loss

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            index = order[start:start + batch]
            step(tf.constant(x[index]), tf.constant(y[index]))
        yield


def train_lowbit(model, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, bits: int, *,
                 teacher=None, progressive: Sequence[int] = (), epochs: int = 3, batch_size: int = 64,
                 temperature: float = 2.0, alpha: Optional[float] = None, seed: int = 0) -> LowBitResult:
    """Train ``model``'s Conv2D/Dense weights for ``bits`` (through ``progressive`` stages), distilling in every step.

    Args:
        model: the float ``tf_keras`` model (not modified).
        x: training inputs; y: their integer labels.
        x_val: validation inputs that pick the best epoch; y_val: their labels.
        bits: the final weight bits (4 or 2).
        teacher: the teacher (``--teacher``); None: the float model teaches itself.
        progressive: the stages' bits, ending with ``bits`` (e.g. (8, 4, 2)); empty: one stage.
        epochs: epochs per stage.
        batch_size: training batch size.
        temperature: distillation temperature.
        alpha: weight of the teacher term (None: 1 without labels' help, i.e. pure distillation, when the
            float model teaches itself; 0.5 with ``teacher``).
        seed: shuffling seed.
    """
    import tf_keras as keras

    stages = list(progressive) or [bits]
    alpha = (0.5 if teacher is not None else 1.0) if alpha is None else alpha
    keras.utils.set_random_seed(seed)
    student = keras.models.clone_model(_logits(model))
    student.set_weights(_logits(model).get_weights())
    current_teacher = _logits(teacher) if teacher is not None else _logits(model)
    record = {"bits": bits, "stages": [], "alpha": alpha, "temperature": temperature, "learning_rate": LEARNING_RATE,
              "teacher": "--teacher" if teacher is not None else "the float model (self-distillation)",
              "method": "per-channel symmetric narrow-range fake-quant of Conv2D/Dense kernels, straight-through "
                        "gradients, frozen batch norms; best epoch on the validation split (epoch 0 = PTQ)"}
    for stage_bits in stages:
        best = (_accuracy(student, stage_bits, x_val, y_val), 0, student.get_weights())
        history = [round(best[0], 4)]
        for epoch, _ in enumerate(_train_stage(student, current_teacher, stage_bits, x, y, epochs, batch_size,
                                               temperature, alpha, seed), start=1):
            accuracy = _accuracy(student, stage_bits, x_val, y_val)
            history.append(round(accuracy, 4))
            if accuracy > best[0]:
                best = (accuracy, epoch, student.get_weights())
        student.set_weights(best[2])
        record["stages"].append({"bits": stage_bits, "validation_accuracy_per_epoch": history, "best_epoch": best[1]})
        # The next stage distils from this stage's quantized model.
        current_teacher = folded_model(student, stage_bits)
    final = folded_model(student, stages[-1])
    from edgeqd.distillation import logits_model

    if logits_model(model, "student")[1] is not None:  # it ends in a softmax: the artifacts keep it
        copy = keras.models.clone_model(model)
        copy.set_weights(final.get_weights())  # a softmax adds no weights: the lists line up
        final = copy
    return LowBitResult(final, stages[-1], record)


def run_lowbit_stage(model, dataset, settings, teacher=None) -> tuple[bytes, dict]:
    """The pipeline's low-bit QAT stage: train, fold, convert to the float ``.tflite`` the low-bit formats quantize.

    Args:
        model: the float ``tf_keras`` model.
        dataset: the run's data (labelled training split).
        settings: the run's :class:`~edgeqd.settings.ConvertSettings` (``qat.weight_bits`` < 8).
        teacher: ``--teacher``'s model, or None.

    Returns:
        (float ``.tflite`` bytes with the trained kernels, the manifest section).
    """
    import tempfile
    from pathlib import Path

    from edgeqd.converters import ConversionContext
    from edgeqd.converters.tflite import tflite_bytes
    from edgeqd.errors import DataError
    from edgeqd.quantization.finetune import validation_split
    from edgeqd.quantization.qat import training_subset

    qat = settings.qat
    x, y = training_subset(dataset, qat.train_samples, settings.seed)
    if y is None or dataset.regression:
        raise DataError("--weight-bits below 8 trains on class labels (the best epoch is picked by validation "
                        "accuracy): this data has none")
    train, val = validation_split(len(x), qat.validation_samples, settings.seed)
    stages = tuple(int(b) for b in qat.progressive.split(",")) if qat.progressive else ()
    result = train_lowbit(model, x[train], y[train], x[val], y[val], qat.weight_bits, teacher=teacher,
                          progressive=stages, epochs=qat.epochs, batch_size=qat.batch_size,
                          temperature=qat.temperature, alpha=qat.alpha if qat.self_distill or teacher else 0.0,
                          seed=settings.seed)
    with tempfile.TemporaryDirectory() as folder:
        context = ConversionContext(model=result.model, calibration=dataset.x_train[:1], workdir=Path(folder))
        data = tflite_bytes(context, "float", "float32")
    result.section.update(train_samples=int(len(train)), validation_samples=int(len(val)))
    return data, result.section
