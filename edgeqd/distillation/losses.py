"""The terms of the distillation loss: each one an object with ``compute_loss``, plus the math.

The edgeqd recipe (:func:`standard_losses`) is the weighted sum

    loss = (1 − α)·CE(y, student) + α·T²·KL(softmax(teacher/T) ‖ softmax(student/T))
           + feature_weight·Σ feature terms + attention_weight·Σ attention terms

(Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"; FitNets, Romero
et al. 2015; attention transfer, Zagoruyko & Komodakis 2017). Each term is a
:class:`DistillationLoss` (:class:`HardLabels`, :class:`LogitsDistillation`,
:class:`FeatureDistillation`, :class:`AttentionTransfer`) handed to the
:class:`~edgeqd.distillation.distiller.Distiller` as a list with weights, in the shape
of Keras 3's ``keras.distillation``. One difference on purpose: Keras 3's default
``LogitsDistillation()`` compares the temperature-scaled logits with the plain function
``keras.losses.get("kl_divergence")`` — no softmax and no T² factor (it only applies
them to a ``KLDivergence`` instance). Ours always does both.

The math is also here as plain functions (:func:`kd_loss`, :func:`distillation_loss`,
:func:`feature_loss`, :func:`attention_loss`) for other training loops.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import tensorflow as tf
import tf_keras as keras

from edgeqd.distillation.layers import make_projection, parse_layer_pairs
from edgeqd.errors import DistillationError, UsageError
from edgeqd.settings import DistillSettings
from edgeqd.types import FeatureLoss, LayerPair

_DEFAULTS = DistillSettings()
DEFAULT_TEMPERATURE = _DEFAULTS.temperature
DEFAULT_ALPHA = _DEFAULTS.alpha
DEFAULT_FEATURE_WEIGHT = _DEFAULTS.feature_weight
DEFAULT_ATTENTION_WEIGHT = _DEFAULTS.attention_weight  # why 10: see DistillSettings.attention_weight


# --------------------------------------------------------------------------- the math

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
    """Cross-entropy of the student's logits against the labels, averaged over the batch.

    Args:
        labels: integer labels, shape (batch,) or (batch, 1); or class probabilities
            (batch, classes), e.g. labels mixed by mixup.
        student_logits: logits, shape (batch, classes).

    >>> import numpy as np
    >>> round(float(hard_label_loss(np.array([0]), np.array([[0., 0.]]))), 4)  # ln 2
    0.6931
    """
    student_logits = tf.convert_to_tensor(student_logits)
    if len(labels.shape) == 2 and labels.shape[-1] == student_logits.shape[-1] and labels.shape[-1] != 1:
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
            labels=tf.cast(labels, tf.float32), logits=tf.cast(student_logits, tf.float32)))
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

    This is the function to call from another training loop: compute both models'
    logits, pass them in.

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


# --------------------------------------------------------------------------- the terms

class DistillationLoss:
    """One term of the distillation loss: which outputs it compares, and how.

    The :class:`~edgeqd.distillation.distiller.Distiller` taps the layers of ``pair``
    (the logits when ``pair`` is None), calls :meth:`build` once with their shapes,
    then :meth:`compute_loss` on every batch, and adds the terms up with their weights.

    Attributes:
        name: the term's key in the per-batch figures and the history (``kd``, ``ce`` …);
            terms with the same name are summed under it.
        pair: the teacher and student layers whose outputs the term compares, or None
            for the logits.
        needs_labels: the term is skipped on unlabelled data.
    """

    name: str = "loss"
    needs_labels: bool = False
    pair: Optional[LayerPair] = None

    def build(self, teacher_shape: tuple, student_shape: tuple) -> None:
        """Check the tapped shapes and create what the term trains (nothing by default).

        Args:
            teacher_shape: per-sample shape of the teacher output the term reads.
            student_shape: per-sample shape of the student output the term reads.
        """

    @property
    def trainable_layers(self) -> list:
        """Layers the term adds whose weights train with the student (e.g. a projection)."""
        return []

    def compute_loss(self, teacher_output, student_output, labels=None):
        """The term's value on one batch, a scalar tensor.

        Args:
            teacher_output: the teacher's logits or tapped feature.
            student_output: the student's, for the same batch.
            labels: integer labels, or None on unlabelled data.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pair or ''})"


class LogitsDistillation(DistillationLoss):
    """The teacher term: T²·KL(softmax(teacher/T) ‖ softmax(student/T)) (see :func:`kd_loss`).

    Args:
        temperature: softmax temperature T > 0.

    >>> import numpy as np
    >>> float(LogitsDistillation(2.0).compute_loss(np.array([[1., 0.]]), np.array([[1., 0.]])))
    0.0
    """

    name = "kd"

    def __init__(self, temperature: float = DEFAULT_TEMPERATURE):
        DistillSettings(temperature=temperature)  # the one check, the one message
        self.temperature = float(temperature)

    def compute_loss(self, teacher_output, student_output, labels=None):
        return kd_loss(teacher_output, student_output, self.temperature)

    def __repr__(self) -> str:
        return f"LogitsDistillation(temperature={self.temperature:g})"


