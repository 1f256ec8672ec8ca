"""``bench --data FOLDER`` loads images the way convert does: resized to the artifact's input, channels matched."""

from __future__ import annotations

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import numpy as np
from click.testing import CliRunner

from edgeqd.cli import cli


def _rgb_folder(folder, fashion, per_class=4):
    """Fashion-MNIST images of two classes, upscaled to 40×40 RGB PNGs in class sub-folders (0..255)."""
    import tensorflow as tf

    for label in (0, 1):
        (folder / f"class_{label}").mkdir(parents=True)
        images = fashion.x_train[fashion.y_train == label][:per_class]
        for i, image in enumerate(images):
            rgb = tf.image.resize(tf.image.grayscale_to_rgb(tf.constant(image * 255.0)), (40, 40))
            png = tf.io.encode_png(tf.cast(tf.round(rgb), tf.uint8)).numpy()
            (folder / f"class_{label}" / f"{i}.png").write_bytes(png)
    return folder


def test_prepare_data_resizes_and_matches_channels(converted, fashion, tmp_path):
    from edgeqd.devices.bench import prepare_data

    folder = _rgb_folder(tmp_path / "images", fashion)
    artifact = converted.out / "model_int8.tflite"  # takes 28×28×1
    (tmp_path / "ship").mkdir()
    shipped = np.load(prepare_data(folder, 100, None, tmp_path / "ship", artifacts=[artifact]))
    # 8 images, 20 % held out as in convert: 2 evaluation samples, decoded as grey and resized.
    assert shipped["x"].shape == (2, 28, 28, 1) and shipped["x"].dtype == np.float32
    assert set(shipped["y"].tolist()) <= {0, 1}


def test_bench_with_an_image_folder_runs(converted, fashion, tmp_path):
    folder = _rgb_folder(tmp_path / "images", fashion)
    result = CliRunner().invoke(cli, ["bench", str(converted.out / "model_fp32.tflite"), "--device", "local",
                                      "--data", str(folder), "--runs", "3", "--warmup", "1", "--min-seconds", "0"])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
