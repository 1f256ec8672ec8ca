"""Knowledge distillation in Keras: a small student learns from a frozen teacher.

The loss of one batch is

    loss = (1 − α)·CE(y, student) + α·T²·KL(softmax(teacher/T) ‖ softmax(student/T))
           + feature_weight·Σ feature terms + attention_weight·Σ attention terms

(Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"). Without
labels the logit part is the teacher term alone. Feature terms match intermediate
activations through a learned projection when shapes differ (FitNets, Romero et al.
2015); attention terms match normalized spatial attention maps (Zagoruyko &
Komodakis 2017, "Paying More Attention to Attention").

The loss pieces are plain functions (:func:`kd_loss`, :func:`distillation_loss`,
:func:`feature_loss`, :func:`attention_loss`) so that quantization-aware training
can put the same teacher term into its own SGD steps; :class:`Distiller` wraps
them in a ``tf_keras`` model with a custom ``train_step``; :func:`distill` is the
command's public function (data, models, checkpoints, early stopping, outputs).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import tf_keras as keras

from edgeqd.errors import DataError, DistillationError, EdgeqdError, ModelError, UsageError
from edgeqd.types import Dataset, DistillResult, DistributionStrategy, FeatureLoss, LayerPair

DEFAULT_TEMPERATURE = 4.0
DEFAULT_ALPHA = 0.9
DEFAULT_FEATURE_WEIGHT = 1.0
# Attention terms are squared distances between unit-norm maps, so they are at most 4
# and usually ~1e-2; Zagoruyko & Komodakis weight theirs with β = 1000 over a mean
# across positions, which for 14×14 maps is ≈ 2.5× our per-sample sum. 10 keeps the
# term comparable in size to the KD term at T = 4 (checked on Fashion-MNIST).
DEFAULT_ATTENTION_WEIGHT = 10.0
REPORT_SUFFIX = ".distill.json"
_SOFTMAX_NAMES = ("softmax",)


# --------------------------------------------------------------------------- losses

def kd_loss(teacher_logits, student_logits, temperature: float = DEFAULT_TEMPERATURE):
    """The teacher term: T²·KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over the batch.

    The T² factor (Hinton et al. 2015, section 2): the gradient of the soft-target
    term with respect to the logits scales as 1/T², so multiplying by T² keeps its
    size comparable to the hard-label term whatever temperature is chosen, and
    lets α mean the same thing at T = 2 and T = 10.

    Args:
        teacher_logits: teacher outputs before softmax, shape (batch, classes).
        student_logits: student outputs before softmax, same shape.
        temperature: T > 0; higher spreads the teacher's probability over more classes.

    Returns:
        A scalar tensor.

    >>> import numpy as np
    >>> float(kd_loss(np.array([[2., 0.]]), np.array([[2., 0.]]), 4.0))
    0.0
    """
    temperature = float(temperature)
    teacher_log_p = tf.nn.log_softmax(tf.cast(teacher_logits, tf.float32) / temperature, axis=-1)
    student_log_p = tf.nn.log_softmax(tf.cast(student_logits, tf.float32) / temperature, axis=-1)
    # KL(p‖q) = Σ p·(log p − log q); log-softmax on both sides avoids log(0) for confident teachers.
    kl = tf.reduce_sum(tf.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1)
    return temperature ** 2 * tf.reduce_mean(kl)


def hard_label_loss(labels, student_logits):
    """Cross-entropy of the student's logits against integer class labels, averaged over the batch.

    Args:
        labels: integer labels, shape (batch,) or (batch, 1).
        student_logits: logits, shape (batch, classes).

    >>> import numpy as np
    >>> round(float(hard_label_loss(np.array([0]), np.array([[0., 0.]]))), 4)  # ln 2
    0.6931
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=tf.cast(student_logits, tf.float32)))


def distillation_terms(teacher_logits, student_logits, labels=None,
                       temperature: float = DEFAULT_TEMPERATURE, alpha: float = DEFAULT_ALPHA) -> dict:
    """The logit loss and its parts: ``{"loss", "kd", "ce"}`` (``ce`` only with labels).

    With labels: loss = (1 − α)·CE + α·T²·KL. Without labels (``labels=None``)
    the teacher term is all there is: loss = T²·KL, whatever α is.

    Args:
        teacher_logits: teacher outputs before softmax, (batch, classes).
        student_logits: student outputs before softmax, (batch, classes).
        labels: integer labels (batch,), or None for no-label distillation.
        temperature: softmax temperature T > 0.
        alpha: weight of the teacher term in [0, 1]; 1 − α weighs the labels.

    >>> import numpy as np
    >>> sorted(distillation_terms(np.zeros((1, 3)), np.zeros((1, 3)), np.array([1])))
    ['ce', 'kd', 'loss']
    """
    kd = kd_loss(teacher_logits, student_logits, temperature)
    if labels is None:
        return {"loss": kd, "kd": kd}
    ce = hard_label_loss(labels, student_logits)
    return {"loss": (1.0 - alpha) * ce + alpha * kd, "kd": kd, "ce": ce}


def distillation_loss(teacher_logits, student_logits, labels=None,
                      temperature: float = DEFAULT_TEMPERATURE, alpha: float = DEFAULT_ALPHA):
    """The logit distillation loss (1 − α)·CE + α·T²·KL as one scalar; the teacher term alone without labels.

    This is the function to call from another training loop (e.g. QAT with the
    teacher in every step): compute both models' logits, pass them in.

    Args:
        teacher_logits: teacher outputs before softmax, (batch, classes).
        student_logits: student outputs before softmax, (batch, classes).
        labels: integer labels (batch,), or None for no-label distillation.
        temperature: softmax temperature T > 0.
        alpha: weight of the teacher term in [0, 1].

    >>> import numpy as np
    >>> round(float(distillation_loss(np.array([[1., 0.]]), np.array([[1., 0.]]), np.array([0]), 4.0, 0.5)), 4)
    0.1566
    """
    return distillation_terms(teacher_logits, student_logits, labels, temperature, alpha)["loss"]


def feature_loss(teacher_feature, student_feature, kind: Union[str, FeatureLoss] = FeatureLoss.MSE):
    """Distance between a teacher feature and a (projected) student feature of the same shape.

    Args:
        teacher_feature: (batch, ...) activations of the teacher layer.
        student_feature: (batch, ...) activations of the student layer, already
            projected to the teacher's shape.
        kind: ``"mse"`` (mean squared error over all elements) or ``"cosine"``
            (1 − cosine similarity of the flattened features, averaged over the batch).

    >>> import numpy as np
    >>> float(feature_loss(np.ones((2, 3)), np.ones((2, 3)) * 2, "mse"))
    1.0
    """
    kind = FeatureLoss(kind)
    teacher_feature = tf.cast(teacher_feature, tf.float32)
    student_feature = tf.cast(student_feature, tf.float32)
    if kind is FeatureLoss.MSE:
        return tf.reduce_mean(tf.square(student_feature - teacher_feature))
    batch = tf.shape(teacher_feature)[0]
    t = tf.math.l2_normalize(tf.reshape(teacher_feature, [batch, -1]), axis=-1)
    s = tf.math.l2_normalize(tf.reshape(student_feature, [batch, -1]), axis=-1)
    return tf.reduce_mean(1.0 - tf.reduce_sum(t * s, axis=-1))


