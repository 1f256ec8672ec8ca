"""Integer inputs (token ids) stay integer through every format, are never quantized, and calibrate as they are.

The model is the text classifier of issue 12 — Embedding + MultiHeadAttention + LayerNormalization +
GlobalAveragePooling1D + Dense on int32 token ids — trained for a few epochs on a rule the
attention can learn, converted by the real pipeline and run in LiteRT and ONNX Runtime.
"""

from __future__ import annotations

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import json

import numpy as np
import pytest

VOCAB, LENGTH = 40, 10


def text_classifier(seed: int = 0):
    """Embedding → MHA (+ residual) → LayerNorm → mean over tokens → softmax over 2 classes."""
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(seed)
    tokens = keras.Input((LENGTH,), dtype="int32", name="tokens")
    x = layers.Embedding(VOCAB, 16)(tokens)
    x = layers.LayerNormalization()(layers.Add()([x, layers.MultiHeadAttention(2, 8)(x, x)]))
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, layers.Dense(2, activation="softmax", name="probs")(x), name="text_classifier")


def token_data(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCAB, (n, LENGTH))  # int64 as numpy makes them; the loader casts to the model's int32
    y = (x[:, :3].mean(axis=1) >= VOCAB / 2).astype(np.int64)
    return x, y


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """The trained text classifier converted to the four default formats (PTQ)."""
    from edgeqd.pipeline import convert
    from edgeqd.settings import CalibrationSettings, ConvertSettings

    folder = tmp_path_factory.mktemp("text")
    x, y = token_data()
    model = text_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)
    np.savez(folder / "tokens.npz", x=x, y=y)
    result = convert(model, folder / "tokens.npz", folder / "out", ConvertSettings(
        calibration=CalibrationSettings(samples=100)))
    return result, folder / "out"


def test_token_ids_stay_int32_in_every_artifact_and_agree(text_run):
    result, out = text_run
    assert not result.problems, result.problems
    for row in result.artifacts:
        assert row.inputs[0].dtype == "int32" and not row.inputs[0].scale, row  # never quantized
        # Float artifacts compute the model; int8 ones agree on the 80 held-out sequences all but rarely.
        assert row.evaluation.agreement >= (0.99 if row.dtype == "float32" else 0.95), row
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["input_dtype"] == "int32"


def test_int8_tflite_quantizes_embedding_attention_and_dense_and_lists_what_stays_float(text_run):
    from edgeqd.artifact_info import inspect_artifact

    _, out = text_run
    tflite = inspect_artifact(out / "model_int8.tflite")
    # LiteRT has int8 kernels for all of it: GATHER (the embedding), BATCH_MATMUL/SOFTMAX (attention),
    # FULLY_CONNECTED, and LayerNormalization's MEAN/SQUARED_DIFFERENCE/RSQRT.
    assert tflite["quantization"] == "full-int8" and tflite["float_fallback"] == []
    integer = {row["type"] for row in tflite["operators"] if not row["float"]}
    assert {"GATHER", "BATCH_MATMUL", "FULLY_CONNECTED", "SOFTMAX", "RSQRT"} <= integer
    onnx = inspect_artifact(out / "model_int8.onnx")
    # ONNX Runtime's quantizer leaves LayerNormalization's decomposition float: listed, not hidden.
    assert onnx["quantization"] == "int8 (QDQ) with float fallback" and onnx["float_fallback"]
    assert any(op.startswith(("ReduceMean", "Div")) for op in onnx["float_fallback"])
    for name in ("model_fp32.tflite", "model_fp32.onnx"):  # int32 index ops do not make a float model "int8"
        assert inspect_artifact(out / name)["quantization"] == "float32"


def test_integration_and_metadata_say_token_ids_and_probabilities(text_run):
    import onnx

    from edgeqd.bundle import read_metadata_props

    _, out = text_run
    guide = (out / "INTEGRATION.md").read_text()
    assert "Feed the token ids (indices) as int32" in guide and "input.putInt(p)" in guide
    assert "probabilities already" in guide and "`softmax(y)` gives probabilities" not in guide
    props = read_metadata_props(onnx.load(str(out / "model_int8.onnx")))
    assert props["output"] == "probabilities" and props["output_activation"] == "softmax"


def test_the_runner_passes_token_ids_as_they_are(text_run):
    from edgeqd.devices import runner

    _, out = text_run
    x, _ = token_data(20, seed=3)
    model = runner.open_model(str(out / "model_int8.tflite"))
    prepared = model.prepare(x.astype(np.int32))
    assert prepared.dtype == np.int32 and np.array_equal(prepared, x)  # not quantized with a scale of 0
    # Ids that reached it as floats (an older .npz) are rounded back, not scaled.
    assert np.array_equal(model.prepare(x.astype(np.float32)), x)


def test_calibration_feeds_token_ids_in_the_input_dtype():
    from edgeqd.converters.onnx import _CalibrationReader
    from edgeqd.converters.tflite import representative_dataset

    ids = np.arange(20, dtype=np.int32).reshape(2, 10)
    assert [s[0].dtype for s in representative_dataset(ids)()] == [np.int32, np.int32]
    assert _CalibrationReader("tokens", ids).get_next()["tokens"].dtype == np.int32
    assert _CalibrationReader("image", ids.astype(np.float64)).get_next()["image"].dtype == np.float32


def test_the_loader_keeps_ids_integer_for_an_integer_model(tmp_path):
    from edgeqd.data import load_dataset, load_for_model
    from edgeqd.errors import DataError

    x, y = token_data(50)
    np.savez(tmp_path / "ids.npz", x=x, y=y)
    dataset = load_for_model(text_classifier(), tmp_path / "ids.npz")
    assert dataset.x_train.dtype == np.int32 and np.array_equal(np.sort(np.concatenate(
        [dataset.x_train, dataset.x_eval]), axis=0), np.sort(x, axis=0))
    assert load_dataset(tmp_path / "ids.npz").x_train.dtype == np.float32  # a float model still gets float32
    np.savez(tmp_path / "halves.npz", x=x + 0.5, y=y)
    with pytest.raises(DataError, match="input is int32 .* not whole numbers"):
        load_for_model(text_classifier(), tmp_path / "halves.npz")
