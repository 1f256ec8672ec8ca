"""QAT or PTQ — the better int8 model ships; native crashes are rows; LSTMs say they were calibrated (issue 13).

Real converters, real runtimes, real crashes: TFLite's calibrator segfaults on a GRU traced
at batch 1 (a QAT export is), which must end as a failed row naming the signal.
"""

from __future__ import annotations

import edgeqd  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np
import pytest

from edgeqd.settings import CalibrationSettings, ConvertSettings, QATSettings, VerifySettings


@pytest.fixture(scope="module")
def wrecked_qat(small_model_path, small_npz, tmp_path_factory):
    """The small CNN's QAT export with its last layer's weights replaced by noise: far worse than PTQ."""
    from edgeqd.converters.export import export_saved_model
    from edgeqd.data import load_for_model
    from edgeqd.models import load_model
    from edgeqd.qat_stage import QATRun
    from edgeqd.quantization.calibrate import calibrate_ranges
    from edgeqd.quantization.prepare import prepare_qat

    model = load_model(small_model_path)
    dataset = load_for_model(model, small_npz)
    prepared = prepare_qat(model, dataset.x_train[:200])
    calibrate_ranges(prepared.qat_model, prepared.float_model, dataset.x_train[:200])
    (kernel,) = [v for v in prepared.qat_model.trainable_weights if v.name.startswith("logits/kernel")]
    kernel.assign(np.random.default_rng(0).standard_normal(kernel.shape).astype("float32"))
    folder = tmp_path_factory.mktemp("wrecked")
    export = export_saved_model(prepared.qat_model, folder / "export-qat", batch=1, output_names=model.output_names)
    validation = np.arange(300)
    run = QATRun(export=export, fake_quant_outputs=np.zeros((0, 10)), section={"selection": {"target": "float model"}},
                 validation=validation, target_logits=model.predict(dataset.x_train[validation], verbose=0),
                 softmax=False)
    return model, dataset, run, folder


@pytest.mark.parametrize("fallback", [True, False])
def test_ptq_ships_when_it_agrees_better_unless_no_fallback(wrecked_qat, fallback, tmp_path):
    from edgeqd.converters import ConversionContext
    from edgeqd.qat_stage import choose_int8

    model, dataset, run, _ = wrecked_qat
    context = ConversionContext(model=model, calibration=dataset.x_train[:100], workdir=tmp_path, qat_export=run.export)
    choice = choose_int8(context, run, dataset, ConvertSettings(qat=QATSettings(fallback=fallback)))
    section = choice.section
    assert section["validation_samples"] == 300 and section["target"] == "float model"
    if fallback:
        assert choice.shipped == "ptq" and "PTQ agrees better" in section["reason"]
        assert section["ptq"]["agreement"] > section["qat"]["agreement"] + 0.2  # noise weights: far apart
    else:
        assert choice.shipped == "qat" and section["reason"] == "--no-fallback" and "ptq" not in section


def _sequences(tmp_path, n=240):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 24, 3)).astype("float32")
    y = (x[:, :, 0].mean(axis=1) > 0).astype(int) + 2 * (x[:, :, 1].mean(axis=1) > 0)
    np.savez(tmp_path / "seq.npz", x=x[:200], y=y[:200], x_val=x[200:], y_val=y[200:])
    return tmp_path / "seq.npz", x[:200], y[:200]


def _recurrent(kind: str, x, y):
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 3), name="seq")
    cell = keras.layers.LSTM(16, name="lstm") if kind == "lstm" else keras.layers.GRU(8, name="gru")
    model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(cell(inputs)))
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return model


def _settings(formats):
    # 100 validation samples of 200, 50 calibration samples: seconds per run.
    return ConvertSettings(formats=formats, calibration=CalibrationSettings(samples=50),
                           verify=VerifySettings(eval_samples=40),
                           qat=QATSettings(epochs=1, validation_samples=100, fallback=False))


@pytest.mark.slow
def test_lstm_qat_ships_a_real_int8_lstm_and_says_it_was_calibrated(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from edgeqd.pipeline import convert

    data, x, y = _sequences(tmp_path)
    result = convert(_recurrent("lstm", x, y), data, tmp_path / "out", _settings(("tflite-int8", "onnx-int8")))
    rows = {a.format: a for a in result.artifacts}
    assert rows["tflite-int8"].status.value == "ok", rows["tflite-int8"].reason
    assert rows["tflite-int8"].details["calibrated_not_trained"] == ["lstm (LSTM)"]
    assert "not trained" in rows["tflite-int8"].details["note"]
    interpreter = Interpreter(model_path=str(tmp_path / "out" / "model_int8.tflite"))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    (lstm,) = [op for op in interpreter._get_ops_details() if op["op_name"] == "UNIDIRECTIONAL_SEQUENCE_LSTM"]
    assert tensors[lstm["inputs"][1]]["dtype"] == np.int8  # its weights: int8, not float
    # ONNX: tf2onnx cannot read TFLite's fused LSTM, so the int8 ONNX is calibrated by ONNX Runtime — and says so.
    onnx = rows["onnx-int8"]
    assert onnx.status.value == "ok", onnx.reason
    assert "calibrated, not QAT" in onnx.details["source"] and "UNIDIRECTIONAL_SEQUENCE_LSTM" in onnx.details["source"]


@pytest.mark.slow
def test_a_calibrator_crash_is_a_failed_row_naming_the_signal(tmp_path):
    from edgeqd.pipeline import convert

    data, x, y = _sequences(tmp_path)
    result = convert(_recurrent("gru", x, y), data, tmp_path / "out", _settings(("tflite-int8", "onnx-fp32")))
    rows = {a.format: a for a in result.artifacts}
    # The QAT export traces the GRU at batch 1, and TFLite's calibrator dies on its while loop.
    assert rows["tflite-int8"].status.value == "failed"
    assert "TFLite int8 conversion (calibration) crashed in native code (SIGSEGV)" in rows["tflite-int8"].reason
    assert rows["onnx-fp32"].status.value == "ok"  # the run went on: the crash took the child, not us
    assert result.problems and (tmp_path / "out" / "manifest.json").is_file()