def attention_map(feature, size: Optional[Sequence[int]] = None):
    """The normalized spatial attention map of a conv feature (Zagoruyko & Komodakis 2017).

    The map is the channel mean of the squared activations (their F²_mean), resized
    to ``size`` when given, flattened and scaled to unit L2 norm per sample.

    Args:
        feature: (batch, H, W, C) for 2-D convolutions or (batch, T, C) for 1-D.
        size: target spatial size ((H, W) or (T,)) when the maps to compare differ.

    Returns:
        (batch, positions) tensor, each row of norm 1.

    >>> import numpy as np
    >>> attention_map(np.ones((1, 2, 2, 3), "float32")).numpy().round(2).tolist()
    [[0.5, 0.5, 0.5, 0.5]]
    """
    feature = tf.cast(feature, tf.float32)
    amap = tf.reduce_mean(tf.square(feature), axis=-1)  # (batch, H, W) or (batch, T)
    if size is not None:
        if len(amap.shape) == 3:
            amap = tf.image.resize(amap[..., None], tuple(size), method="bilinear")[..., 0]
        else:
            amap = tf.image.resize(amap[:, :, None, None], (int(size[0]), 1), method="bilinear")[:, :, 0, 0]
    amap = tf.reshape(amap, [tf.shape(amap)[0], -1])
    return tf.math.l2_normalize(amap, axis=-1)


def attention_loss(teacher_feature, student_feature):
    """Attention transfer: squared L2 distance of the normalized attention maps, averaged over the batch.

    Channel counts may differ (the map averages over channels); when spatial sizes
    differ the student's map is resized to the teacher's.

    Args:
        teacher_feature: (batch, H, W, C) or (batch, T, C) teacher activations.
        student_feature: (batch, H', W', C') or (batch, T', C') student activations.

    >>> import numpy as np
    >>> float(attention_loss(np.ones((1, 4, 4, 8), "float32"), np.ones((1, 2, 2, 3), "float32")))
    0.0
    """
    teacher_spatial = tuple(teacher_feature.shape[1:-1])
    student_spatial = tuple(student_feature.shape[1:-1])
    teacher_map = attention_map(teacher_feature)
    student_map = attention_map(student_feature, None if student_spatial == teacher_spatial else teacher_spatial)
    return tf.reduce_mean(tf.reduce_sum(tf.square(student_map - teacher_map), axis=-1))


# --------------------------------------------------------------------------- models

def _is_softmax(activation) -> bool:
    name = getattr(activation, "__name__", "") or getattr(activation, "name", "")
    return str(name).lower() in _SOFTMAX_NAMES


def logits_model(model, role: str = "teacher"):
    """The model itself when it outputs logits; else a model sharing its layers that stops before the softmax.

    A final ``Dense(activation="softmax")`` is replaced by a copy without the
    activation (same weights); a final ``Softmax`` or ``Activation("softmax")``
    layer is skipped. Distillation needs logits: probabilities pushed through a
    second softmax lose the teacher's relative confidences.

    Args:
        model: a functional or Sequential ``tf_keras`` model.
        role: "teacher" or "student", for messages.

    Returns:
        (model, note): ``note`` says what was done, or is None when nothing was.

    >>> import tf_keras as keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax", name="probs")])
    >>> logits_model(m)[1]
    "teacher's final softmax (layer 'probs') skipped: its pre-activation logits are used"
    """
    last = model.layers[-1] if model.layers else None
    if last is None:
        return model, None
    is_layer_softmax = isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and _is_softmax(last.activation))
    is_dense_softmax = isinstance(last, keras.layers.Dense) and _is_softmax(last.activation)
    if not (is_layer_softmax or is_dense_softmax):
        return model, None
    try:
        pre = last.input
        if is_dense_softmax:
            config = last.get_config()
            config.update(activation="linear", name=f"{last.name}_logits")
            dense = keras.layers.Dense.from_config(config)
            outputs = dense(pre)
            dense.set_weights(last.get_weights())
        else:
            outputs = pre
        clone = keras.Model(model.inputs, outputs, name=model.name)
    except Exception as exc:  # subclassed models have no graph to cut
        raise DistillationError(
            f"the {role} ends in a softmax (layer {last.name!r}) and its logits could not be taken "
            f"({type(exc).__name__}); save the {role} without its final softmax") from None
    return clone, f"{role}'s final softmax (layer {last.name!r}) skipped: its pre-activation logits are used"


