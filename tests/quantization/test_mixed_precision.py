"""``--precision auto --max-drop``: per-layer int4/int8 weights searched on training samples, checked held out."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from lowbit_helpers import float_tflite, weighty_model

from edgeqd.cli import cli


@pytest.fixture(scope="module")
def model(fashion):
    return weighty_model(fashion)


@pytest.fixture(scope="module")
def mixed_run(model, fashion, tmp_path_factory):
    from edgeqd.pipeline import convert
    from edgeqd.settings import CalibrationSettings, ConvertSettings, VerifySettings
    from edgeqd.types import Dataset

    # Training samples 2000..3999 are the search split; the evaluation split is Fashion-MNIST's test set.
    data = Dataset("fashion-slice", fashion.x_train[2000:4000], fashion.y_train[2000:4000], fashion.x_eval[:1000],
                   fashion.y_eval[:1000], fashion.class_names, fashion.normalization)
    settings = ConvertSettings(formats=("tflite-int8", "tflite-w4a8"),
                               calibration=CalibrationSettings(samples=200, precision="auto"),
                               verify=VerifySettings(max_drop=1.0))
    result = convert(model, data, tmp_path_factory.mktemp("mixed") / "run", settings)
    result.raise_for_problems()  # the held-out drop of every artifact is within --max-drop
    return {a["format"]: a for a in result.manifest["artifacts"]}


def test_auto_ships_a_mixed_tflite_and_onnx_within_budget_and_smaller_than_int8(mixed_run):
    for fmt in ("tflite-mixed", "onnx-mixed"):
        entry = mixed_run[fmt]
        assert entry["status"] == "ok" and entry["file"] == f"model_mixed.{fmt.split('-')[0]}"
        # Measured on the 1,000 held-out samples the search never saw.
        assert entry["accuracy_drop_pts"] <= 1.0
        assert entry["details"]["search"]["samples"] == 2000 and entry["details"]["search"]["labelled"]
    tflite = mixed_run["tflite-mixed"]
    assert tflite["bytes"] < 0.8 * mixed_run["tflite-int8"]["bytes"]  # the big Dense can go int4 here
    layers = {row["layer"]: row["bits"] for row in tflite["details"]["layers"]}
    assert set(layers) == {"conv", "dw", "fc", "logits"} and layers["dw"] == 8 and layers["fc"] == 4
    # The file stores what the plan says (read back from the flatbuffer), and the ONNX twin the same bits.
    stored = {row["layer"]: row["bits"] for row in tflite["details"]["weights"]}
    assert stored == layers
    onnx_bits = {row["layer"]: row["dtype"] for row in mixed_run["onnx-mixed"]["details"]["weights"]}
    assert onnx_bits["fc"] == "int4" and all(onnx_bits[name] == f"int{bits}" for name, bits in layers.items()
                                             if name in onnx_bits)
    assert "search drop" in tflite["details"]["note"]


def test_search_promotes_layers_until_the_target_and_says_when_it_cannot(model, fashion, tmp_path):
    from edgeqd.quantization.mixed import search_mixed

    source = float_tflite(model, tmp_path)
    x, y = fashion.x_train[2000:2600], fashion.y_train[2000:2600]
    # A budget of 0 points with a one-sided margin cannot be met: every layer is promoted to int8.
    strict = search_mixed(source, fashion.x_train[:200], x, y, 0.0, tmp_path)
    assert {row["bits"] for row in strict["layers"]} == {8} and strict["search"]["met"] is False
    order = strict["search"]["promotion_order"]
    assert sorted(r["layer"] for r in order) == ["conv", "fc", "logits"]  # depthwise has no int4 to leave
    assert len(strict["search"]["steps"]) == 1 + len(order)
    assert strict["search"]["steps"][-1]["bytes"] > strict["search"]["steps"][0]["bytes"]
    # A generous budget keeps every layer that can be int4 at int4.
    loose = search_mixed(source, fashion.x_train[:200], x, y, 50.0, tmp_path)
    assert {row["layer"]: row["bits"] for row in loose["layers"]} == {"conv": 4, "dw": 8, "fc": 4, "logits": 4}
    assert loose["search"]["met"] and len(loose["model"]) < len(strict["model"])


def test_precision_auto_needs_a_budget(tmp_path):
    result = CliRunner().invoke(cli, ["convert", "m.keras", "--data", "fashion-mnist", "--out", str(tmp_path / "o"),
                                      "--precision", "auto"])
    assert result.exit_code == 2 and "--precision auto needs --max-drop" in result.output
    assert not (tmp_path / "o").exists()


def test_standard_error_margin():
    from edgeqd.quantization.mixed import standard_error

    assert standard_error(1.0, 2000) == pytest.approx(100 * np.sqrt(1 / 2000) / np.sqrt(2000), abs=1e-3)
    assert standard_error(0.9, 1000) > standard_error(0.99, 1000)
