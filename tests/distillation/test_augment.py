"""Consistent views: what each augmentation does to a batch and its labels, and that the
Distiller shows the teacher the very batch the student trains on (and evaluates unaugmented)."""

from __future__ import annotations

import numpy as np
import pytest

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from edgeqd.distillation.augment import ConsistentView, jitter_and_scale, random_crop, random_flip
from edgeqd.distillation.recipes import Augmentation

# float32 bilinear sampling exactly on the pixel grid: the crop reproduces pixels to ~1e-6.
PIXEL_TOL = 1e-5


def _images(n=16, size=12, seed=0):
    """Real Fashion-MNIST images (centre crops of size × size, to keep the offset search short),
    or seeded noise where the data is not installed."""
    from edgeqd.data import find_fashion_mnist

    if find_fashion_mnist() is None:
        return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 1)).astype("float32")
    from distill_helpers import fashion_slices

    start = (28 - size) // 2
    return fashion_slices()[1].x_train[seed:seed + n, start:start + size, start:start + size].astype("float32")


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image():
    import tensorflow as tf

    tf.random.set_seed(0)
    x = _images()
    padding = 2
    out = random_crop(x, padding).numpy()
    padded = np.pad(x, [(0, 0), (padding, padding), (padding, padding), (0, 0)])
    offsets = []
    for image, source in zip(out, padded):
        matches = [(dy, dx) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)
                   if np.allclose(image, source[dy:dy + image.shape[0], dx:dx + image.shape[1]], atol=PIXEL_TOL)]
        assert matches, "a crop that is no window of the padded image"
        offsets.append(matches[0])
    assert len(set(offsets)) > 3  # each image gets its own offset


def test_random_flip_mirrors_some_images_and_keeps_the_others():
    import tensorflow as tf

    tf.random.set_seed(1)
    x = _images(32)
    out = random_flip(x).numpy()
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)]
    kept = [np.array_equal(o, i) for o, i in zip(out, x)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)


@pytest.mark.parametrize("augmentation", [Augmentation(mixup=1.0), Augmentation(cutmix=1.0),
                                          Augmentation(mixup=0.4, cutmix=1.0)])
def test_mixed_labels_follow_the_mixed_images(augmentation):
    # Each image is filled with its label's value, so a mixed image's mean is Σ c·target[c]:
    # the targets must carry exactly the shares of the pixels (mixup: λ; CutMix: the pasted area).
    import tensorflow as tf

    tf.random.set_seed(2)
    labels = np.arange(32) % 5
    x = np.broadcast_to(labels[:, None, None, None], (32, 8, 8, 1)).astype("float32")
    view, targets = ConsistentView(augmentation, 5)(x, labels)
    targets = targets.numpy()
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
    expected = view.numpy().mean(axis=(1, 2, 3))
    np.testing.assert_allclose((targets * np.arange(5)).sum(axis=1), expected, atol=1e-5)
    assert (targets.max(axis=1) < 1 - 1e-3).any()  # something was actually mixed


def test_mixup_on_one_hot_vectors_gives_targets_equal_to_the_inputs():
    import tensorflow as tf

    tf.random.set_seed(3)
    labels = np.arange(12) % 4
    x = np.eye(4, dtype="float32")[labels]
    view, targets = ConsistentView(Augmentation(mixup=0.5), 4)(x, labels)
    np.testing.assert_allclose(view.numpy(), targets.numpy(), atol=1e-6)


def test_unlabelled_batches_are_augmented_without_targets():
    view, targets = ConsistentView(Augmentation(crop=1, mixup=1.0), 3)(_images(4))
    assert targets is None and view.shape == (4, 12, 12, 1)


def test_sequence_jitter_and_scaling_are_per_channel_and_relative_to_the_data():
    import tensorflow as tf

    tf.random.set_seed(4)
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(256, 50, 2)) * np.array([1.0, 100.0])).astype("float32")  # channels 100× apart
    jittered = jitter_and_scale(x, jitter=0.1, scaling=0.0).numpy()
    noise = (jittered - x).std(axis=(0, 1))
    # 0.1 channel standard deviations of noise in each channel's own units (±10%: 12,800 draws).
    np.testing.assert_allclose(noise, 0.1 * x.std(axis=(0, 1)), rtol=0.1)
    scaled = jitter_and_scale(x, jitter=0.0, scaling=0.2).numpy()
    factors = scaled[:, 0, :] / x[:, 0, :]
    np.testing.assert_allclose(scaled / factors[:, None, :], x, rtol=1e-4)  # one factor per sample and channel
    assert abs(factors.std() - 0.2) < 0.03 and abs(factors.mean() - 1.0) < 0.03


# --------------------------------------------------------------------------- inside train_step

def _recording_model(name: str, batch: int):
    """Input → a layer that stores the batch it is called on → flatten → 3 logits."""
    import tensorflow as tf
    import tf_keras as keras

    class Record(keras.layers.Layer):
        def build(self, input_shape):
            self.seen = tf.Variable(tf.zeros((batch, *input_shape[1:])), trainable=False, name="seen")

        def call(self, inputs):
            self.seen.assign(inputs)
            return inputs

    inputs = keras.Input((4, 4, 1))
    x = Record(name=f"{name}_record")(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name=f"{name}_logits")(x), name=name)


def test_teacher_outputs_in_train_step_come_from_the_augmented_batch_the_student_sees():
    import tf_keras as keras

    from edgeqd.distillation import Distiller, HardLabels, LogitsDistillation

    keras.utils.set_random_seed(5)
    batch = 8
    teacher, student = _recording_model("teacher", batch), _recording_model("student", batch)
    distiller = Distiller(student, teacher, [HardLabels(), LogitsDistillation(2.0)], [0.5, 0.5],
                          augmentation=Augmentation(crop=1, flip=True, mixup=1.0))
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(5).uniform(0.1, 1, (batch, 4, 4, 1)).astype("float32")
    y = np.arange(batch) % 3
    distiller.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    seen_by_teacher = teacher.get_layer("teacher_record").seen.numpy()
    seen_by_student = student.get_layer("student_record").seen.numpy()
    np.testing.assert_array_equal(seen_by_teacher, seen_by_student)  # one view for both
    assert not np.allclose(seen_by_teacher, x)  # and it is an augmented one
    # Evaluation shows both models the data as it is.
    distiller.evaluate(x, y, batch_size=batch, verbose=0)
    np.testing.assert_array_equal(teacher.get_layer("teacher_record").seen.numpy(), x)
    np.testing.assert_array_equal(student.get_layer("student_record").seen.numpy(), x)


def test_an_inactive_augmentation_leaves_the_step_as_it_was():
    from edgeqd.distillation import Distiller, LogitsDistillation

    teacher, student = _recording_model("teacher", 2), _recording_model("student", 2)
    assert Distiller(student, teacher, [LogitsDistillation(2.0)], augmentation=Augmentation()).view is None