def find_layer(model, name: str, role: str = "student"):
    """A layer of ``model`` by name, also when TFMOT has wrapped it.

    ``tfmot.quantization.keras.quantize_model`` renames every layer ``quant_<name>``
    and keeps the original as ``wrapper.layer``; both spellings are accepted so that
    a feature pair written for the float student still works on its QAT twin.

    Args:
        model: a ``tf_keras`` model.
        name: the layer's name (original or wrapped).
        role: "teacher" or "student", for the message.

    Raises:
        DistillationError: no such layer; the message lists the valid names.

    >>> import tf_keras as keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    >>> find_layer(m, "d").name
    'd'
    """
    for layer in model.layers:
        if layer.name == name or layer.name == f"quant_{name}":
            return layer
    for layer in model.layers:
        inner = getattr(layer, "layer", None)
        if inner is not None and getattr(inner, "name", None) == name:
            return layer
    valid = [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    raise DistillationError(f"the {role} {model.name!r} has no layer {name!r}; its layers are: {', '.join(valid)}")


def parse_layer_pairs(specs: Sequence[Union[str, LayerPair, tuple]], option: str = "--feature") -> tuple[LayerPair, ...]:
    """Turn ``"teacher_layer:student_layer"`` strings (or pairs) into :class:`LayerPair` s.

    Args:
        specs: the values given (strings, 2-tuples or LayerPairs).
        option: the option's name, for messages.

    >>> parse_layer_pairs(["re_lu_3:relu2_2"])
    (LayerPair(teacher_layer='re_lu_3', student_layer='relu2_2'),)
    """
    pairs = []
    for spec in specs:
        if isinstance(spec, LayerPair):
            pairs.append(spec)
            continue
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            pairs.append(LayerPair(str(spec[0]), str(spec[1])))
            continue
        parts = str(spec).split(":")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise UsageError(f"{option} {spec!r}: write it as teacher_layer:student_layer")
        pairs.append(LayerPair(parts[0].strip(), parts[1].strip()))
    return tuple(pairs)


def _shape(tensor) -> tuple:
    return tuple(None if d is None else int(d) for d in tensor.shape[1:])


def _make_projection(pair: LayerPair, teacher_shape: tuple, student_shape: tuple):
    """The learned map from the student's feature shape to the teacher's, or None when they agree."""
    if teacher_shape == student_shape:
        return None
    if len(teacher_shape) != len(student_shape):
        raise DistillationError(
            f"--feature {pair}: teacher output {teacher_shape} and student output {student_shape} have "
            "different ranks; pair layers of the same kind (conv with conv, dense with dense)")
    name = f"project_{pair.student_layer}"
    if len(teacher_shape) == 3:
        return ResizeConvProjection(teacher_shape, name=name)
    if teacher_shape[:-1] != student_shape[:-1]:
        raise DistillationError(
            f"--feature {pair}: teacher output {teacher_shape} and student output {student_shape} differ "
            "in more than the last (channel) dimension; pick layers with the same length")
    # Dense acts on the last axis: a dense map for flat features, a 1×1 convolution for sequences.
    return keras.layers.Dense(teacher_shape[-1], name=name)


class ResizeConvProjection(keras.layers.Layer):
    """Maps a student conv feature (H', W', C') to the teacher's (H, W, C): bilinear resize, then a 1×1 conv.

    Args:
        target_shape: the teacher feature's (H, W, C).
        name: layer name.
    """

    def __init__(self, target_shape: Sequence[int], name: Optional[str] = None):
        super().__init__(name=name)
        self.target_shape = tuple(int(d) for d in target_shape)
        self.conv = keras.layers.Conv2D(self.target_shape[2], 1, name=f"{name}_conv1x1" if name else None)

    def call(self, x):
        if tuple(x.shape[1:3]) != self.target_shape[:2]:
            x = tf.image.resize(x, self.target_shape[:2], method="bilinear")
        return self.conv(x)


class Distiller(keras.Model):
    """A ``tf_keras`` model that trains ``student`` to match a frozen ``teacher``.

    ``fit`` runs a custom ``train_step``: the teacher runs in inference mode
    (``training=False``: batch norm uses its moving statistics, dropout is off)
    outside the gradient tape, and gradients go to the student's weights and the
    feature projections only. Per-batch figures: ``loss``, ``ce`` (with labels),
    ``kd``, ``feature`` and ``attention`` (when configured), ``accuracy`` (with
    labels) and ``agreement`` (student picks the teacher's class); evaluation
    adds ``teacher_accuracy``.

    Args:
        student: the model to train; it should output logits (a final softmax is
            skipped, see :func:`logits_model`). May be a TFMOT-quantize-wrapped model.
        teacher: the trained model to learn from; its weights are never updated
            (it is also marked ``trainable = False``).
        temperature: softmax temperature T > 0 of the teacher term.
        alpha: weight α in [0, 1] of the teacher term; 1 − α weighs the hard labels.
        features: layer pairs (``"teacher_layer:student_layer"``) whose activations
            are matched; a learned projection maps the student's to the teacher's
            shape when they differ.
        attention: layer pairs of conv layers whose spatial attention maps are matched.
        feature_weight: weight of each feature term.
        attention_weight: weight of each attention term.
        feature_loss: ``"mse"`` or ``"cosine"``.
        name: the Keras model name.

    Attributes:
        student: the model being trained (its logits version) — the one to save.
        teacher: the teacher's logits version.
        notes: remarks such as a skipped softmax.

    >>> import tf_keras as keras
    >>> t = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> s = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> Distiller(s, t, temperature=2.0, alpha=0.5).temperature
    2.0
    """

    def __init__(self, student, teacher, temperature: float = DEFAULT_TEMPERATURE,
                 alpha: float = DEFAULT_ALPHA, features: Sequence = (), attention: Sequence = (),
                 feature_weight: float = DEFAULT_FEATURE_WEIGHT,
                 attention_weight: float = DEFAULT_ATTENTION_WEIGHT,
                 feature_loss: Union[str, FeatureLoss] = FeatureLoss.MSE, name: str = "distiller"):
        super().__init__(name=name)
        check_settings(temperature, alpha, feature_weight, attention_weight)
        try:
            self.feature_loss_kind = FeatureLoss(feature_loss)
        except ValueError:
            raise UsageError(f"--feature-loss {feature_loss!r}: choose mse or cosine") from None
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.feature_weight = float(feature_weight)
        self.attention_weight = float(attention_weight)
        self.feature_pairs = parse_layer_pairs(features, "--feature")
        self.attention_pairs = parse_layer_pairs(attention, "--attention")
        teacher_logits, teacher_note = logits_model(teacher, "teacher")
        student_logits, student_note = logits_model(student, "student")
        self.notes = tuple(n for n in (teacher_note, student_note) if n)
        check_compatible(teacher_logits, student_logits)
        teacher.trainable = False
        teacher_logits.trainable = False
        self.teacher = teacher_logits
        self.student = student_logits

        teacher_taps, student_taps, projections = [], [], []
        for pair in self.feature_pairs + self.attention_pairs:
            t_layer = find_layer(teacher_logits, pair.teacher_layer, "teacher")
            s_layer = find_layer(student_logits, pair.student_layer, "student")
            t_out, s_out = _layer_output(t_layer, "teacher"), _layer_output(s_layer, "student")
            teacher_taps.append(t_out)
            student_taps.append(s_out)
        for pair, t_out, s_out in zip(self.feature_pairs, teacher_taps, student_taps):
            projections.append(_make_projection(pair, _shape(t_out), _shape(s_out)))
        for pair, t_out, s_out in zip(self.attention_pairs, teacher_taps[len(self.feature_pairs):],
                                      student_taps[len(self.feature_pairs):]):
            for role, out in (("teacher", t_out), ("student", s_out)):
                if len(out.shape) not in (3, 4):
                    raise DistillationError(
                        f"--attention {pair}: the {role} layer outputs shape {_shape(out)}; attention "
                        "transfer needs conv feature maps (H×W×C or T×C)")
        # One multi-output model per side shares the layers (and weights) of the original.
        self.teacher_extractor = keras.Model(teacher_logits.inputs, [teacher_logits.outputs[0], *teacher_taps],
                                             name="teacher_extractor")
        self.teacher_extractor.trainable = False
        self.student_extractor = keras.Model(student_logits.inputs, [student_logits.outputs[0], *student_taps],
                                             name="student_extractor")
        self.projections = [p for p in projections if p is not None]
        self._projection_of = projections  # aligned with feature_pairs, None = identity
        for projection, t_out, s_out in zip(projections, teacher_taps, student_taps):
            if projection is not None:
                projection(keras.Input(_shape(s_out)))  # build now so weights exist before restore
        self.labelled_terms = ["loss", "ce", "kd"]
        self.extra_terms = (["feature"] if self.feature_pairs else []) + (["attention"] if self.attention_pairs else [])
        self.trackers = {name_: keras.metrics.Mean(name=name_) for name_ in
                         ["loss", "ce", "kd", *self.extra_terms, "agreement"]}
        self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.teacher_accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="teacher_accuracy")

    @property
    def metrics(self):
        return [*self.trackers.values(), self.accuracy_metric, self.teacher_accuracy_metric]

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def teacher_outputs(self, x):
        """The teacher's ``[logits, *tapped features]`` in inference mode, gradient-free.

        Args:
            x: a batch of inputs.
        """
        return [tf.stop_gradient(t) for t in _as_list(self.teacher_extractor(x, training=False))]

    def terms_from_outputs(self, teacher_outputs, student_outputs, labels=None) -> dict:
        """The loss and its terms from both sides' ``[logits, *features]``.

        Args:
            teacher_outputs: from :meth:`teacher_outputs`.
            student_outputs: the student extractor's outputs for the same batch.
            labels: integer labels, or None (no-label mode).

        Returns:
            ``{"loss", "kd", ["ce"], ["feature"], ["attention"]}`` scalar tensors.
        """
        terms = distillation_terms(teacher_outputs[0], student_outputs[0], labels,
                                   self.temperature, self.alpha)
        n_features = len(self.feature_pairs)
        if n_features:
            parts = []
            for projection, t_feat, s_feat in zip(self._projection_of, teacher_outputs[1:1 + n_features],
                                                  student_outputs[1:1 + n_features]):
                s_feat = projection(s_feat) if projection is not None else s_feat
                parts.append(feature_loss(t_feat, s_feat, self.feature_loss_kind))
            terms["feature"] = tf.add_n(parts)
            terms["loss"] = terms["loss"] + self.feature_weight * terms["feature"]
        if self.attention_pairs:
            parts = [attention_loss(t_feat, s_feat) for t_feat, s_feat in
                     zip(teacher_outputs[1 + n_features:], student_outputs[1 + n_features:])]
            terms["attention"] = tf.add_n(parts)
            terms["loss"] = terms["loss"] + self.attention_weight * terms["attention"]
        return terms

    def loss_terms(self, x, labels=None, training: bool = True) -> dict:
        """Run teacher and student on ``x`` and return the loss terms (see :meth:`terms_from_outputs`).

        Args:
            x: a batch of inputs.
            labels: integer labels, or None.
            training: whether the student runs in training mode.
        """
        student_outputs = _as_list(self.student_extractor(x, training=training))
        return self.terms_from_outputs(self.teacher_outputs(x), student_outputs, labels)

    @property
    def trainable_student_variables(self) -> list:
        """The variables gradients go to: the student's and the projections' (never the teacher's)."""
        variables = list(self.student_extractor.trainable_variables)
        for projection in self.projections:
            variables.extend(projection.trainable_variables)
        return variables

    def _update(self, terms, teacher_logits, student_logits, labels):
        for key, value in terms.items():
            self.trackers[key].update_state(value)
        agree = tf.cast(tf.equal(tf.argmax(student_logits, -1), tf.argmax(teacher_logits, -1)), tf.float32)
        self.trackers["agreement"].update_state(agree)
        if labels is not None:
            self.accuracy_metric.update_state(labels, student_logits)

    def _results(self, labels, evaluation: bool):
        keys = (["loss", "ce", "kd"] if labels is not None else ["loss", "kd"]) + self.extra_terms + ["agreement"]
        results = {key: self.trackers[key].result() for key in keys}
        if labels is not None:
            results["accuracy"] = self.accuracy_metric.result()
            if evaluation:
                results["teacher_accuracy"] = self.teacher_accuracy_metric.result()
        return results

    def train_step(self, data):
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        teacher_outputs = self.teacher_outputs(x)  # outside the tape: nothing of the teacher is recorded
        variables = self.trainable_student_variables
        with tf.GradientTape() as tape:
            student_outputs = _as_list(self.student_extractor(x, training=True))
            terms = self.terms_from_outputs(teacher_outputs, student_outputs, labels)
            total = terms["loss"]
            if self.student_extractor.losses:  # weight regularizers of a user's student
                total = total + tf.add_n(self.student_extractor.losses)
            # Each replica's loss is a mean over its own share of the batch and the
            # optimizer sums gradients over replicas, so divide to get the global mean.
            scaled = total / tf.distribute.get_strategy().num_replicas_in_sync
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self._update(terms, teacher_outputs[0], student_outputs[0], labels)
        return self._results(labels, evaluation=False)

    def test_step(self, data):
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        teacher_outputs = self.teacher_outputs(x)
        student_outputs = _as_list(self.student_extractor(x, training=False))
        terms = self.terms_from_outputs(teacher_outputs, student_outputs, labels)
        self._update(terms, teacher_outputs[0], student_outputs[0], labels)
        if labels is not None:
            self.teacher_accuracy_metric.update_state(labels, teacher_outputs[0])
        return self._results(labels, evaluation=True)



