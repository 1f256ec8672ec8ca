"""edgeqd convert end to end: real conversion, real runtimes, manifest reproducibility."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeqd.data import calibration_subset
from edgeqd.errors import UsageError
from edgeqd.pipeline import convert, resolve_formats
from edgeqd.settings import CalibrationSettings, ConvertSettings, VerifySettings
from edgeqd.types import Status


def settings(formats, samples=200, max_drop=None):
    """Settings for a run of ``formats`` calibrated on ``samples`` samples."""
    return ConvertSettings(formats=tuple(formats), calibration=CalibrationSettings(samples=samples),
                           verify=VerifySettings(max_drop=max_drop))


def test_every_default_artifact_converts_and_verifies(converted):
    rows = {r.format: r for r in converted.artifacts}
    assert set(rows) == {"tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"}
    assert all(r.status == Status.OK for r in rows.values()), [r.reason for r in rows.values()]
    assert converted.problems == []
    keras_acc = converted.manifest["keras"]["accuracy"]
    assert keras_acc > 0.5  # the tiny CNN learnt something, so accuracy comparisons mean something
    # Float artifacts compute the same function: outputs within float rounding of Keras.
    for name in ("tflite-fp32", "onnx-fp32"):
        assert rows[name].evaluation.mean_abs_diff < 1e-3
        assert rows[name].evaluation.agreement >= 0.995
    # int8: the bar is 1.0 point on the demo teacher; the tiny model gets 2 points of slack.
    for name in ("tflite-int8", "onnx-int8"):
        assert abs(rows[name].accuracy_drop_pts) <= 2.0, rows[name]
        assert rows[name].evaluation.agreement >= 0.95


def test_int8_tflite_is_full_integer_and_four_times_smaller(converted):
    rows = {r.format: r for r in converted.artifacts}
    int8 = rows["tflite-int8"]
    assert int8.inputs[0].dtype == "int8" and int8.outputs[0].dtype == "int8"
    assert len(int8.inputs[0].scale) == 1 and int8.inputs[0].scale[0] > 0
    assert int8.bytes < 0.5 * rows["tflite-fp32"].bytes  # tiny model: graph overhead dominates


def test_manifest_records_versions_digests_and_quantization(converted):
    manifest = json.loads((converted.out / "manifest.json").read_text())
    assert manifest["libraries"]["tensorflow"].startswith("2.21")
    assert len(manifest["input_model"]["sha256"]) == 64
    assert manifest["calibration"]["samples"] == 100
    for entry in manifest["artifacts"]:
        path = converted.out / entry["file"]
        import hashlib

        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert path.stat().st_size == entry["bytes"]
        assert entry["inputs"][0]["shape"][1:] == [28, 28, 1]


def _independent_tflite_predict(path, x):
    """Evaluate with ai_edge_litert directly, one sample at a time (no edgeqd code)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    top1 = []
    for sample in x:
        value = sample[None]
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            value = np.clip(np.round(value / scale + zero), -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], value)
        interpreter.invoke()
        top1.append(int(interpreter.get_tensor(out["index"])[0].argmax()))
    return np.array(top1)


