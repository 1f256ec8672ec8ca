"""The bundle's TensorFlow Lite Micro parts, measured in TFLM: kTensorArenaSize, the resolver, a refusal."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from report_fixtures import tiny_run
from report_fixtures import artifact_path as artifact
from tflm_models import gelu_int8

from edgeqd.artifact_info.tflm import tflm_table
from edgeqd.bundle import write_bundle
from edgeqd.bundle.micro import arena_with_margin


@pytest.fixture(scope="module")
def run():
    return tiny_run()


def test_header_arena_is_measured_plus_margin_and_compiles(run, tmp_path):
    from tflite_micro.python.tflite_micro import runtime as tflm

    from edgeqd.devices import runner

    header = (run["dir"] / "model_data.h").read_text()
    size = int(re.search(r"enum \{ kTensorArenaSize = (\d+) \};", header).group(1))
    measured = int(re.search(r"Micro needs (\d+) bytes", header).group(1))
    model = runner.open_model(str(artifact(run, "tflite-int8")), runtime="tflm")
    model.set_input(model.prepare(np.zeros(model.inputs[0]["shape"], np.float32)))
    model.invoke()
    assert measured == model.micro_report()["arena_bytes"]
    assert size == arena_with_margin(measured) and size % 16 == 0 and size >= 1.25 * measured
    # TFLM allocates and runs in kTensorArenaSize bytes.
    interpreter = tflm.Interpreter.from_bytes(artifact(run, "tflite-int8").read_bytes(), arena_size=size)
    interpreter.set_input(np.zeros(model.inputs[0]["shape"], np.int8), 0)
    interpreter.invoke()
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed (scripts/system-deps.sh installs it)")
    shutil.copy(run["dir"] / "model_data.h", tmp_path / "model_data.h")
    (tmp_path / "arena.c").write_text(
        '#include <stdio.h>\n#include "model_data.h"\n'
        "static unsigned char arena[kTensorArenaSize];  /* a constant expression in C */\n"
        'int main(void) { printf("%u\\n", (unsigned)sizeof arena); return 0; }\n')
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", str(tmp_path / "arena.c"), "-o", str(tmp_path / "arena")],
                   check=True, capture_output=True, timeout=120)
    printed = subprocess.run([str(tmp_path / "arena")], check=True, capture_output=True, timeout=30).stdout
    assert int(printed) == size


def test_integration_registers_exactly_the_models_ops(run):
    from ai_edge_litert.interpreter import Interpreter

    text = (run["dir"] / "INTEGRATION.md").read_text()
    interpreter = Interpreter(model_path=str(artifact(run, "tflite-int8")))
    ops = list(dict.fromkeys(op["op_name"] for op in interpreter._get_ops_details()))
    methods = [tflm_table()["methods"][op] for op in ops]
    assert f"tflite::MicroMutableOpResolver<{len(methods)}> resolver;" in text
    assert sorted(re.findall(r"resolver\.(Add\w+)\(\);", text)) == sorted(methods)
    assert "tensor_arena[kTensorArenaSize]" in text and "TFLM needs" in text


def test_bundle_of_a_model_tflm_cannot_run_says_so(run, tmp_path):
    manifest = json.loads(json.dumps(run["manifest"]))
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["format"] == "tflite-int8"]
    gelu_int8(tmp_path / manifest["artifacts"][0]["file"])
    written = write_bundle(tmp_path, manifest)
    assert "model_data.h" in written
    text = (tmp_path / "INTEGRATION.md").read_text()
    section = text.split("## Microcontrollers (TensorFlow Lite Micro)", 1)[1]
    assert "TensorFlow Lite Micro cannot run this model" in section and "GELU" in section
    assert "MicroMutableOpResolver<" not in section and "kTensorArenaSize" not in section
    header = (tmp_path / "model_data.h").read_text()
    assert "cannot run this model" in header and "GELU" in header and "kTensorArenaSize" not in header
