"""Consistent views: one augmented batch, computed in the graph, that teacher and student both see.

:class:`ConsistentView` turns a batch ``(x, labels)`` into ``(view, targets)``; the
:class:`~edgeqd.distillation.distiller.Distiller` calls it once per training step and runs
the frozen teacher *and* the student on that same ``view`` ("consistent teaching", Beyer
et al. 2022), so the teacher's soft targets always describe what the student sees. Mixup
and CutMix mix the labels with the inputs: ``targets`` are then class probabilities
(batch, classes), which :class:`~edgeqd.distillation.losses.HardLabels` reads as soft labels.

Everything is per sample (offsets, flips, λ, boxes, noise), drawn from TensorFlow's global
seed (``keras.utils.set_random_seed``), in plain TF ops that run under ``tf.function`` and
``tf.distribute``.
"""

from __future__ import annotations

import tensorflow as tf

from edgeqd.distillation.recipes import Augmentation


def _beta(concentration: float, size) -> tf.Tensor:
    """λ ~ Beta(a, a), one per sample (a Beta draw from two Gamma draws)."""
    a = tf.random.gamma(size, concentration)
    b = tf.random.gamma(size, concentration)
    return a / tf.maximum(a + b, 1e-12)


def _broadcast(values, rank: int) -> tf.Tensor:
    """(batch,) → (batch, 1, …, 1) to scale samples of ``rank`` dimensions."""
    return tf.reshape(values, tf.concat([tf.shape(values), tf.ones([rank - 1], tf.int32)], 0))


def random_crop(images, padding: int) -> tf.Tensor:
    """Zero-pad by ``padding`` on each side, then crop each image back at its own random offset.

    Args:
        images: (batch, H, W, C).
        padding: pixels of padding; offsets are uniform in [0, 2·padding].

    >>> import numpy as np
    >>> random_crop(np.ones((2, 4, 4, 1), "float32"), 1).shape
    TensorShape([2, 4, 4, 1])
    """
    images = tf.convert_to_tensor(images, tf.float32)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    offsets = tf.random.uniform([batch, 2], 0, 2 * padding + 1, dtype=tf.int32)
    # Pixel-aligned boxes in the padded image: crop_and_resize samples exactly on the grid.
    size_y = tf.cast(height + 2 * padding - 1, tf.float32)
    size_x = tf.cast(width + 2 * padding - 1, tf.float32)
    y1 = tf.cast(offsets[:, 0], tf.float32)
    x1 = tf.cast(offsets[:, 1], tf.float32)
    boxes = tf.stack([y1 / size_y, x1 / size_x, (y1 + tf.cast(height - 1, tf.float32)) / size_y,
                      (x1 + tf.cast(width - 1, tf.float32)) / size_x], axis=1)
    return tf.image.crop_and_resize(padded, boxes, tf.range(batch), tf.stack([height, width]))


def random_flip(images) -> tf.Tensor:
    """Mirror each image left-right with probability 0.5.

    Args:
        images: (batch, H, W, C).
    """
    flip = tf.random.uniform([tf.shape(images)[0]]) < 0.5
    return tf.where(_broadcast(flip, 4), tf.reverse(images, axis=[2]), images)


def _mix(x, targets, lam, partner):
    """Blend every sample with ``partner``'s: inputs and targets by λ."""
    x_lam = tf.cast(_broadcast(lam, len(x.shape)), x.dtype)
    mixed_x = x_lam * x + (1.0 - x_lam) * tf.gather(x, partner)
    if targets is None:
        return mixed_x, None
    t_lam = lam[:, None]
    return mixed_x, t_lam * targets + (1.0 - t_lam) * tf.gather(targets, partner)


def _cutmix(images, targets, lam, partner):
    """Paste a box of ``partner``'s image covering ≈ (1 − λ) of the area; targets by the exact area."""
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    side = tf.sqrt(1.0 - lam)
    box_h, box_w = side * height, side * width
    centre_y = tf.random.uniform(tf.shape(lam)) * height
    centre_x = tf.random.uniform(tf.shape(lam)) * width
    y1, y2 = tf.clip_by_value(centre_y - box_h / 2, 0, height), tf.clip_by_value(centre_y + box_h / 2, 0, height)
    x1, x2 = tf.clip_by_value(centre_x - box_w / 2, 0, width), tf.clip_by_value(centre_x + box_w / 2, 0, width)
    rows = tf.range(height)[None, :] + 0.5
    cols = tf.range(width)[None, :] + 0.5
    in_rows = tf.logical_and(rows >= y1[:, None], rows < y2[:, None])  # (batch, H)
    in_cols = tf.logical_and(cols >= x1[:, None], cols < x2[:, None])  # (batch, W)
    box = tf.logical_and(in_rows[:, :, None], in_cols[:, None, :])[..., None]  # (batch, H, W, 1)
    mixed = tf.where(box, tf.gather(images, partner), images)
    if targets is None:
        return mixed, None
    kept = 1.0 - tf.reduce_mean(tf.cast(box, tf.float32), axis=[1, 2, 3])  # the area really kept
    return mixed, kept[:, None] * targets + (1.0 - kept[:, None]) * tf.gather(targets, partner)