class HardLabels(DistillationLoss):
    """Cross-entropy of the student's logits against the labels (see :func:`hard_label_loss`).

    >>> import numpy as np
    >>> round(float(HardLabels().compute_loss(None, np.array([[0., 0.]]), np.array([1]))), 4)
    0.6931
    """

    name = "ce"
    needs_labels = True

    def compute_loss(self, teacher_output, student_output, labels=None):
        return hard_label_loss(labels, student_output)


class FeatureDistillation(DistillationLoss):
    """Matches a student layer's activations with a teacher layer's (FitNets).

    When the shapes differ, a learned projection maps the student's feature to the
    teacher's (:func:`~edgeqd.distillation.layers.make_projection`); it trains with the student.

    Args:
        pair: ``"teacher_layer:student_layer"`` or a :class:`LayerPair`.
        loss: ``"mse"`` or ``"cosine"`` (see :func:`feature_loss`).

    >>> FeatureDistillation("t_relu2:relu2_2", loss="cosine")
    FeatureDistillation(t_relu2:relu2_2, cosine)
    """

    name = "feature"

    def __init__(self, pair: Union[str, LayerPair], loss: Union[str, FeatureLoss] = FeatureLoss.MSE):
        self.pair = parse_layer_pairs([pair], "--feature")[0]
        try:
            self.kind = FeatureLoss(loss)
        except ValueError:
            raise UsageError(f"--feature-loss {loss!r}: choose mse or cosine") from None
        self.projection = None

    def build(self, teacher_shape: tuple, student_shape: tuple) -> None:
        self.projection = make_projection(self.pair, teacher_shape, student_shape)
        if self.projection is not None:
            self.projection(keras.Input(student_shape))  # build now so weights exist before a restore

    @property
    def trainable_layers(self) -> list:
        return [self.projection] if self.projection is not None else []

    def compute_loss(self, teacher_output, student_output, labels=None):
        if self.projection is not None:
            student_output = self.projection(student_output)
        return feature_loss(teacher_output, student_output, self.kind)

    def __repr__(self) -> str:
        return f"FeatureDistillation({self.pair}, {self.kind.value})"


class AttentionTransfer(DistillationLoss):
    """Matches the normalized spatial attention maps of two conv layers (see :func:`attention_loss`).

    Args:
        pair: ``"teacher_layer:student_layer"`` or a :class:`LayerPair` of conv layers.

    >>> AttentionTransfer("t_relu1:relu1_2").build((4, 4, 8), (64,))
    Traceback (most recent call last):
    edgeqd.errors.DistillationError: --attention t_relu1:relu1_2: the student layer outputs shape (64,); attention transfer needs conv feature maps (H×W×C or T×C)
    """

    name = "attention"

    def __init__(self, pair: Union[str, LayerPair]):
        self.pair = parse_layer_pairs([pair], "--attention")[0]

    def build(self, teacher_shape: tuple, student_shape: tuple) -> None:
        for role, shape in (("teacher", teacher_shape), ("student", student_shape)):
            if len(shape) not in (2, 3):
                raise DistillationError(
                    f"--attention {self.pair}: the {role} layer outputs shape {shape}; attention "
                    "transfer needs conv feature maps (H×W×C or T×C)")

    def compute_loss(self, teacher_output, student_output, labels=None):
        return attention_loss(teacher_output, student_output)


def standard_losses(temperature: float = DEFAULT_TEMPERATURE, alpha: float = DEFAULT_ALPHA,
                    features: Sequence[Union[str, LayerPair]] = (), attention: Sequence[Union[str, LayerPair]] = (),
                    feature_weight: float = DEFAULT_FEATURE_WEIGHT, attention_weight: float = DEFAULT_ATTENTION_WEIGHT,
                    feature_loss: Union[str, FeatureLoss] = FeatureLoss.MSE,
                    ) -> tuple[list[DistillationLoss], list[float]]:
    """The edgeqd recipe as terms and their weights (the module docstring has the formula).

    Args:
        temperature: softmax temperature T > 0 of the teacher term.
        alpha: weight α in [0, 1] of the teacher term; 1 − α weighs the labels.
        features: ``"teacher_layer:student_layer"`` pairs for feature terms.
        attention: pairs of conv layers for attention terms.
        feature_weight: weight of each feature term.
        attention_weight: weight of each attention term.
        feature_loss: ``"mse"`` or ``"cosine"``.

    Returns:
        (losses, weights), two lists of the same length.

    >>> [(repr(term), weight) for term, weight in zip(*standard_losses(2.0, 0.75, features=["a:b"]))]
    [('HardLabels()', 0.25), ('LogitsDistillation(temperature=2)', 0.75), ('FeatureDistillation(a:b, mse)', 1.0)]
    """
    DistillSettings(temperature=temperature, alpha=alpha, feature_weight=feature_weight,
                    attention_weight=attention_weight)
    try:
        FeatureLoss(feature_loss)
    except ValueError:
        raise UsageError(f"--feature-loss {feature_loss!r}: choose mse or cosine") from None
    losses: list[DistillationLoss] = [HardLabels(), LogitsDistillation(temperature)]
    weights = [1.0 - float(alpha), float(alpha)]
    for pair in parse_layer_pairs(features, "--feature"):
        losses.append(FeatureDistillation(pair, feature_loss))
        weights.append(float(feature_weight))
    for pair in parse_layer_pairs(attention, "--attention"):
        losses.append(AttentionTransfer(pair))
        weights.append(float(attention_weight))
    return losses, weights
