"""The C array for TensorFlow Lite Micro: compiled by gcc and g++, equal to the .tflite, macros from LiteRT."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from report_fixtures import tiny_run
from report_fixtures import artifact_path as artifact

from edgeqd.bundle.c_array import micro_op_resolver_calls


@pytest.fixture(scope="module")
def run():
    return tiny_run()


@pytest.mark.parametrize("compiler,language", [("gcc", "c"), ("g++", "c++")])
def test_c_array_compiles_and_equals_the_tflite(run, tmp_path, compiler, language):
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not installed (scripts/system-deps.sh installs it)")
    for name in ("model_data.h", "model_data.cc"):
        shutil.copy(run["dir"] / name, tmp_path / name)
    (tmp_path / "dump.c").write_text(
        '#include <stdint.h>\n#include <stdio.h>\n#include "model_data.h"\n'
        "int main(void) {\n"
        "  if (g_model_data_len != EDGEQD_MODEL_DATA_LEN) return 2;\n"
        "  if (((uintptr_t)g_model_data) % 16 != 0) return 3;\n"
        "  fwrite(g_model_data, 1, g_model_data_len, stdout);\n"
        "  return 0;\n}\n")
    binary = tmp_path / "dump"
    subprocess.run([compiler, "-x", language, "-std=" + ("c11" if language == "c" else "c++17"), "-Wall", "-Werror",
                    str(tmp_path / "model_data.cc"), str(tmp_path / "dump.c"), "-o", str(binary)],
                   check=True, capture_output=True, timeout=120)
    dumped = subprocess.run([str(binary)], check=True, capture_output=True, timeout=30).stdout
    assert dumped == artifact(run, "tflite-int8").read_bytes()


def test_c_header_macros_carry_the_io_quantization(run):
    from ai_edge_litert.interpreter import Interpreter

    header = (run["dir"] / "model_data.h").read_text()
    detail = Interpreter(model_path=str(artifact(run, "tflite-int8"))).get_input_details()[0]
    scale, zero = detail["quantization"]
    assert f"#define EDGEQD_INPUT_ZERO_POINT ({zero})" in header
    assert f"#define EDGEQD_INPUT_SCALE {scale:.9g}f" in header
    assert "#define EDGEQD_INPUT_ELEMENTS 144" in header  # 12 × 12 × 1


def test_micro_op_resolver_calls():
    assert micro_op_resolver_calls(["DEPTHWISE_CONV_2D", "RELU6", "CUSTOM:Foo"]) == [
        "AddDepthwiseConv2D()", "AddRelu6()"]
