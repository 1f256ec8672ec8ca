"""edgeqd quantize / edgeqd convert --mode qat: real QAT, real converters, real runtimes.

Tiny models trained for one epoch on a 400-image Fashion-MNIST slice, fine-tuned for
one QAT epoch and evaluated on 200 held-out images, so each run takes seconds.
"""

from __future__ import annotations

import edgeqd  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeqd.cli import cli
from edgeqd.settings import ConvertSettings, QATSettings
from qat_models import conv1d_model, conv_relu_bn_model, mini_xception_model

N_TRAIN, N_EVAL = 400, 200
QAT_FORMATS = "tflite-int8,onnx-int8"
# Keras fake-quant vs int8 TFLite: the same integer grid, but TFLite rounds inside
# fused kernels where the fake-quant graph works in float, so a few borderline
# samples flip on a one-epoch tiny model; 0.9 on 200 samples still catches a wrong
# scale (which lands near chance, ~0.1). The benchmark reports the real figure.
MIN_AGREEMENT = 0.9


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def images_npz(fashion, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("qdata") / "images.npz"
    np.savez(path, x=fashion.x_train[:N_TRAIN], y=fashion.y_train[:N_TRAIN],
             x_val=fashion.x_eval[:N_EVAL], y_val=fashion.y_eval[:N_EVAL])
    return path


@pytest.fixture(scope="module")
def rows_npz(fashion, tmp_path_factory) -> Path:
    """The same images as sequences: 28 time steps of 28 channels, for Conv1D models."""
    path = tmp_path_factory.mktemp("qdata") / "rows.npz"
    np.savez(path, x=fashion.x_train[:N_TRAIN, ..., 0], y=fashion.y_train[:N_TRAIN],
             x_val=fashion.x_eval[:N_EVAL, ..., 0], y_val=fashion.y_eval[:N_EVAL])
    return path


def _trained(model, npz: Path, path: Path) -> Path:
    """Train ``model`` for one epoch on ``npz`` and save it: QAT starts from a trained model."""
    import tf_keras as keras

    data = np.load(npz)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data["x"], data["y"], epochs=1, batch_size=32, verbose=0)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def models(images_npz, rows_npz, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("qmodels")
    return {
        "conv-relu-bn": (_trained(conv_relu_bn_model(), images_npz, folder / "conv_relu_bn.keras"), images_npz),
        "conv1d": (_trained(conv1d_model(), rows_npz, folder / "conv1d.keras"), rows_npz),
        "mini-xception": (_trained(mini_xception_model(extra_float_layers=True), images_npz,
                                   folder / "mini_xception.keras"), images_npz),
    }


# The acceptance models: each must go through `edgeqd convert --mode qat` and say what stayed float.
EXPECTED = {
    "conv-relu-bn": {"rules": {"fused-activation", "batchnorm-affine"}, "float": []},
    "conv1d": {"rules": {"lift-1d"}, "float": []},
    "mini-xception": {"rules": {"separable-conv2d"}, "float": ["LayerNormalization", "TFOpLambda"]},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_convert_mode_qat_succeeds_and_reports_what_stayed_float(name, models, tmp_path):
    model_path, data = models[name]
    out = tmp_path / "out"
    # One case prints the tables (what a user reads), the others JSON (what a script reads).
    as_json = name != "mini-xception"
    # --no-fallback: this test is about the QAT model's rewrites (PTQ may agree as well on a 1-epoch model).
    result = run("convert", model_path, "--data", data, "--out", out, "--mode", "qat", "--epochs", 1,
                 "--formats", QAT_FORMATS, "--no-fallback", *(["--json"] if as_json else []))
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    if as_json:
        assert manifest == json.loads(result.stdout)
    else:
        assert f"parity on {N_EVAL} held-out samples" in result.output
        assert "keras-fake-quant" in result.output and "agrees with tflite-int8" in result.output
        assert "left float: layer_norm (LayerNormalization" in result.output
        # Layer names come from the model (Keras numbers them per process: separable_conv2d_3 in a full run).
        separable = [r["layer"] for r in manifest["quantize"]["rewrites"] if r["rule"] == "separable-conv2d"]
        assert separable and all(f"rewrote {layer} (separable-conv2d)" in result.output for layer in separable)
        assert "int8: QAT shipped — agreement with the float model on 200 validation samples: QAT " in result.output
        # INTEGRATION.md quotes the artifact's own names: the user's input name, no TFMOT FakeQuant names.
        integration = (out / "INTEGRATION.md").read_text()
        assert "`serving_default_image:0`" in integration and "FakeQuant" not in integration
    section = manifest["quantize"]
    assert EXPECTED[name]["rules"] <= {r["rule"] for r in section["rewrites"]}
    assert [f["kind"] for f in section["left_float"]] == EXPECTED[name]["float"]
    assert section["equivalence"]["max_abs_diff"] <= section["equivalence"]["tolerance"] * 100
    assert manifest["calibration"]["mode"] == "qat"
    assert {a["format"]: a["status"] for a in manifest["artifacts"]} == {"tflite-int8": "ok", "onnx-int8": "ok"}
    parity = manifest["parity"]
    assert set(parity["accuracy"]) == {"keras", "keras-fake-quant", "tflite-int8", "onnx-int8"}
    assert parity["agreement"]["keras-fake-quant vs tflite-int8"] >= MIN_AGREEMENT
    # The ONNX model is translated from the QAT TFLite: same integers, same input grid.
    assert parity["agreement"]["tflite-int8 vs onnx-int8"] >= 0.99
    tflite, onnx = manifest["artifacts"]
    assert onnx["inputs"][0]["dtype"] == "int8"
    assert onnx["inputs"][0]["scale"] == pytest.approx(tflite["inputs"][0]["scale"])
    assert onnx["inputs"][0]["zero_point"] == tflite["inputs"][0]["zero_point"]


@pytest.mark.slow
def test_joint_qat_with_teacher_and_feature_kd(models, small_model_path, images_npz, tmp_path):
    import tf_keras as keras

    from edgeqd.models import load_model
    from edgeqd.quantization import quantize

    teacher = load_model(small_model_path)
    student = load_model(models["conv-relu-bn"][0])
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    # Penultimate features: the teacher's flattened map and the student's pooled one (a projection maps them).
    teacher_pool = teacher.layers[-2].name
    student_pool = next(l.name for l in student.layers if isinstance(l, keras.layers.GlobalAveragePooling2D))
    qat = QATSettings(schedule="joint", epochs=1, features=(f"{teacher_pool}:{student_pool}",))
    result = quantize(student, images_npz, tmp_path / "out", ConvertSettings(qat=qat, seed=1), teacher=teacher)
    section = result.manifest["quantize"]
    assert section["schedule"] == "joint" and section["features"] == [f"{teacher_pool}:{student_pool}"]
    assert section["teacher_accuracy"] is not None and section["float_accuracy"] is not None
    # Epoch 0 is the calibrated, untrained model; epoch 1 trained with every distillation term.
    untrained, epoch = section["history"]
    assert untrained["epoch"] == 0 and epoch["epoch"] == 1 and {"kd", "ce", "feature"} <= set(epoch)
    assert section["selection"]["target"] == "teacher" and section["alpha"] == 0.3
    # The teacher is only read; the user's student object is not trained in place.
    assert all(np.array_equal(a, b) for a, b in zip(teacher_before, teacher.get_weights()))
    assert all(np.array_equal(a, b) for a, b in zip(student_before, student.get_weights()))
    assert not result.problems


@pytest.mark.slow
def test_two_phase_distils_in_float_then_qat_from_that_float_model(models, small_model_path, images_npz, tmp_path):
    from edgeqd.quantization import quantize

    qat = QATSettings(schedule="two-phase", epochs=1, train_samples=200)
    result = quantize(models["conv-relu-bn"][0], images_npz, tmp_path / "out", ConvertSettings(qat=qat),
                      teacher=small_model_path)
    section = result.manifest["quantize"]
    # 200 training samples: half fine-tune, half validate.
    assert section["schedule"] == "two-phase" and section["train_samples"] == 100
    assert section["validation_samples"] == 100
    assert [h["epoch"] for h in section["history"]] == [0, 1]
    assert section["selection"]["target"] == "float model distilled from the teacher"
    assert section["float_accuracy_after_distillation"] is not None


def test_ptq_per_tensor_with_entropy_calibration(models, tmp_path):
    model_path, data = models["conv-relu-bn"]
    out = tmp_path / "out"
    result = run("quantize", model_path, "--data", data, "--out", out, "--mode", "ptq", "--per-tensor",
                 "--calibration", "entropy", "--calibration-samples", 50, "--formats", QAT_FORMATS, "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    details = {a["format"]: a["details"] for a in manifest["artifacts"]}
    assert details["onnx-int8"]["calibration_method"] == "entropy"
    assert not details["tflite-int8"]["per_channel"] and not details["onnx-int8"]["per_channel"]
    assert manifest["calibration"]["samples"] == 50
    assert set(manifest["parity"]["accuracy"]) == {"keras", "tflite-int8", "onnx-int8"}


def test_max_drop_applies_to_quantized_artifacts_against_the_float_model():
    from edgeqd.types import ArtifactResult, Evaluation, Status
    from edgeqd.verify import drop_problems

    def row(name, file, accuracy):
        return ArtifactResult(name, file, "tflite", Status.OK, evaluation=Evaluation(200, accuracy, 0.9, 0.1),
                              accuracy_drop_pts=round(100 * (0.85 - accuracy), 3))

    rows = [row("tflite-int8", "model_int8.tflite", 0.80), row("onnx-int8", "model_int8.onnx", 0.845),
            row("tflite-fp32", "model_fp32.tflite", 0.10)]
    problems = drop_problems(rows, 0.85, 1.0, {"tflite-int8", "onnx-int8"})
    assert problems == ["model_int8.tflite top-1 0.8000 vs float 0.8500: drop 5.00 pts > --max-drop 1.0"]


# --------------------------------------------------------------------------- bad input: typed errors, nothing written

@pytest.fixture(scope="module")
def weightless_model(tmp_path_factory) -> tuple[Path, Path]:
    import tf_keras as keras

    folder = tmp_path_factory.mktemp("weightless")
    inputs = keras.Input((10,), name="features")
    model = keras.Model(inputs, keras.layers.Activation("linear")(inputs))
    model.save(folder / "weightless.keras")
    rng = np.random.default_rng(0)
    np.savez(folder / "vectors.npz", x=rng.random((40, 10)).astype("f4"), y=rng.integers(0, 10, 40),
             x_val=rng.random((10, 10)).astype("f4"), y_val=rng.integers(0, 10, 10))
    return folder / "weightless.keras", folder / "vectors.npz"


@pytest.fixture(scope="module")
def five_class_teacher(tmp_path_factory) -> Path:
    import tf_keras as keras

    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Dense(5)(keras.layers.Flatten()(inputs))
    path = tmp_path_factory.mktemp("teacher5") / "teacher5.keras"
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.fixture(scope="module")
def unlabelled_npz(fashion, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("unlabelled") / "unlabelled.npz"
    np.savez(path, x=fashion.x_train[:50], x_val=fashion.x_eval[:20])
    return path


def _bad(case, models, weightless_model, five_class_teacher, unlabelled_npz):
    model_path, data = models["conv-relu-bn"]
    return {
        "epochs-zero": ((model_path, "--data", data, "--epochs", 0), 2, "--epochs must be >= 1, got 0"),
        "no-trainable-weights": ((weightless_model[0], "--data", weightless_model[1]), 3,
                                 "has no trainable weights"),
        # Without labels the float model still teaches (self-distillation); only --no-self-distill needs labels.
        "unlabelled-no-teacher": ((model_path, "--data", unlabelled_npz, "--no-self-distill"), 3,
                                  "has no labels, no --teacher was given and --no-self-distill is set"),
        "teacher-mismatch": ((model_path, "--data", data, "--teacher", five_class_teacher), 3,
                             "the teacher has 5 outputs but the student 10"),
        "teacher-with-ptq": ((model_path, "--data", data, "--mode", "ptq", "--teacher", five_class_teacher), 2,
                             "--teacher applies to quantization-aware training (--mode qat)"),
        "bad-feature-pair": ((model_path, "--data", data, "--teacher", five_class_teacher, "--feature", "nocolon"),
                             2, "write it as teacher_layer:student_layer"),
    }[case]


@pytest.mark.parametrize("case", ["epochs-zero", "no-trainable-weights", "unlabelled-no-teacher",
                                  "teacher-mismatch", "teacher-with-ptq", "bad-feature-pair"])
def test_bad_input_is_a_typed_error_and_nothing_is_written(case, models, weightless_model, five_class_teacher,
                                                           unlabelled_npz, tmp_path):
    args, code, message = _bad(case, models, weightless_model, five_class_teacher, unlabelled_npz)
    out = tmp_path / "out"
    result = run("quantize", *args, "--out", out)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary leftovers


@pytest.mark.slow
def test_strict_fails_on_layers_that_would_stay_float(models, tmp_path):
    model_path, data = models["mini-xception"]
    out = tmp_path / "out"
    result = run("quantize", model_path, "--data", data, "--out", out, "--epochs", 1, "--strict")
    assert result.exit_code == 4, result.output
    assert "--strict: 2 layer(s) would stay float: layer_norm" in result.output
    assert not out.exists()
