"""The demo: train a small CNN teacher on Fashion-MNIST (cached), then convert it.

``make demo`` runs ``python -m edgeqd.demo``. The teacher is trained once with a
fixed seed and cached in the edgeqd cache folder; later runs reuse it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

from edgeqd.data import cache_dir

DEMO_EPOCHS = 4
DEMO_SEED = 0


def demo_teacher_path() -> Path:
    """Where the cached demo teacher lives: ``<cache>/demo/teacher.keras``."""
    return cache_dir() / "demo" / "teacher.keras"


def build_teacher(input_shape=(28, 28, 1), num_classes: int = 10):
    """The demo teacher: a VGG-style CNN with batch norm, ~0.9 M parameters, logits out.

    Args:
        input_shape: shape of one image.
        num_classes: number of output logits.
    """
    import tf_keras as keras
    from tf_keras import layers

    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for filters in (32, 64):
        for _ in range(2):
            # Conv (no activation) → BN → ReLU: the order TFLite and TFMOT fold cleanly.
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="teacher_cnn")


def train_demo_teacher(path: Optional[Path] = None, epochs: int = DEMO_EPOCHS, seed: int = DEMO_SEED,
                       force: bool = False) -> Path:
    """Train the demo teacher on Fashion-MNIST and save it, unless it is cached already.

    Args:
        path: where to save it (default :func:`demo_teacher_path`).
        epochs: training epochs.
        seed: seed for weights, shuffling and dropout.
        force: retrain even when the file exists.

    Returns:
        The path of the saved ``.keras`` model.
    """
    path = Path(path or demo_teacher_path())
    if path.exists() and not force:
        return path
    import tensorflow as tf
    import tf_keras as keras

    from edgeqd.data import load_dataset
    from edgeqd.models import save_model

    keras.utils.set_random_seed(seed)
    data = load_dataset("fashion-mnist")
    model = build_teacher(data.input_shape, len(data.class_names))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, batch_size=128, epochs=epochs, verbose=2,
              validation_data=(data.x_eval, data.y_eval))
    del tf
    save_model(model, path, force=True)
    return path


def main(argv: Optional[list[str]] = None) -> int:
    """Train (or reuse) the teacher, convert it into ``demo_out/``, bench it on this host, write the report."""
    from edgeqd.cli import cli

    print("== edgeqd demo: teacher (cached after the first run)", flush=True)
    teacher = train_demo_teacher()
    print(f"teacher: {teacher}", flush=True)
    out = os.environ.get("EDGEQD_DEMO_OUT", "demo_out")
    args = ["convert", str(teacher), "--data", "fashion-mnist", "--out", out, "--force"]
    print("== edgeqd " + " ".join(args), flush=True)
    code = cli.main(args=args + list(argv or []), prog_name="edgeqd", standalone_mode=False) or 0
    # Latency and memory on this host fill the report's device sections (a few seconds).
    artifacts = [str(Path(out) / name) for name in ("model_int8.tflite", "model_fp32.tflite", "model_int8.onnx")]
    bench_args = ["bench", *artifacts, "--device", "local", "--data", "fashion-mnist", "--threads", "1,2",
                  "--json", str(Path(out) / "bench.json"), "--force"]
    print("== edgeqd " + " ".join(bench_args), flush=True)
    cli.main(args=bench_args, prog_name="edgeqd", standalone_mode=False)
    from edgeqd.reporting import write_report

    report = write_report([out], Path(out) / "report.html", force=True)
    print(f"== report: {report.resolve()} (open it in a browser; `edgeqd report --help` for more)", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
