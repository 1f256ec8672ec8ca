"""Per-layer sensitivity (``edgeqd inspect --sensitivity``) on a small trained model, run in LiteRT."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from lowbit_helpers import float_tflite, weighty_model

from edgeqd.cli import cli


@pytest.fixture(scope="module")
def float_file(fashion, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sensitivity")
    path = folder / "model_fp32.tflite"
    path.write_bytes(float_tflite(weighty_model(fashion), folder))
    return path


def test_sensitivity_table_has_every_layer_and_precision(float_file, small_npz):
    result = CliRunner().invoke(cli, ["inspect", str(float_file), "--sensitivity", "--data", str(small_npz),
                                      "--samples", "300", "--json"])
    assert result.exit_code == 0, result.output
    table = json.loads(result.output)
    assert table["samples"] == 300 and table["modes"] == ["w8a8", "w4a8", "w8a16", "w2"]
    rows = {row["layer"]: row for row in table["layers"]}
    assert list(rows) == ["conv", "dw", "fc", "logits"]
    # Where LiteRT has no kernel the cell is empty: no int4/int2 depthwise, no int2 convolution.
    assert rows["dw"]["w4a8"] is None and rows["dw"]["w2"] is None and rows["conv"]["w2"] is None
    for row in rows.values():
        for mode in ("w8a8", "w4a8", "w8a16"):
            if row[mode] is not None:
                assert 0.0 <= row[mode]["agreement"] <= 1.0 and row[mode]["drop_pts"] is not None
        # int4 weights move the outputs more than int8 ones (SQNR 27-35 dB vs 43-50 dB here).
        if row["w4a8"] is not None:
            assert row["w4a8"]["sqnr_db"] < row["w8a8"]["sqnr_db"]
    # int4 on the big Dense saves about half its int8 bytes: the bytes mixed precision trades against.
    assert rows["fc"]["w4a8"]["bytes_saved"] > rows["fc"]["w8a8"]["bytes_saved"] + 30_000
    assert rows["fc"]["w2"]["sqnr_db"] < rows["fc"]["w4a8"]["sqnr_db"]


def test_sensitivity_prints_a_table(float_file, small_npz):
    result = CliRunner().invoke(cli, ["inspect", str(float_file), "--sensitivity", "--data", str(small_npz),
                                      "--samples", "100"])
    assert result.exit_code == 0, result.output
    assert "per-layer sensitivity" in result.output and "logits" in result.output and " dB" in result.output


def test_sensitivity_plot_is_a_png_and_never_replaces_without_force(float_file, small_npz, tmp_path):
    plot = tmp_path / "sensitivity.png"
    args = ["inspect", str(float_file), "--sensitivity", "--data", str(small_npz), "--samples", "100",
            "--plot", str(plot)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5_000
    before = plot.read_bytes()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "--force" in result.output and plot.read_bytes() == before
    assert CliRunner().invoke(cli, [*args, "--force"]).exit_code == 0
    # --plot draws the sensitivity table only.
    result = CliRunner().invoke(cli, ["inspect", str(float_file), "--plot", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "--plot draws the --sensitivity table" in result.output


def test_sensitivity_refuses_a_quantized_file_and_missing_data(float_file, small_npz, tmp_path):
    from edgeqd.quantization.aeq import quantize_tflite
    from edgeqd.quantization.lowbit import w4_recipe

    result = CliRunner().invoke(cli, ["inspect", str(float_file), "--sensitivity"])
    assert result.exit_code == 2 and "--sensitivity needs --data" in result.output
    quantized = tmp_path / "model_w4.tflite"
    quantized.write_bytes(quantize_tflite(float_file.read_bytes(), w4_recipe(), None))
    result = CliRunner().invoke(cli, ["inspect", str(quantized), "--sensitivity", "--data", str(small_npz)])
    assert result.exit_code == 2 and "needs the float .tflite" in result.output