def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _layer_output(layer, role: str):
    try:
        return layer.output
    except AttributeError:
        raise DistillationError(f"the {role} layer {layer.name!r} is used more than once in the model; "
                                "pick a layer with a single output") from None


def check_settings(temperature: float, alpha: float, feature_weight: float = DEFAULT_FEATURE_WEIGHT,
                   attention_weight: float = DEFAULT_ATTENTION_WEIGHT) -> None:
    """Raise :class:`UsageError` for a temperature ≤ 0, α outside [0, 1], a negative weight or a non-finite one.

    These are option values, so a bad one is a usage error (exit 2), like every other bad
    option; :class:`DistillationError` stays for a teacher and student that do not fit.

    Args:
        temperature: softmax temperature.
        alpha: weight of the teacher term.
        feature_weight: weight of feature terms.
        attention_weight: weight of attention terms.

    >>> check_settings(4.0, 1.5)
    Traceback (most recent call last):
    edgeqd.errors.UsageError: --alpha must be within [0, 1], got 1.5
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise UsageError(f"--temperature must be a finite number > 0, got {temperature}")
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):  # NaN fails both comparisons
        raise UsageError(f"--alpha must be within [0, 1], got {alpha}")
    for option, value in (("--feature-weight", feature_weight), ("--attention-weight", attention_weight)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise UsageError(f"{option} must be a finite number >= 0, got {value}")


def check_compatible(teacher, student) -> None:
    """Raise :class:`DistillationError` when teacher and student differ in input shape or number of outputs.

    Args:
        teacher: the teacher (logits version).
        student: the student (logits version).
    """
    from edgeqd.models import model_signature

    try:
        teacher_input, teacher_classes = model_signature(teacher)
        student_input, student_classes = model_signature(student)
    except ModelError as exc:
        raise DistillationError(str(exc)) from None
    if teacher_classes != student_classes:
        raise DistillationError(f"the teacher has {teacher_classes} outputs but the student {student_classes}; "
                                "the student must predict the same classes")
    fits = len(teacher_input) == len(student_input) and all(
        t is None or s is None or t == s for t, s in zip(teacher_input, student_input))
    if not fits:
        shown = lambda shape: tuple(-1 if d is None else d for d in shape)  # noqa: E731
        raise DistillationError(f"the teacher takes inputs of shape {shown(teacher_input)} but the student "
                                f"{shown(student_input)}; both must read the same samples")


def check_teacher_outputs_logits(teacher, x_sample: np.ndarray) -> None:
    """Raise :class:`DistillationError` when the teacher's outputs look like probabilities.

    A softmax hidden inside a custom layer cannot be found by :func:`logits_model`;
    its outputs give it away: every row in [0, 1] and summing to 1.

    Args:
        teacher: the teacher (logits version).
        x_sample: a few input samples.
    """
    outputs = np.asarray(teacher(x_sample, training=False), dtype=np.float64)
    sums = outputs.sum(axis=-1)
    if outputs.min() >= 0.0 and outputs.max() <= 1.0 and np.abs(sums - 1.0).max() < 1e-3:
        raise DistillationError(
            f"the teacher outputs probabilities (on {len(outputs)} samples every value is in [0, 1] and each "
            f"row sums to 1 within {np.abs(sums - 1.0).max():.1e}) and no final softmax layer was found to take "
            "the logits from; save the teacher with a linear last layer (logits) and pass it again")


# --------------------------------------------------------------------------- training run

ModelSpec = Union[str, "os.PathLike[str]", keras.Model]


def _make_strategy(strategy: Optional[str]):
    """The ``tf.distribute`` strategy asked for, or None for plain single-device training."""
    if strategy is None:
        return None
    try:
        kind = DistributionStrategy(strategy)
    except ValueError:
        raise UsageError(f"--strategy {strategy!r}: choose one of "
                         f"{', '.join(s.value for s in DistributionStrategy)}") from None
    if kind is DistributionStrategy.MIRRORED:
        return tf.distribute.MirroredStrategy()
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise UsageError("--strategy multiworker needs TF_CONFIG describing the cluster, e.g. "
                         '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}')
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError):
        raise UsageError("TF_CONFIG must be JSON with cluster.worker (a list of host:port) and "
                         f"task.type/task.index; got {raw[:200]!r}") from None
    if not isinstance(workers, list) or not workers:
        raise UsageError(f"TF_CONFIG cluster.worker must be a non-empty list of host:port, got {workers!r}")
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"cannot start MultiWorkerMirroredStrategy ({str(exc).splitlines()[0]}); it must be "
                         "created before TensorFlow runs anything else in the process: call distill() with "
                         "model paths first thing, or use the edgeqd command") from None


def _is_chief(strategy) -> bool:
    """Whether this process writes outputs (the chief, or worker 0 when there is no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    cluster = resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and int(resolver.task_id) == 0 and "chief" not in cluster


def _materialize(spec: ModelSpec, role: str, unsafe_deserialization: bool, strategy) -> tuple[Any, str]:
    """A model from a path or a model object; under a strategy a model object is cloned into its scope."""
    from edgeqd.models import load_model

    if isinstance(spec, keras.Model):
        if strategy is None:
            return spec, spec.name
        try:
            clone = keras.models.clone_model(spec)
            clone.set_weights(spec.get_weights())
        except Exception as exc:
            raise ModelError(f"cannot copy the {role} {spec.name!r} into the distribution strategy "
                             f"({type(exc).__name__}); pass its file path instead") from None
        return clone, spec.name
    return load_model(spec, unsafe_deserialization=unsafe_deserialization), str(spec)


def split_validation(dataset: Dataset, validation_fraction: float, seed: int):
    """Training and validation arrays: a seeded hold-out of the training split (the evaluation split stays unseen).

    Args:
        dataset: the data.
        validation_fraction: share of the training split held out; 0 validates on the evaluation split.
        seed: seed of the permutation.

    Returns:
        (x_train, y_train, x_val, y_val); labels are None for unlabelled data.

    >>> import numpy as np
    >>> d = Dataset("d", np.zeros((10, 2), "f4"), np.arange(10), np.zeros((4, 2), "f4"), np.arange(4))
    >>> [len(a) for a in split_validation(d, 0.2, seed=0)]
    [8, 8, 2, 2]
    """
    x, y = dataset.x_train, dataset.y_train
    if validation_fraction <= 0:
        return x, y, dataset.x_eval, dataset.y_eval
    n_val = max(1, int(round(len(x) * validation_fraction)))
    if len(x) - n_val < 1:
        raise DataError(f"{dataset.name}: {len(x)} training samples leave none after holding out "
                        f"{n_val} for validation; lower --validation-fraction or add data")
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = order[:n_val], order[n_val:]
    pick = (lambda a, idx: None if a is None else a[idx])
    return x[train], pick(y, train), x[val], pick(y, val)


def _tf_dataset(x: np.ndarray, y: Optional[np.ndarray], batch_size: int, shuffle: bool, seed: int,
                drop_remainder: bool):
    ds = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y.astype(np.int32)))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # In-memory data has no files to split: each worker takes every n-th element.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


