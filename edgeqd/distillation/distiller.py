"""The :class:`Distiller`: a ``tf_keras`` model that trains a student against a frozen teacher
with a list of weighted loss terms (:mod:`edgeqd.distillation.losses`)."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import tensorflow as tf
import tf_keras as keras

from edgeqd.distillation.augment import ConsistentView
from edgeqd.distillation.checks import check_compatible
from edgeqd.distillation.layers import feature_shape, find_layer, layer_output, logits_model
from edgeqd.distillation.losses import DistillationLoss, standard_losses
from edgeqd.distillation.recipes import Augmentation
from edgeqd.errors import DistillationError, UsageError
from edgeqd.types import FeatureLoss


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _check_weights(losses: Sequence[DistillationLoss], weights: Optional[Sequence[float]]) -> list[float]:
    """The weights of ``losses`` (1.0 each when None), checked: as many as terms, finite, >= 0."""
    if not losses or not all(isinstance(term, DistillationLoss) for term in losses):
        raise UsageError("losses must be a non-empty list of DistillationLoss terms "
                         "(e.g. LogitsDistillation(4.0), HardLabels())")
    weights = [1.0] * len(losses) if weights is None else list(weights)
    if len(weights) != len(losses):
        raise UsageError(f"{len(weights)} weights for {len(losses)} loss terms; give one weight per term")
    for term, weight in zip(losses, weights):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise UsageError(f"the weight of {term!r} must be a finite number >= 0, got {weight}")
    return [float(w) for w in weights]


class Distiller(keras.Model):
    """A ``tf_keras`` model that trains ``student`` to match a frozen ``teacher``.

    ``fit`` runs a custom ``train_step``: the teacher runs in inference mode
    (``training=False``: batch norm uses its moving statistics, dropout is off)
    outside the gradient tape, and gradients go to the student's weights and the
    terms' own layers (feature projections) only. The loss is Σ weight·term over
    ``losses``; on unlabelled data the terms that need labels are skipped and their
    weight moves to the logit terms, so without labels the standard recipe is the
    teacher term alone, whatever α is. Per-batch figures: ``loss``, one per term name
    (``ce`` with labels, ``kd``, ``feature``, ``attention``), ``accuracy`` (with labels)
    and ``agreement`` (student picks the teacher's class); evaluation adds
    ``teacher_accuracy``.

    Either pass ``losses`` (and ``weights``), or let the keyword shortcuts build the
    standard recipe (:func:`~edgeqd.distillation.losses.standard_losses`).

    Args:
        student: the model to train; it should output logits (a final softmax is
            skipped, see :func:`~edgeqd.distillation.layers.logits_model`). May be a
            TFMOT-quantize-wrapped model.
        teacher: the trained model to learn from; its weights are never updated
            (it is also marked ``trainable = False``).
        losses: the loss terms, e.g. ``[HardLabels(), LogitsDistillation(4.0)]``.
        weights: one weight per term (1.0 each when None).
        temperature: shortcut: softmax temperature T > 0 of the teacher term (default 4).
        alpha: shortcut: weight α in [0, 1] of the teacher term; 1 − α weighs the labels (default 0.9).
        features: shortcut: layer pairs (``"teacher_layer:student_layer"``) whose activations are matched.
        attention: shortcut: layer pairs of conv layers whose spatial attention maps are matched.
        feature_weight: shortcut: weight of each feature term (default 1).
        attention_weight: shortcut: weight of each attention term (default 10).
        feature_loss: shortcut: ``"mse"`` or ``"cosine"``.
        augmentation: the view teacher and student both see in every training step
            (:class:`~edgeqd.distillation.recipes.Augmentation`; consistent teaching); None
            or an inactive one trains on the batch as it is. Evaluation never augments.
        name: the Keras model name.

    Attributes:
        student: the model being trained (its logits version) — the one to save.
        teacher: the teacher's logits version.
        distillation_losses: the terms; ``distillation_loss_weights`` their weights.
        projections: the layers the terms train besides the student.
        notes: remarks such as a skipped softmax.

    >>> import tf_keras as keras
    >>> from edgeqd.distillation.losses import LogitsDistillation
    >>> t = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> s = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> Distiller(s, t, [LogitsDistillation(2.0)]).distillation_losses
    (LogitsDistillation(temperature=2),)
    """

    def __init__(self, student, teacher, losses: Optional[Sequence[DistillationLoss]] = None,
                 weights: Optional[Sequence[float]] = None, *, temperature: Optional[float] = None,
                 alpha: Optional[float] = None, features: Sequence = (), attention: Sequence = (),
                 feature_weight: Optional[float] = None, attention_weight: Optional[float] = None,
                 feature_loss: Union[str, FeatureLoss, None] = None, augmentation: Optional[Augmentation] = None,
                 name: str = "distiller"):
        super().__init__(name=name)
        shortcuts = {"temperature": temperature, "alpha": alpha, "feature_weight": feature_weight,
                     "attention_weight": attention_weight, "feature_loss": feature_loss}
        given = {key: value for key, value in shortcuts.items() if value is not None}
        if losses is None:
            losses, weights = standard_losses(features=features, attention=attention, **given)
        elif given or features or attention:
            raise UsageError("give either losses (with weights) or the keyword shortcuts (temperature, alpha, "
                             "features, attention, their weights, feature_loss), not both")
        # Tuples: the terms are fixed once the extractors are built.
        self.distillation_loss_weights = tuple(_check_weights(list(losses), weights))
        self.distillation_losses = tuple(losses)
        teacher_logits, teacher_note = logits_model(teacher, "teacher")
        student_logits, student_note = logits_model(student, "student")
        self.notes = tuple(n for n in (teacher_note, student_note) if n)
        check_compatible(teacher_logits, student_logits)
        teacher.trainable = False
        teacher_logits.trainable = False
        self.teacher = teacher_logits
        self.student = student_logits
        self._build_extractors()
        self.augmentation = augmentation if augmentation is not None and augmentation.active else None
        self.view = ConsistentView(augmentation, self.student.outputs[0].shape[-1]) if self.augmentation else None
        self.term_names = list(dict.fromkeys(term.name for term in self.distillation_losses))
        self.trackers = {name_: keras.metrics.Mean(name=name_) for name_ in ["loss", *self.term_names, "agreement"]}
        self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.teacher_accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="teacher_accuracy")

    def _build_extractors(self) -> None:
        """One multi-output model per side, ``[logits, *tapped layers]``, sharing the original's layers."""
        teacher_taps, student_taps, self._output_index = [], [], []
        for term in self.distillation_losses:
            if term.pair is None:
                self._output_index.append(0)
                continue
            t_out = layer_output(find_layer(self.teacher, term.pair.teacher_layer, "teacher"), "teacher")
            s_out = layer_output(find_layer(self.student, term.pair.student_layer, "student"), "student")
            teacher_taps.append(t_out)
            student_taps.append(s_out)
            self._output_index.append(len(teacher_taps))
        teacher_outputs = [self.teacher.outputs[0], *teacher_taps]
        student_outputs = [self.student.outputs[0], *student_taps]
        for term, index in zip(self.distillation_losses, self._output_index):
            term.build(feature_shape(teacher_outputs[index]), feature_shape(student_outputs[index]))
        self.teacher_extractor = keras.Model(self.teacher.inputs, teacher_outputs, name="teacher_extractor")
        self.teacher_extractor.trainable = False
        self.student_extractor = keras.Model(self.student.inputs, student_outputs, name="student_extractor")
        self.projections = [layer for term in self.distillation_losses for layer in term.trainable_layers]

    @property
    def metrics(self):
        return [*self.trackers.values(), self.accuracy_metric, self.teacher_accuracy_metric]

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def _weights(self, labelled: bool) -> list[float]:
        """The weights in use: without labels the label terms' weight moves to the logit terms."""
        weights = list(self.distillation_loss_weights)
        if labelled:
            return weights
        moved = sum(w for term, w in zip(self.distillation_losses, weights) if term.needs_labels)
        receivers = [i for i, term in enumerate(self.distillation_losses)
                     if term.pair is None and not term.needs_labels]
        if not receivers:
            raise DistillationError("the data has no labels and no loss term works without them; "
                                    "add a LogitsDistillation term")
        for i in receivers:
            weights[i] += moved / len(receivers)
        return weights

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
            ``{"loss", <term name>: …}`` scalar tensors; terms sharing a name are summed
            (unweighted), ``loss`` is the weighted total.
        """
        terms: dict = {}
        total = None
        for term, weight, index in zip(self.distillation_losses, self._weights(labels is not None),
                                       self._output_index):
            if term.needs_labels and labels is None:
                continue
            value = term.compute_loss(teacher_outputs[index], student_outputs[index], labels)
            terms[term.name] = value if term.name not in terms else terms[term.name] + value
            total = weight * value if total is None else total + weight * value
        return {"loss": total, **terms}

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
            if len(labels.shape) == 2 and labels.shape[-1] == student_logits.shape[-1]:
                labels = tf.argmax(labels, axis=-1)  # mixed labels: the largest share
            self.accuracy_metric.update_state(labels, student_logits)

    def _results(self, labels, evaluation: bool):
        names = [term.name for term in self.distillation_losses if labels is not None or not term.needs_labels]
        keys = ["loss", *dict.fromkeys(names), "agreement"]
        results = {key: self.trackers[key].result() for key in keys}
        if labels is not None:
            results["accuracy"] = self.accuracy_metric.result()
            if evaluation:
                results["teacher_accuracy"] = self.teacher_accuracy_metric.result()
        return results

    def train_step(self, data):
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        if self.view is not None:
            # Consistent teaching: one augmented view (and its mixed labels), seen by both models.
            x, labels = self.view(x, labels)
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
