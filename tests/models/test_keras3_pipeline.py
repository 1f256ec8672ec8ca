"""Keras 3 in, Keras 3 out: Keras 3 models through ``edgeqd convert`` (PTQ and QAT) and ``edgeqd distill``.

Three Keras 3 models a user would bring — a Sequential CNN with preprocessing (Rescaling) and a
softmax head, a functional model with an adapted Normalization and a residual Add, and
``keras.applications.MobileNetV2`` (α 0.35 at 32 px, ``weights=None``) — each trained briefly with
Keras 3 and saved by Keras 3. edgeqd translates them to tf_keras, proves the translation on the
run's real data (the manifest says so), converts, quantizes and distils them; a distilled student
comes back as a Keras 3 ``.keras`` that ``keras.saving.load_model`` reloads with the same outputs.
A ``model.export()`` SavedModel goes through PTQ from its serving signature and is refused by QAT
and distillation; an untranslatable layer is refused by name.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import keras3_zoo
from edgeqd.cli import cli
from edgeqd.distillation import distill
from edgeqd.pipeline import convert
from edgeqd.settings import CalibrationSettings, ConvertSettings, DistillSettings, VerifySettings
from edgeqd.types import Status

# Max |Δ| relative to the output scale between a Keras 3 model and its tf_keras twin (the loader's bar).
PARITY_RTOL = 1e-5
SMALL = dict(calibration=CalibrationSettings(samples=64), verify=VerifySettings(eval_samples=100))


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error: ")]


def _keras3_version(path) -> str:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("metadata.json"))["keras_version"]


def _cnn(keras):
    return keras.Sequential([
        keras.Input((28, 28, 1), name="image"), keras.layers.Rescaling(2.0, offset=-1.0),  # [0, 1] → [-1, 1]
        keras.layers.Conv2D(8, 3, use_bias=False), keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.MaxPooling2D(), keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")], name="k3_cnn")


def _residual(keras, x_adapt):
    inputs = keras.Input((28, 28, 1), name="image")
    norm = keras.layers.Normalization()
    norm.adapt(x_adapt)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(norm(inputs))
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    y = keras.layers.BatchNormalization()(keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x))
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D()(keras.layers.Add()([x, y])))
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="k3_residual")


@pytest.fixture(scope="module")
def keras3_models(fashion, tmp_path_factory):
    """The CNN (.keras and .h5) and the residual model, trained 3 epochs by Keras 3 (~70 %) and saved by it."""
    import keras

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("keras3")
    x, y = fashion.x_train[:1500], fashion.y_train[:1500]
    paths = {}
    for name, model, loss in (("cnn", _cnn(keras), "sparse_categorical_crossentropy"),
                              ("residual", _residual(keras, x[:500]),
                               keras.losses.SparseCategoricalCrossentropy(from_logits=True))):
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
        model.fit(x, y, epochs=3, batch_size=64, verbose=0)
        paths[name] = folder / f"{name}.keras"
        model.save(paths[name])
    keras.saving.load_model(paths["cnn"]).save(folder / "cnn.h5")
    paths["cnn-h5"] = folder / "cnn.h5"
    return paths


@pytest.fixture(scope="module")
def rgb32(fashion, tmp_path_factory):
    """Fashion-MNIST as 32×32×3 (padded, grey to RGB) for MobileNetV2's smallest input: 400 train, 100 held out."""
    def convert_images(x):
        return np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1).astype(np.float32)

    path = tmp_path_factory.mktemp("rgb32") / "rgb32.npz"
    np.savez(path, x=convert_images(fashion.x_train[:400]), y=fashion.y_train[:400],
             x_val=convert_images(fashion.x_eval[:100]), y_val=fashion.y_eval[:100])
    return path


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """keras.applications.MobileNetV2 (α 0.35, 32 px, weights=None) with every variable randomised:
    ``weights=None`` leaves BatchNormalization at identity, where a swapped weight would not show,
    and an epoch of training moves its statistics (momentum 0.999) no further for 40 s."""
    path = tmp_path_factory.mktemp("mobilenet") / "mobilenet_v2.keras"
    keras3_zoo.randomize(keras3_zoo.mobilenet_v2(classes=10)).save(path)
    return path