class _Keeper(keras.callbacks.Callback):
    """Early stopping on the monitored validation figure, best weights kept, history, checkpoints."""

    def __init__(self, student, monitor: str, patience: Optional[int], checkpoints: Optional["_Checkpoints"],
                 state: Optional[dict] = None):
        super().__init__()
        self.student = student
        self.monitor = monitor
        self.patience = patience
        self.checkpoints = checkpoints
        state = state or {}
        self.history: list[dict] = list(state.get("history", []))
        self.best = float(state.get("best", -math.inf))
        self.best_epoch = int(state.get("best_epoch", 0))
        self.wait = int(state.get("wait", 0))
        self.epochs_done = int(state.get("epochs_done", 0))
        self.best_weights: Optional[list] = None
        self.stopped_early = False

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        logs = logs or {}
        row = {"epoch": epoch + 1, **{k: round(float(v), 6) for k, v in logs.items()}}
        self.history.append(row)
        value = logs.get(self.monitor)
        if value is not None and float(value) > self.best:
            self.best, self.best_epoch, self.wait = float(value), epoch + 1, 0
            self.best_weights = [w.copy() for w in self.student.get_weights()]
        else:
            self.wait += 1
        self.epochs_done = epoch + 1
        if self.checkpoints is not None:
            self.checkpoints.save(self)
        if self.patience is not None and self.wait >= self.patience:
            self.model.stop_training = True
            self.stopped_early = True

    def state(self) -> dict:
        return {"history": self.history, "best": self.best, "best_epoch": self.best_epoch,
                "wait": self.wait, "epochs_done": self.epochs_done}


