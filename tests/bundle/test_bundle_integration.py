"""INTEGRATION.md: every number taken from the real artifacts."""

from __future__ import annotations

import pytest
from report_fixtures import tiny_run
from report_fixtures import artifact_path as artifact


@pytest.fixture(scope="module")
def run():
    return tiny_run()


def test_integration_md_is_filled_from_the_real_artifact(run):
    from ai_edge_litert.interpreter import Interpreter

    text = (run["dir"] / "INTEGRATION.md").read_text()
    interpreter = Interpreter(model_path=str(artifact(run, "tflite-int8")))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["name"] in text and out["name"] in text
    assert f"zero point {inp['quantization'][1]}" in text and f"zero point {out['quantization'][1]}" in text
    for section in ("Android (Kotlin, LiteRT)", "Linux / Raspberry Pi (C++, LiteRT)",
                    "Microcontrollers (TensorFlow Lite Micro)", "ONNX Runtime"):
        assert f"## {section}" in text
    # The micro op resolver registers exactly the builtin ops of this model.
    assert "resolver.AddConv2D();" in text and "resolver.AddFullyConnected();" in text
    assert "ByteArray(10)" in text  # Kotlin output buffer sized from the output tensor
    assert set(run["manifest"]["bundle"]) >= {"labels.txt", "model_data.h", "model_data.cc", "INTEGRATION.md"}