def jitter_and_scale(sequences, jitter: float, scaling: float) -> tf.Tensor:
    """Sensor-style views (Um et al. 2017): per-channel scaling N(1, scaling²), plus Gaussian jitter.

    The jitter is ``jitter`` times each channel's standard deviation in the batch, so it
    means the same whatever units the data is in.

    Args:
        sequences: (batch, T, C).
        jitter: noise level in channel standard deviations (0 = none).
        scaling: standard deviation of the per-sample, per-channel factor (0 = none).
    """
    x = tf.convert_to_tensor(sequences, tf.float32)
    if scaling:
        factors = tf.random.normal([tf.shape(x)[0], 1, tf.shape(x)[2]], 1.0, scaling)
        x = x * factors
    if jitter:
        spread = tf.math.reduce_std(x, axis=[0, 1], keepdims=True)
        x = x + tf.random.normal(tf.shape(x)) * jitter * spread
    return x


class ConsistentView:
    """The augmentation a Distiller applies once per step, to the batch both models see.

    Args:
        augmentation: what to apply (:class:`~edgeqd.distillation.recipes.Augmentation`).
        num_classes: the number of classes, to turn labels into mixable probabilities.

    >>> import numpy as np
    >>> view = ConsistentView(Augmentation(mixup=1.0), 3)
    >>> x, targets = view(np.eye(3, dtype="float32"), np.array([0, 1, 2]))
    >>> np.allclose(x.numpy(), targets.numpy())  # an identity batch mixes like its one-hot labels
    True
    """

    def __init__(self, augmentation: Augmentation, num_classes: int):
        self.augmentation = augmentation
        self.num_classes = int(num_classes)

    def _mixing(self, x, targets):
        """Mixup or CutMix with a shuffled partner (one of the two per batch when both are on)."""
        spec = self.augmentation
        batch = tf.shape(x)[0]
        partner = tf.random.shuffle(tf.range(batch))
        image = len(x.shape) == 4
        use_cutmix = spec.cutmix > 0 and image
        if spec.mixup > 0 and use_cutmix:
            lam_mix, lam_cut = _beta(spec.mixup, [batch]), _beta(spec.cutmix, [batch])
            coin = tf.random.uniform([]) < 0.5
            mixed = _mix(x, targets, lam_mix, partner)
            cut = _cutmix(x, targets, lam_cut, partner)
            pick = (lambda a, b: tf.where(coin, a, b))
            return pick(mixed[0], cut[0]), (None if targets is None else pick(mixed[1], cut[1]))
        if use_cutmix:
            return _cutmix(x, targets, _beta(spec.cutmix, [batch]), partner)
        return _mix(x, targets, _beta(spec.mixup, [batch]), partner)

    def __call__(self, x, labels=None):
        """The view of a batch and its targets.

        Args:
            x: a batch of inputs.
            labels: integer labels (batch,) or None (unlabelled).

        Returns:
            ``(view, targets)``: targets are the labels unchanged, or (batch, classes)
            probabilities when mixup/CutMix mixed them; None without labels.
        """
        spec = self.augmentation
        x = tf.cast(x, tf.float32)
        rank = len(x.shape)
        if rank == 4 and spec.crop:
            x = random_crop(x, spec.crop)
        if rank == 4 and spec.flip:
            x = random_flip(x)
        if rank == 3 and (spec.jitter or spec.scaling):
            x = jitter_and_scale(x, spec.jitter, spec.scaling)
        targets = labels
        if spec.mixup > 0 or (spec.cutmix > 0 and rank == 4):
            if labels is not None:
                targets = tf.one_hot(tf.reshape(tf.cast(labels, tf.int32), [-1]), self.num_classes)
            x, targets = self._mixing(x, targets)
        return x, targets