class _Checkpoints:
    """The run's checkpoint folder beside the output: ``state.json`` (the commit point), the last
    epoch's TensorFlow checkpoint (student, projections, optimizer) and the best weights."""

    def __init__(self, folder: Path, distiller: "Distiller", chief: bool, settings: dict):
        self.folder = folder
        self.distiller = distiller
        self.chief = chief
        self.settings = settings

    def _checkpoint(self):
        return tf.train.Checkpoint(student=self.distiller.student, projections=self.distiller.projections,
                                   optimizer=self.distiller.optimizer)

    def exists(self) -> bool:
        return (self.folder / "state.json").is_file()

    def save(self, keeper: _Keeper) -> None:
        """Checkpoint the epoch; on a full disk drop the partial epoch and raise NoRoomError (exit 2)."""
        from edgeqd.atomic import no_room, no_room_error

        try:
            self._save(keeper)
        except Exception as exc:
            full = no_room(exc)
            if full is None:
                raise
            committed = json.loads((self.folder / "state.json").read_text()).get("tag") if self.exists() else None
            for partial in [*self.folder.glob("epoch-*"), *self.folder.glob(".state.json.tmp-*")]:
                if partial.name != committed:
                    shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink()
            raise no_room_error(full, self.folder.parent) from None

    def _save(self, keeper: _Keeper) -> None:
        # Every worker writes (saving may run collective ops); only the chief keeps what it wrote.
        # (scratch names carry the PID so that a later run removes those of a killed one)
        folder = self.folder if self.chief else Path(tempfile.mkdtemp(prefix=f"edgeqd-work-{os.getpid()}-ckpt-"))
        folder.mkdir(parents=True, exist_ok=True)
        tag = f"epoch-{keeper.epochs_done:04d}-{time.monotonic_ns()}"
        self._checkpoint().write(str(folder / tag / "ckpt"))
        if keeper.best_weights is not None:
            np.savez(folder / f"{tag}/best.npz", *keeper.best_weights)
        elif (folder / "state.json").is_file():  # best unchanged: carry it over
            previous = json.loads((folder / "state.json").read_text()).get("tag")
            if previous and (folder / previous / "best.npz").is_file():
                shutil.copy2(folder / previous / "best.npz", folder / tag / "best.npz")
        state = {"tag": tag, **keeper.state(), "settings": self.settings}
        tmp = folder / f".state.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(state, indent=2, default=str))
        os.replace(tmp, folder / "state.json")  # the commit point: older tags are garbage from here on
        for old in folder.glob("epoch-*"):
            if old.name != tag:
                shutil.rmtree(old, ignore_errors=True)
        if not self.chief:
            shutil.rmtree(folder, ignore_errors=True)

    def restore(self) -> tuple[dict, Optional[list]]:
        state = json.loads((self.folder / "state.json").read_text())
        status = self._checkpoint().read(str(self.folder / state["tag"] / "ckpt"))
        try:
            status.assert_existing_objects_matched()
        except AssertionError as exc:
            raise UsageError(f"the checkpoint in {self.folder} does not match this student/teacher "
                             f"({str(exc).splitlines()[0][:200]}); remove the folder or drop --resume") from None
        best = None
        best_file = self.folder / state["tag"] / "best.npz"
        if best_file.is_file():
            with np.load(best_file) as archive:
                best = [archive[f"arr_{i}"] for i in range(len(archive.files))]
        return state, best

    def remove(self) -> None:
        if self.chief:
            shutil.rmtree(self.folder, ignore_errors=True)


def checkpoint_folder(out: Union[str, Path]) -> Path:
    """Where a run writing ``out`` keeps its checkpoints: a hidden folder beside it.

    Args:
        out: the student's output path.

    >>> checkpoint_folder("models/student.keras").name
    '.student.keras.checkpoint'
    """
    out = Path(out)
    return out.with_name(f".{out.name}.checkpoint")


def report_path(out: Union[str, Path]) -> Path:
    """The JSON written next to the student: ``student.keras`` → ``student.distill.json``.

    Args:
        out: the student's output path.

    >>> report_path("models/student.keras").name
    'student.distill.json'
    """
    out = Path(out)
    return out.with_name(out.stem + REPORT_SUFFIX)


class _Progress(keras.callbacks.Callback):
    """A rich progress bar per epoch with each loss term, and a summary line per epoch."""

    def __init__(self, epochs: int, steps: int, keeper: _Keeper, terms: Sequence[str]):
        super().__init__()
        from rich.console import Console

        self.console = Console(stderr=True)
        self.epochs, self.steps, self.keeper, self.terms = epochs, steps, keeper, tuple(terms)
        self.progress = None
        self.task = None

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if not self.console.is_terminal:
            return
        self.progress = Progress(TextColumn(f"epoch {epoch + 1}/{self.epochs}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[figures]}"),
                                 console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.steps, figures="")

    def _figures(self, logs: dict, prefix: str = "") -> str:
        shown = [f"{k} {float(logs[prefix + k]):.4f}" for k in self.terms if prefix + k in logs]
        return "  ".join(shown)

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, figures=self._figures(logs or {}))

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        logs = logs or {}
        monitor = self.keeper.monitor
        marker = "  [bold green]best[/]" if self.keeper.best_epoch == epoch + 1 else ""
        value = logs.get(monitor)
        self.console.print(f"epoch {epoch + 1}/{self.epochs}  {self._figures(logs)}  "
                           f"{monitor} {float(value):.4f}{marker}" if value is not None else
                           f"epoch {epoch + 1}/{self.epochs}  {self._figures(logs)}", highlight=False)


