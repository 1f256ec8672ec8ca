"""A regression head through convert, the bundle and bench: MAE, not accuracy; values, not a softmax.

A small real regression model (Dense layers, one linear output) trained on a synthetic target,
converted to the four default formats by the CLI and run in LiteRT and ONNX Runtime.
"""

from __future__ import annotations

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeqd.cli import cli


def _data(n=500, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (2.0 * x[:, 0] + np.sin(x[:, 1]) + 0.1 * rng.normal(size=n)).astype(np.float32)


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    """The trained model, data with targets and x-only data, and one CLI convert run."""
    import tf_keras as keras

    folder = tmp_path_factory.mktemp("regression")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,), name="features"), keras.layers.Dense(24, activation="relu"),
                              keras.layers.Dense(1, name="value")], name="regressor")
    x, y = _data()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(x, y, epochs=20, batch_size=32, verbose=0)
    model.save(folder / "regressor.keras")
    np.savez(folder / "targets.npz", x=x, y=y)
    np.savez(folder / "x_only.npz", x=x)
    result = CliRunner().invoke(cli, ["convert", str(folder / "regressor.keras"), "--data", str(folder / "targets.npz"),
                                      "--out", str(folder / "out"), "--calibration-samples", "100"])
    return folder, result


def test_the_convert_table_and_manifest_say_regression_with_mae(regression):
    folder, result = regression
    assert result.exit_code == 0, result.output
    assert "regression" in result.output and "MAE" in result.output and "agreement" not in result.output
    manifest = json.loads((folder / "out" / "manifest.json").read_text())
    keras = manifest["keras"]
    assert keras["task"] == "regression" and keras["accuracy"] is None and 0 < keras["mae"] < 0.5
    assert manifest["data"]["task"] == "regression" and manifest["output"]["kind"] == "regression"
    for artifact in manifest["artifacts"]:
        ev = artifact["evaluation"]
        assert ev["accuracy"] is None and ev["agreement"] is None and ev["mae"] > 0
        assert artifact["accuracy_drop_pts"] is None and artifact["mae_increase_pct"] is not None
        if artifact["dtype"] == "float32":  # float artifacts compute the model: same MAE to float32 rounding
            assert abs(artifact["mae_increase_pct"]) < 0.01 and ev["max_abs_diff"] < 1e-4
        else:  # int8 of a 6-24-1 net: a few percent more MAE (5.6 % seen on a similar net)
            assert artifact["mae_increase_pct"] < 25.0
    assert set(manifest["parity"]["mae"]) == {"keras", "tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"}


def test_metadata_integration_and_labels_say_regression_values(regression):
    import onnx

    from edgeqd.artifact_info import inspect_artifact
    from edgeqd.bundle import read_metadata_props

    folder, _ = regression
    out = folder / "out"
    embedded = inspect_artifact(out / "model_int8.tflite")["metadata"]["edgeqd"]
    assert embedded["task"] == "regression" and embedded["output"] == "regression"
    assert "regression values" in inspect_artifact(out / "model_int8.tflite")["metadata"]["TFLITE_METADATA"][
        "outputs"][0]["description"]
    assert read_metadata_props(onnx.load(str(out / "model_int8.onnx")))["task"] == "regression"
    guide = (out / "INTEGRATION.md").read_text()
    assert "Task: regression" in guide and "softmax(y)" not in guide and "No argmax, no softmax" in guide
    assert "| MAE |" in guide and "float* values" in guide  # the TFLM snippet returns the values
    assert (out / "labels.txt").read_text() == "output_0\n"


def test_max_drop_limits_the_relative_mae_increase(regression):
    folder, _ = regression
    result = CliRunner().invoke(cli, ["convert", str(folder / "regressor.keras"), "--data", str(folder / "targets.npz"),
                                      "--out", str(folder / "strict"), "--formats", "tflite-int8",
                                      # 3 calibration samples: ranges too narrow, clipped outputs, a larger MAE
                                      "--calibration-samples", "3", "--max-drop", "1"])
    assert result.exit_code == 4, result.output
    assert "MAE" in result.output and "relative increase of MAE, in percent" in result.output


def test_x_only_data_on_a_single_output_reports_differences_not_agreement(regression, tmp_path):
    folder, _ = regression
    result = CliRunner().invoke(cli, ["convert", str(folder / "regressor.keras"), "--data", str(folder / "x_only.npz"),
                                      "--out", str(tmp_path / "out"), "--formats", "tflite-fp32,tflite-int8",
                                      "--calibration-samples", "100"])
    assert result.exit_code == 0, result.output
    assert "100.00%" not in result.output and "max |Δ|" in result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    for artifact in manifest["artifacts"]:
        assert artifact["evaluation"]["agreement"] is None and artifact["evaluation"]["max_abs_diff"] is not None
    guide = (tmp_path / "out" / "INTEGRATION.md").read_text()
    assert "softmax(y)" not in guide and "No argmax, no softmax" in guide


def test_bench_reports_mae_for_regression_targets(regression):
    from edgeqd.devices import bench
    from edgeqd.settings import BenchSettings

    folder, _ = regression
    rows = bench([folder / "out" / "model_int8.tflite", folder / "out" / "model_fp32.tflite"], ["local"],
                 data=folder / "targets.npz",
                 settings=BenchSettings(runs=3, warmup=1, min_seconds=0.0, samples=50))
    for row in rows:
        assert row.ok, row.reason
        assert row.accuracy is None and row.mae is not None and 0 < row.mae < 1.0
        assert row.agreement is None  # one output: no top-1 to agree on


def test_the_report_shows_regression_figures(regression, tmp_path):
    from edgeqd.reporting import write_report

    folder, _ = regression
    html = write_report([folder / "out"], tmp_path / "report.html").read_text()
    assert "reference (regression)" in html and "MAE 0." in html and "% MAE" in html and "max |Δ| " in html