def test_manifest_accuracy_is_reproducible_with_the_runtimes_alone(converted, small_npz):
    import onnxruntime as ort

    data = np.load(small_npz, allow_pickle=False)
    x, y = data["x_val"], data["y_val"]
    manifest = json.loads((converted.out / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        path = converted.out / entry["file"]
        if entry["runtime"] == "tflite":
            top1 = _independent_tflite_predict(path, x)
        else:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            top1 = session.run(None, {name: x})[0].argmax(1)
        # Same samples, same runtimes: the figure must match to the last sample.
        assert float((top1 == y).mean()) == pytest.approx(entry["evaluation"]["accuracy"], abs=1e-9)


def test_onnx_artifacts_carry_metadata(converted):
    import onnx

    model = onnx.load(str(converted.out / "model_int8.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["producer"].startswith("edgeqd")
    assert json.loads(props["input_normalization"]) == {"scale": 1.0, "offset": 0.0}


def test_existing_output_is_kept_without_force(converted, small_model_path, small_npz):
    before = (converted.out / "manifest.json").read_text()
    with pytest.raises(UsageError, match="--force"):
        convert(small_model_path, small_npz, converted.out, settings(["tflite-fp32"]))
    assert (converted.out / "manifest.json").read_text() == before


def test_force_replaces_the_output_atomically(small_model_path, small_npz, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    result = convert(small_model_path, small_npz, out, settings(["tflite-fp32"], samples=10), force=True)
    names = {p.name for p in out.iterdir()}
    assert "stale.txt" not in names and {"manifest.json", "model_fp32.tflite"} <= names
    assert result.problems == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_max_drop_flags_an_int8_model_that_loses_accuracy(small_model_path, fashion, tmp_path):
    # Calibrating on inputs 100× darker than the evaluation images makes int8 clip every
    # activation: a real, large accuracy loss that --max-drop must catch.
    data = tmp_path / "dark_calibration.npz"
    np.savez(data, x=fashion.x_train[:300] * 0.01, y=fashion.y_train[:300],
             x_val=fashion.x_eval[:300], y_val=fashion.y_eval[:300])
    result = convert(small_model_path, data, tmp_path / "out", settings(["tflite-int8"], samples=100, max_drop=1.0))
    row = result.artifacts[0]
    assert row.accuracy_drop_pts > 1.0
    assert len(result.problems) == 1 and "> --max-drop 1.0" in result.problems[0]
    assert f"drop {row.accuracy_drop_pts:.2f} pts" in result.problems[0]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["problems"] == result.problems
    # Past the default warning thresholds too: a warning line, in the manifest as well.
    assert len(result.warnings) == 1 and result.warnings[0].startswith(f"model_int8.tflite: drop "
                                                                       f"{row.accuracy_drop_pts:.2f} pts > 2.0")
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["warnings"] == result.warnings


@pytest.fixture
def wrong_float_format():
    """A float format whose converter ships another model (the same layers, weights shuffled): a broken artifact."""
    from edgeqd.converters import CONVERTERS, register_converter

    @register_converter("tflite-fp32-wrong", filename="model_wrong_fp32.tflite", runtime="tflite", quantized=False,
                        description="test only: a float32 TFLite of the wrong weights")
    def _wrong(context, out_path):
        import tf_keras as keras

        from edgeqd.converters.export import export_saved_model
        from edgeqd.converters.tflite import convert_saved_model

        wrong = keras.models.clone_model(context.model)
        rng = np.random.default_rng(0)
        wrong.set_weights([rng.permutation(w.ravel()).reshape(w.shape) for w in context.model.get_weights()])
        export = export_saved_model(wrong, context.workdir / "export-wrong", batch=None)
        out_path.write_bytes(convert_saved_model(str(export), {"precision": "float32"}, None))
        return {}

    try:
        yield "tflite-fp32-wrong"
    finally:
        CONVERTERS.pop("tflite-fp32-wrong")


def test_a_float_artifact_that_disagrees_with_the_float_model_is_a_failed_row(small_model_path, small_npz, tmp_path,
                                                                             wrong_float_format):
    from edgeqd.errors import ConversionError

    result = convert(small_model_path, small_npz, tmp_path / "out", settings(["tflite-fp32", wrong_float_format]))
    right, wrong = result.artifacts
    assert right.status == Status.OK and right.evaluation.agreement == 1.0
    assert wrong.status == Status.FAILED and wrong.file == ""
    assert "model_wrong_fp32.tflite is a float artifact but agrees with the float model on only" in wrong.reason
    assert not (tmp_path / "out" / "model_wrong_fp32.tflite").exists()  # a failed artifact is not shipped
    assert result.problems == [f"{wrong_float_format} failed: {wrong.reason}"]
    with pytest.raises(ConversionError) as raised:  # the CLI's exit 4
        result.raise_for_problems()
    assert raised.value.exit_code == 4


def test_calibration_subset_is_seeded_and_takes_all_samples_when_fewer(fashion):
    a, note = calibration_subset(fashion, 50, seed=1)
    assert note is None and np.array_equal(a, calibration_subset(fashion, 50, seed=1)[0])
    assert not np.array_equal(a, calibration_subset(fashion, 50, seed=2)[0])
    everything, note = calibration_subset(fashion, 70000)
    assert len(everything) == 60000 and note == "calibrated on all 60000 training samples (70000 asked for)"


def test_unknown_format_names_the_valid_ones():
    with pytest.raises(UsageError, match="unknown format.*tflite-int3.*choose from.*tflite-int8"):
        resolve_formats(["tflite-int3"])


def test_lstm_model_converts_with_stateless_parity_and_an_integration_note(tmp_path):
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((300, 12, 4), dtype=np.float32)
    np.savez(tmp_path / "seq.npz", x=x, y=x.mean(axis=1).argmax(axis=1))
    model = keras.Sequential([keras.Input((12, 4)), keras.layers.LSTM(8), keras.layers.Dense(4)])
    result = convert(model, tmp_path / "seq.npz", tmp_path / "out", settings(["tflite-fp32", "tflite-int8"], 50))
    artifacts = {a["format"]: a for a in result.manifest["artifacts"]}
    assert all(a["status"] == "ok" for a in artifacts.values()), artifacts
    # 60 held-out sequences one after another through a stateful fused kernel: still Keras' answers.
    assert artifacts["tflite-fp32"]["evaluation"]["agreement"] == 1.0
    assert artifacts["tflite-fp32"]["evaluation"]["mean_abs_diff"] < 1e-5
    text = (tmp_path / "out" / "INTEGRATION.md").read_text()
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in text and "resetVariableTensors()" in text