def _library_versions() -> dict:
    versions = {}
    for name in ("tensorflow", "tensorflow-cpu", "tf-keras", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def distill(teacher: ModelSpec, data: Union[str, "os.PathLike[str]", Dataset], student: ModelSpec = "cnn",
            out: Optional[Union[str, Path]] = None, *, temperature: float = DEFAULT_TEMPERATURE,
            alpha: float = DEFAULT_ALPHA, features: Sequence[Union[str, LayerPair]] = (),
            attention: Sequence[Union[str, LayerPair]] = (), feature_weight: float = DEFAULT_FEATURE_WEIGHT,
            attention_weight: float = DEFAULT_ATTENTION_WEIGHT, feature_loss: str = "mse",
            width: Optional[float] = None, depth: float = 1.0, epochs: int = 20, batch_size: int = 128,
            learning_rate: float = 1e-3, patience: Optional[int] = 5, validation_fraction: float = 0.1,
            strategy: Optional[str] = None, resume: bool = False, force: bool = False, seed: int = 0,
            unsafe_deserialization: bool = False, progress: bool = True,
            callbacks: Sequence[keras.callbacks.Callback] = ()) -> DistillResult:
    """Distil ``student`` from ``teacher`` on ``data`` and save it to ``out`` with a JSON report beside it.

    Everything is checked before training starts (settings, shapes, layer names,
    the output path); nothing is written on an error. While training, the last
    epoch is checkpointed in a hidden folder beside ``out`` (see
    :func:`checkpoint_folder`) so that an interrupted run (Ctrl-C included) goes on
    with ``resume=True``; the folder is removed when the run completes. The student
    saved is the one with the best validation figure (accuracy with labels, else
    agreement with the teacher), measured on a seeded hold-out of the training split.

    Args:
        teacher: the trained teacher: a model path (``.keras``, ``.h5``, SavedModel) or a ``tf_keras`` model.
        data: ``"fashion-mnist"``, an ``.npz`` or image folder path, or a :class:`Dataset`.
            Unlabelled data distils with the teacher term alone.
        student: a built-in family (``cnn``, ``mobilenet``, ``conv1d``, ``mlp``), a model path
            (compiled or not), or a ``tf_keras`` model.
        out: where to save the student (``.keras`` or ``.h5``); None saves nothing and
            keeps no checkpoints.
        temperature: softmax temperature T > 0 of the teacher term.
        alpha: weight α in [0, 1] of the teacher term; (1 − α) weighs the labels.
        features: ``"teacher_layer:student_layer"`` pairs for feature distillation.
        attention: ``"teacher_layer:student_layer"`` pairs of conv layers for attention transfer.
        feature_weight: weight of each feature term.
        attention_weight: weight of each attention term.
        feature_loss: ``"mse"`` or ``"cosine"``.
        width: width multiplier of a built-in student; None sizes it to ~1/15 of the teacher.
        depth: depth multiplier of a built-in student.
        epochs: most epochs to train (early stopping may end sooner).
        batch_size: global batch size (split over replicas under a strategy).
        learning_rate: Adam's learning rate.
        patience: epochs without a better validation figure before stopping; None never stops early.
        validation_fraction: share of the training split held out for early stopping
            and picking the best epoch; 0 uses the evaluation split instead.
        strategy: None, ``"mirrored"`` or ``"multiworker"`` (cluster from ``TF_CONFIG``).
        resume: go on from the checkpoint a previous, interrupted run left beside ``out``.
        force: replace an existing ``out`` and its report.
        seed: seed for weights, the hold-out split, shuffling and dropout.
        unsafe_deserialization: allow Lambda layers in model files.
        progress: show a progress bar and one line per epoch on stderr.
        callbacks: extra Keras callbacks for ``fit``.

    Returns:
        A :class:`DistillResult` with the figures, the settings and the trained student.

    >>> result = distill("teacher.keras", "fashion-mnist", "cnn", "student.keras")  # doctest: +SKIP
    >>> result.student_accuracy, result.param_ratio  # doctest: +SKIP
    (0.89, 15.2)
    """
    from edgeqd import __version__
    from edgeqd.data import check_fits_model, load_dataset
    from edgeqd.models import model_signature, save_model
    from edgeqd.atomic import NoRoomError, check_output_safe, check_writable
    from edgeqd.distillation.students import STUDENTS, build_student, check_size, size_to_teacher

    started = time.monotonic()
    # Settings first: a typo fails in milliseconds, before any model is loaded.
    check_settings(temperature, alpha, feature_weight, attention_weight)
    check_size(width, depth)
    try:
        FeatureLoss(feature_loss)
    except ValueError:
        raise UsageError(f"--feature-loss {feature_loss!r}: choose mse or cosine") from None
    feature_pairs = parse_layer_pairs(features, "--feature")
    attention_pairs = parse_layer_pairs(attention, "--attention")
    if not (isinstance(epochs, int) and epochs >= 1):
        raise UsageError(f"--epochs must be >= 1, got {epochs}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise UsageError(f"--learning-rate must be a finite number > 0, got {learning_rate}")
    if patience is not None and patience < 1:
        raise UsageError(f"--patience must be >= 1, got {patience}")
    if not 0 <= validation_fraction < 1:
        raise UsageError(f"--validation-fraction must be within [0, 1), got {validation_fraction}")
    if resume and out is None:
        raise UsageError("--resume needs --out: checkpoints live beside the output")

    # A multi-worker strategy must exist before TensorFlow runs anything else.
    dist = _make_strategy(strategy)
    chief = _is_chief(dist)
    out = Path(out) if out is not None else None
    if out is not None and chief:
        if out.suffix not in (".keras", ".h5"):
            raise UsageError(f"{out}: save the student as .keras or .h5")
        inputs = [teacher, data, student]
        check_output_safe(out, inputs, file=True)
        check_output_safe(report_path(out), inputs, file=True, option="--out's report")
        check_output_safe(checkpoint_folder(out), inputs, option="--out's checkpoint folder")
        check_writable(out, force)
        check_writable(report_path(out), force)
        if resume and not (checkpoint_folder(out) / "state.json").is_file():
            raise UsageError(f"nothing to resume: no checkpoint in {checkpoint_folder(out)}")

    keras.utils.set_random_seed(seed)
    scope = dist.scope() if dist is not None else _null_scope()
    with scope:
        teacher_model, teacher_name = _materialize(teacher, "teacher", unsafe_deserialization, dist)
        if isinstance(data, Dataset):
            dataset = data
        else:
            teacher_input = tuple(teacher_model.inputs[0].shape[1:]) if teacher_model.inputs else ()
            image_size = tuple(teacher_input[:2]) if len(teacher_input) == 3 and None not in teacher_input[:2] else None
            channels = int(teacher_input[-1]) if len(teacher_input) == 3 and teacher_input[-1] else 3
            dataset = load_dataset(data, image_size=image_size, channels=channels, seed=seed)
        teacher_logits, _ = logits_model(teacher_model, "teacher")
        teacher_input, num_classes = model_signature(teacher_logits)
        student_settings: dict[str, Any] = {}
        if isinstance(student, keras.Model) or str(student) not in STUDENTS:
            if not isinstance(student, keras.Model) and not Path(str(student)).exists() \
                    and Path(str(student)).suffix not in (".keras", ".h5", ".hdf5"):
                raise UsageError(f"unknown student {str(student)!r}: give a Keras model path or one of "
                                 f"{', '.join(sorted(STUDENTS))}")
            student_model, student_name = _materialize(student, "student", unsafe_deserialization, dist)
            student_settings = {"student": student_name}
        else:
            sample_shape = tuple(d if d is not None else s for d, s in zip(teacher_input, dataset.input_shape)) \
                if len(teacher_input) == len(dataset.input_shape) else dataset.input_shape
            chosen = width if width is not None else size_to_teacher(
                str(student), sample_shape, num_classes, teacher_model.count_params(), depth)
            student_model = build_student(str(student), sample_shape, num_classes, chosen, depth)
            student_settings = {"student": str(student), "width": chosen, "depth": depth}
        distiller = Distiller(student_model, teacher_model, temperature=temperature, alpha=alpha,
                              features=feature_pairs, attention=attention_pairs, feature_weight=feature_weight,
                              attention_weight=attention_weight, feature_loss=feature_loss)
        check_fits_model(dataset, teacher_input, num_classes)
        if not distiller.notes or not any(n.startswith("teacher") for n in distiller.notes):
            check_teacher_outputs_logits(distiller.teacher, dataset.x_train[:256])
        distiller.compile(optimizer=keras.optimizers.Adam(learning_rate))

    x_train, y_train, x_val, y_val = split_validation(dataset, validation_fraction, seed)
    labelled = y_train is not None and y_val is not None
    if not labelled:
        y_train = y_val = None  # no-label mode: the teacher term alone
    drop = dist is not None and dist.num_replicas_in_sync > 1
    if drop and len(x_train) < batch_size:
        raise DataError(f"{dataset.name}: {len(x_train)} training samples are fewer than one global batch "
                        f"({batch_size}) across {dist.num_replicas_in_sync} replicas; lower --batch-size")
    train_ds = _tf_dataset(x_train, y_train, batch_size, True, seed, drop)
    val_ds = _tf_dataset(x_val, y_val, batch_size, False, seed, drop and len(x_val) >= batch_size)
    eval_y = dataset.y_eval if labelled else None
    eval_ds = _tf_dataset(dataset.x_eval, eval_y, batch_size, False, seed, drop and len(dataset.x_eval) >= batch_size)
    steps = len(x_train) // batch_size if drop else math.ceil(len(x_train) / batch_size)

    monitor = "val_accuracy" if labelled else "val_agreement"
    settings = {
        "teacher": teacher_name, "data": dataset.name, **student_settings,
        "temperature": float(temperature), "alpha": float(alpha) if labelled else None,
        "labels": labelled, "features": [str(p) for p in feature_pairs],
        "attention": [str(p) for p in attention_pairs], "feature_weight": feature_weight,
        "attention_weight": attention_weight, "feature_loss": str(FeatureLoss(feature_loss).value),
        "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "optimizer": "adam",
        "patience": patience, "validation_fraction": validation_fraction, "monitor": monitor,
        "strategy": strategy, "replicas": dist.num_replicas_in_sync if dist is not None else 1,
        "seed": seed, "train_samples": int(len(x_train)), "validation_samples": int(len(x_val)),
        "evaluation_samples": int(len(dataset.x_eval)), "edgeqd": __version__, "libraries": _library_versions(),
    }
    checkpoints = _Checkpoints(checkpoint_folder(out), distiller, chief, settings) if out is not None else None
    state, best_weights = None, None
    if resume:
        with scope:
            state, best_weights = checkpoints.restore()
    keeper = _Keeper(distiller.student, monitor, patience, checkpoints, state)
    keeper.best_weights = best_weights
    run_callbacks: list = [keeper]
    if progress and chief:
        terms = [t for t in ("loss", "ce", "kd", "feature", "attention", "accuracy", "agreement")
                 if t != "ce" or labelled]
        run_callbacks.append(_Progress(epochs, steps, keeper, terms))
    run_callbacks.extend(callbacks)

    initial_epoch = keeper.epochs_done
    if initial_epoch < epochs and not (patience is not None and keeper.wait >= patience):
        try:
            distiller.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
                          callbacks=run_callbacks, verbose=0)
        except KeyboardInterrupt:
            if checkpoints is not None:
                checkpoints.save(keeper)
                if chief:
                    from rich.console import Console

                    Console(stderr=True).print(
                        f"interrupted after {keeper.epochs_done} epoch(s): checkpoint saved in "
                        f"{checkpoints.folder}; run the same command with --resume to go on", highlight=False)
            raise
        except NoRoomError:
            if checkpoints is not None and not resume:  # this run's checkpoint: give the space back
                checkpoints.remove()
            raise
        except tf.errors.OpError as exc:
            first = (exc.message or type(exc).__name__).strip().splitlines()[0][:300]
            raise DistillationError(f"training failed inside TensorFlow ({type(exc).__name__}: {first})") from None

    if keeper.best_weights is not None:
        distiller.student.set_weights(keeper.best_weights)
    figures = distiller.evaluate(eval_ds, verbose=0, return_dict=True)
    student_accuracy = float(figures["accuracy"]) if labelled else None
    teacher_accuracy = float(figures["teacher_accuracy"]) if labelled else None
    notes = list(distiller.notes)
    if keeper.stopped_early:
        notes.append(f"stopped early after epoch {keeper.epochs_done}: no better {monitor} for {patience} epochs")
    if resume:
        notes.append(f"resumed from epoch {initial_epoch}")
    result = DistillResult(
        student_path=str(out) if out is not None and chief else None,
        report_path=str(report_path(out)) if out is not None and chief else None,
        student_params=int(distiller.student.count_params()), teacher_params=int(distiller.teacher.count_params()),
        student_accuracy=student_accuracy, teacher_accuracy=teacher_accuracy,
        agreement=float(figures["agreement"]), best_epoch=keeper.best_epoch, epochs_run=keeper.epochs_done,
        seconds=round(time.monotonic() - started, 2), history=tuple(keeper.history), settings=settings,
        notes=tuple(notes), student=distiller.student)
    if out is not None:
        if chief:
            from edgeqd.atomic import write_bytes_atomic
            from edgeqd.strict_json import dumps

            saved = False
            try:
                save_model(distiller.student, out, force=force)
                saved = True
                write_bytes_atomic(report_path(out), dumps(result.to_dict(), "the distillation report", indent=2,
                                                           default=str).encode(), force=force)
            except NoRoomError:  # a full disk: leave nothing of this run behind
                if saved:
                    Path(out).unlink(missing_ok=True)
                if not resume:
                    checkpoints.remove()
                raise
        else:  # every worker saves (collective reads); the others throw theirs away
            from edgeqd.atomic import scratch_dir

            with scratch_dir() as scratch:
                distiller.student.save(scratch / out.name)
        checkpoints.remove()
    return result


class _null_scope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def distill_for_convert(teacher: ModelSpec, data: Union[str, "os.PathLike[str]", Dataset], student: ModelSpec,
                        out: Union[str, Path], *, temperature: float = DEFAULT_TEMPERATURE,
                        alpha: float = DEFAULT_ALPHA, width: Optional[float] = None, epochs: int = 20,
                        batch_size: int = 128, seed: int = 0, force: bool = False,
                        unsafe_deserialization: bool = False, progress: bool = True) -> DistillResult:
    """The distillation step of ``edgeqd convert --distill-from TEACHER --student SPEC``.

    Trains the student with the default recipe (logit KD, early stopping) and saves it
    to ``out`` (plus ``<stem>.distill.json``); convert then converts ``result.student_path``
    (or uses ``result.student`` directly) and can copy ``result.to_dict()`` into its manifest.

    Args:
        teacher: the teacher model path or model.
        data: the convert command's ``--data``.
        student: a built-in family or a model path.
        out: where to save the student, e.g. ``<convert out>/student.keras``.
        temperature: softmax temperature T > 0.
        alpha: weight of the teacher term in [0, 1].
        width: width multiplier of a built-in student (None: sized to the teacher).
        epochs: most epochs.
        batch_size: batch size.
        seed: seed of the run.
        force: replace an existing ``out``.
        unsafe_deserialization: allow Lambda layers in model files.
        progress: show progress on stderr.

    >>> r = distill_for_convert("teacher.keras", "fashion-mnist", "cnn", "out/student.keras")  # doctest: +SKIP
    >>> r.student_path  # doctest: +SKIP
    'out/student.keras'
    """
    return distill(teacher, data, student, out, temperature=temperature, alpha=alpha, width=width, epochs=epochs,
                   batch_size=batch_size, seed=seed, force=force, unsafe_deserialization=unsafe_deserialization,
                   progress=progress)