def _model_and_data(request, name: str, small_npz):
    """The model file and its data; MobileNetV2 (and its 32×32×3 data) built only for the tests that use it."""
    if name == "mobilenet":
        return request.getfixturevalue("mobilenet"), request.getfixturevalue("rgb32")
    return request.getfixturevalue("keras3_models")[name], small_npz


def _check_translated(manifest, samples_from="training data"):
    """The manifest records a proven Keras 3 translation."""
    source = manifest["input_model"]
    assert source["flavour"] == "keras3" and source["keras_version"].startswith("3.")
    parity = source["translation"]["parity"]
    assert parity["sample_source"] == samples_from and parity["samples"] == 64
    assert parity["relative_diff"] <= PARITY_RTOL, parity
    return source


@pytest.mark.parametrize("name", ["cnn", "cnn-h5", "residual"])
def test_keras3_model_converts_with_ptq_and_the_proof_in_the_manifest(keras3_models, small_npz, tmp_path, name):
    result = convert(keras3_models[name], small_npz, tmp_path / "out", ConvertSettings(**SMALL))
    rows = {row.format: row for row in result.artifacts}
    assert all(row.status == Status.OK for row in rows.values()), [row.reason for row in rows.values()]
    source = _check_translated(json.loads((tmp_path / "out" / "manifest.json").read_text()))
    assert source["format"] == ("h5" if name.endswith("h5") else "keras")
    assert "artifacts" in source["returned_as"]
    assert result.manifest["keras"]["accuracy"] > 0.5  # trained: the comparisons below mean something
    # float artifacts compute the Keras 3 model's function (through the translation)
    assert rows["tflite-fp32"].evaluation.agreement >= 0.99 and rows["onnx-fp32"].evaluation.agreement >= 0.99
    # int8: 100 evaluation samples, one sample is 1 point; tiny models get 5 points of slack
    for name in ("tflite-int8", "onnx-int8"):
        assert abs(rows[name].accuracy_drop_pts) <= 5.0, rows[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn", "residual", "mobilenet"])
def test_keras3_model_goes_through_qat(request, small_npz, tmp_path, name):
    path, data = _model_and_data(request, name, small_npz)
    # MobileNetV2's QAT costs minutes on 2 shared cores: one format and fewer samples
    formats, samples = ("tflite-int8", 100) if name == "mobilenet" else ("tflite-int8,onnx-int8", 300)
    result = _cli("convert", path, "--data", data, "--out", tmp_path / "out", "--mode", "qat", "--epochs", 1,
                  "--formats", formats, "--train-samples", samples, "--validation-samples", samples // 3,
                  "--calibration-samples", 32, "--eval-samples", 50)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    source = _check_translated(manifest)
    assert "no Keras 3 form" in source["returned_as"]  # QAT's deliverables are its artifacts
    assert manifest["quantize"]["train_samples"] > 0
    rows = {row["format"]: row for row in manifest["artifacts"]}
    assert set(rows) == set(formats.split(",")) and all(row["status"] == "ok" for row in rows.values()), rows


@pytest.mark.parametrize("name", ["cnn", "residual", pytest.param("mobilenet", marks=pytest.mark.slow)])
def test_keras3_teacher_gives_a_keras3_student_with_the_same_outputs(request, small_npz, tmp_path, name):
    import keras

    teacher, data = _model_and_data(request, name, small_npz)
    out = tmp_path / "student.keras"
    result = distill(teacher, data, DistillSettings(student="cnn", epochs=1, recipe="classic"), out, progress=False)
    assert _keras3_version(out).startswith("3.")
    student = keras.saving.load_model(out)  # Keras 3, safe mode
    x = np.load(data)["x_val"][:64]
    expected = result.student.predict(x, verbose=0)
    difference = np.abs(np.asarray(student.predict(x, verbose=0)) - expected).max()
    assert difference <= PARITY_RTOL * np.abs(expected).max()
    assert any("written for Keras 3" in note for note in result.notes), result.notes
    assert any(note.startswith("teacher: a Keras 3 model translated") for note in result.notes), result.notes
    report = json.loads(out.with_name("student.distill.json").read_text())
    assert any("written for Keras 3" in note for note in report["notes"])


def test_keras3_student_cannot_be_written_as_h5(keras3_models, small_npz, tmp_path):
    result = _cli("distill", "--teacher", keras3_models["cnn"], "--data", small_npz, "--out", tmp_path / "s.h5")
    assert result.exit_code == 2, result.output
    assert "written for Keras 3, as .keras" in _error_lines(result)[0]
    assert not (tmp_path / "s.h5").exists()


def test_convert_distill_from_a_keras3_teacher_keeps_a_keras3_student(keras3_models, small_npz, tmp_path):
    import keras

    result = _cli("convert", "--distill-from", keras3_models["cnn"], "--student", "cnn", "--distill-epochs", 1,
                  "--data", small_npz, "--out", tmp_path / "out", "--calibration-samples", 64, "--eval-samples", 100)
    assert result.exit_code == 0, result.output
    student = tmp_path / "out" / "student.keras"
    assert _keras3_version(student).startswith("3.")
    assert keras.saving.load_model(student).output_shape == (None, 10)


@pytest.fixture(scope="module")
def exported(keras3_models, tmp_path_factory):
    """The CNN as Keras 3's model.export() writes it: a SavedModel with a serving signature and no layers."""
    import keras

    path = tmp_path_factory.mktemp("export") / "cnn_export"
    keras.saving.load_model(keras3_models["cnn"]).export(path, verbose=False)
    return path


def test_exported_savedmodel_converts_with_ptq_from_its_signature(exported, keras3_models, small_npz, tmp_path):
    import keras

    result = convert(exported, small_npz, tmp_path / "out", ConvertSettings(**SMALL))
    rows = {row.format: row for row in result.artifacts}
    assert all(row.status == Status.OK for row in rows.values()), [row.reason for row in rows.values()]
    source = result.manifest["input_model"]
    assert source["flavour"] == "saved_model_serving" and "serving signature" in source["note"]
    # The reference outputs come from the signature itself: they are the Keras 3 model's.
    x = np.load(small_npz)["x_val"][:100]
    original = np.asarray(keras.saving.load_model(keras3_models["cnn"]).predict(x, verbose=0))
    assert rows["tflite-fp32"].evaluation.mean_abs_diff < 1e-5 and rows["onnx-fp32"].evaluation.mean_abs_diff < 1e-5
    assert result.manifest["keras"]["accuracy"] == pytest.approx(
        float((original.argmax(1) == np.load(small_npz)["y_val"][:100]).mean()))


def test_exported_savedmodel_is_refused_by_qat_and_distillation(exported, small_npz, tmp_path):
    for args in (["convert", exported, "--data", small_npz, "--out", tmp_path / "q", "--mode", "qat"],
                 ["distill", "--teacher", exported, "--data", small_npz, "--out", tmp_path / "s.keras"],
                 ["convert", "--distill-from", exported, "--data", small_npz, "--out", tmp_path / "d"]):
        result = _cli(*args)
        assert result.exit_code == 3, result.output
        errors = _error_lines(result)
        assert len(errors) == 1 and "pass the .keras file" in errors[0], result.output
        assert "Traceback" not in result.output
    assert not any(tmp_path.iterdir())


def test_an_untranslatable_layer_stops_the_run_naming_it(small_npz, tmp_path):
    import keras

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.RMSNormalization(name="rms_norm")(keras.layers.Dense(16)(x))  # no tf_keras counterpart
    keras.Model(inputs, keras.layers.Dense(10)(x)).save(tmp_path / "rms.keras")
    result = _cli("convert", tmp_path / "rms.keras", "--data", small_npz, "--out", tmp_path / "out")
    assert result.exit_code == 3, result.output
    (error,) = _error_lines(result)
    assert "rms_norm (RMSNormalization: tf_keras has no layer of that class)" in error
    assert "model.export('DIR')" in error  # what to do
    assert not (tmp_path / "out").exists()
