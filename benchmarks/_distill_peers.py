"""The peers of benchmarks/distill.py: Keras 3's ``keras.distillation`` and the keras-io recipe.

Both keep the epoch with the best accuracy on the same hold-out split as edgeqd's rows and
are scored on the test split, so every row is picked and measured the same way.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def standin_teacher(input_shape, num_classes: int):
    """A one-layer tf_keras "teacher" for rows whose teacher term has weight 0 (α = 0)."""
    import tf_keras as keras

    inputs = keras.Input(tuple(input_shape))
    x = keras.layers.Flatten()(inputs) if len(tuple(input_shape)) > 1 else inputs
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x), name="standin_teacher")


def _dataset(x, y, batch_size: int, seed: int, tf):
    return tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32))).shuffle(
        len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def to_keras3(model):
    """The same model and weights in Keras 3: saved as legacy ``.h5`` by tf_keras, loaded by Keras 3."""
    import keras  # Keras 3 (TF_USE_LEGACY_KERAS only redirects tf.keras)

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.h5"
        model.save(path)
        converted = keras.saving.load_model(path, compile=False)
    for mine, theirs in zip(model.get_weights(), converted.get_weights()):
        if not np.array_equal(mine, theirs):
            raise RuntimeError("weights changed on the way to Keras 3")
    return converted


def keras3_peer(teacher, student, split, test, epochs: int, batch_size: int, learning_rate: float,
                seed: int, temperature: float = 4.0, alpha: float = 0.9) -> float:
    """Keras 3's Distiller with ``LogitsDistillation(temperature, loss=KLDivergence())``; test accuracy.

    ``student_loss_weight = 1 − α`` (edgeqd's α weighs the teacher term). The loss instance
    matters: the default ``LogitsDistillation()`` looks up ``"kl_divergence"``, gets the
    plain function, and applies neither softmax nor T² (GUIDE §3).
    """
    import keras
    import tensorflow as tf

    x_train, y_train, x_val, y_val = split
    keras.utils.set_random_seed(seed)
    teacher3, student3 = to_keras3(teacher), to_keras3(student)
    teacher3.trainable = False
    distiller = keras.distillation.Distiller(
        teacher=teacher3, student=student3,
        distillation_losses=keras.distillation.LogitsDistillation(temperature=temperature,
                                                                  loss=keras.losses.KLDivergence()),
        student_loss_weight=1.0 - alpha)
    distiller.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    best = {"accuracy": -1.0, "weights": None}

    class KeepBest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            accuracy = float((student3.predict(x_val, batch_size=512, verbose=0).argmax(1) == y_val).mean())
            if accuracy > best["accuracy"]:
                best.update(accuracy=accuracy, weights=student3.get_weights())

    distiller.fit(_dataset(x_train, y_train, batch_size, seed, tf), epochs=epochs, verbose=0, callbacks=[KeepBest()])
    student3.set_weights(best["weights"])
    return float((student3.predict(test[0], batch_size=512, verbose=0).argmax(1) == test[1]).mean())


def keras_io_peer(teacher, student, split, test, epochs: int, batch_size: int, learning_rate: float,
                  seed: int) -> float:
    """The keras-io Distiller (T = 10, α = 0.1 on the student loss), written for tf_keras; test accuracy.

    Same structure as the example: teacher in inference mode, student loss on hard labels,
    KLDivergence of the softened outputs × T², ``α·student + (1 − α)·distillation``.
    """
    import tensorflow as tf
    import tf_keras as keras

    class Distiller(keras.Model):
        def __init__(self, student, teacher):
            super().__init__()
            self.teacher, self.student = teacher, student

        def compile(self, optimizer, metrics, student_loss_fn, distillation_loss_fn, alpha=0.1, temperature=3):
            super().compile(optimizer=optimizer, metrics=metrics)
            self.student_loss_fn, self.distillation_loss_fn = student_loss_fn, distillation_loss_fn
            self.alpha, self.temperature = alpha, temperature

        def train_step(self, data):
            x, y = data
            teacher_predictions = self.teacher(x, training=False)
            with tf.GradientTape() as tape:
                student_predictions = self.student(x, training=True)
                student_loss = self.student_loss_fn(y, student_predictions)
                distillation_loss = self.distillation_loss_fn(
                    tf.nn.softmax(teacher_predictions / self.temperature, axis=1),
                    tf.nn.softmax(student_predictions / self.temperature, axis=1)) * self.temperature ** 2
                loss = self.alpha * student_loss + (1 - self.alpha) * distillation_loss
            variables = self.student.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            self.compiled_metrics.update_state(y, student_predictions)
            return {m.name: m.result() for m in self.metrics}

        def call(self, x):
            return self.student(x)

    x_train, y_train, x_val, y_val = split
    keras.utils.set_random_seed(seed)
    distiller = Distiller(student, teacher)
    distiller.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      metrics=[keras.metrics.SparseCategoricalAccuracy()],
                      student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      distillation_loss_fn=keras.losses.KLDivergence(), alpha=0.1, temperature=10)
    best = {"accuracy": -1.0, "weights": None}

    class KeepBest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            accuracy = float((student.predict(x_val, batch_size=512, verbose=0).argmax(1) == y_val).mean())
            if accuracy > best["accuracy"]:
                best.update(accuracy=accuracy, weights=student.get_weights())

    distiller.fit(_dataset(x_train, y_train, batch_size, seed, tf), epochs=epochs, verbose=0, callbacks=[KeepBest()])
    student.set_weights(best["weights"])
    return float((student.predict(test[0], batch_size=512, verbose=0).argmax(1) == test[1]).mean())
