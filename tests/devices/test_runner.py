"""The standalone runner, run as a separate process exactly as on a device."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeqd.devices.base import RUNNER


def run_runner(*args: str, cwd: Path | None = None) -> tuple[int, dict, str]:
    done = subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)
    # The whole of stdout is one JSON document: runtime banners go to stderr.
    return done.returncode, json.loads(done.stdout), done.stderr


def test_runner_imports_only_stdlib_numpy_and_runtimes():
    import ast

    allowed_third_party = {"numpy", "ai_edge_litert", "tflite_runtime", "onnxruntime"}
    imported = set()
    for node in ast.walk(ast.parse(RUNNER.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names)
    assert third_party <= allowed_third_party, third_party


def test_int8_tflite_measurements_and_accuracy(models, dataset, tmp_path):
    x, y = dataset.x_eval[:100], dataset.y_eval[:100]
    np.savez(tmp_path / "eval.npz", x=x, y=y)
    code, doc, _ = run_runner("--model", str(models["int8.tflite"]), "--data", str(tmp_path / "eval.npz"),
                              "--runs", "15", "--warmup", "3", "--min-seconds", "0.05", "--threads", "2")
    assert code == 0 and doc["ok"], doc
    timings = doc["timings_ms"]
    assert timings["count"] >= 15 and timings["warmup_runs"] == 3
    assert timings["min"] <= timings["p50"] <= timings["p90"] <= timings["p99"] <= timings["max"]
    assert doc["threads"] == 2 and doc["xnnpack"] is True and doc["runtime"]["name"] == "ai_edge_litert"
    assert doc["memory_mb"]["peak_rss"] >= doc["memory_mb"]["rss_after_import"] > 0
    assert doc["inputs"][0]["dtype"] == "int8" and doc["inputs"][0]["scale"] > 0
    # The runner quantizes with the artifact's own scale/zero point: its predictions must equal
    # a direct LiteRT run on the same quantized inputs (exact: same kernels, same integers).
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(models["int8.tflite"]))
    interpreter.allocate_tensors()
    detail, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = detail["quantization"]
    expected = []
    for sample in x:
        q = np.clip(np.round(sample[None] / scale + zero), -128, 127).astype(np.int8)
        interpreter.set_tensor(detail["index"], q)
        interpreter.invoke()
        expected.append(int(interpreter.get_tensor(out["index"]).argmax()))
    assert doc["quality"]["predictions"] == expected
    assert doc["quality"]["accuracy"] == pytest.approx(float(np.mean(np.array(expected) == y)))
    assert doc["device"]["machine"] and doc["device"]["cores"] >= 1


def test_onnx_and_no_xnnpack_and_reference_agreement(models, dataset, tmp_path):
    x = dataset.x_eval[:50]
    from edgeqd.devices import runner

    reference = runner.predict(runner.open_model(str(models["fp32.tflite"])), x)
    np.savez(tmp_path / "eval.npz", x=x, reference=reference)
    code, doc, _ = run_runner("--model", str(models["int8.onnx"]), "--data", str(tmp_path / "eval.npz"),
                              "--runs", "5", "--min-seconds", "0")
    assert code == 0 and doc["runtime"]["name"] == "onnxruntime" and doc["xnnpack"] is None
    # QDQ int8 vs the float model on 50 samples: top-1 agreement stays high (tiny model, 8-bit).
    assert doc["quality"]["agreement"] >= 0.9 and doc["quality"]["accuracy"] is None
    code, doc, _ = run_runner("--model", str(models["fp32.tflite"]), "--data", str(tmp_path / "eval.npz"),
                              "--runs", "5", "--min-seconds", "0", "--no-xnnpack")
    assert code == 0 and doc["xnnpack"] is False
    # The float TFLite against its own outputs as reference: identical top-1 everywhere.
    assert doc["quality"]["agreement"] == 1.0


def test_errors_are_json_not_tracebacks(tmp_path):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"not a flatbuffer")
    code, doc, stderr = run_runner("--model", str(bad))
    assert code == 1 and doc["ok"] is False and "cannot load" in doc["error"]
    assert "Traceback" not in stderr
    code, doc, _ = run_runner("--model", str(tmp_path / "missing.onnx"))
    assert code == 1 and "not found" in doc["error"]
    code, doc, _ = run_runner("--model", str(tmp_path / "model.pt"))
    assert code == 1 and "unsupported" in doc["error"]


def test_data_that_does_not_fit_names_the_shapes(models, tmp_path):
    np.savez(tmp_path / "eval.npz", x=np.zeros((4, 10, 10, 1), np.float32))
    code, doc, _ = run_runner("--model", str(models["fp32.tflite"]), "--data", str(tmp_path / "eval.npz"))
    assert code == 1 and "100 values" in doc["error"] and "784" in doc["error"]


def test_probe():
    code, doc, _ = run_runner("--probe")
    assert code == 0 and doc["probe"] and "ai_edge_litert" in doc["runtimes"] and "numpy" in doc["runtimes"]


def test_onnx_per_op_profile_from_onnxruntime(models, tmp_path):
    model = tmp_path / "model_int8.onnx"
    model.write_bytes(models["int8.onnx"].read_bytes())
    code, doc, _ = run_runner("--model", str(model), "--runs", "5", "--min-seconds", "0", "--profile",
                              "--profile-runs", "7")
    assert code == 0, doc
    profile = doc["profile"]
    assert profile["available"] and profile["runs"] == 5  # never more than the timed runs
    assert profile["source"].startswith("onnxruntime")
    ops = {entry["op"] for entry in profile["by_op_type"]}
    # A QDQ int8 model: the quantize/dequantize nodes and the convolutions each have a line.
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and ops & {"Conv", "QLinearConv"}, ops
    assert sum(entry["percent"] for entry in profile["by_op_type"]) == pytest.approx(100, abs=0.1)
    assert sum(entry["avg_ms"] for entry in profile["by_op_type"]) == pytest.approx(profile["total_ms"])
    times = [node["avg_ms"] for node in profile["top_nodes"]]
    assert times == sorted(times, reverse=True) and all(node["calls"] == 1 for node in profile["top_nodes"])
    # The profiler's trace file is read and removed: nothing is left beside the model.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_int8.onnx"]


def test_tflite_profile_says_why_it_is_unavailable(models):
    code, doc, _ = run_runner("--model", str(models["int8.tflite"]), "--runs", "3", "--min-seconds", "0",
                              "--profile")
    assert code == 0 and doc["profile"]["available"] is False and "benchmark_model" in doc["profile"]["reason"]
    code, doc, _ = run_runner("--model", str(models["int8.tflite"]), "--runs", "3", "--min-seconds", "0")
    assert doc["profile"] is None


def test_int8_io_onnx_runs_with_the_scales_of_its_qdq_nodes(models, dataset, tmp_path):
    """tf2onnx's TFLite front end keeps int8 I/O; ORT does not expose the Q/DQ scales: the runner reads them."""
    import tf2onnx

    proto, _ = tf2onnx.convert.from_tflite(str(models["int8.tflite"]), opset=17)
    (tmp_path / "int8_io.onnx").write_bytes(proto.SerializeToString())
    x, y = dataset.x_eval[:60], dataset.y_eval[:60]
    np.savez(tmp_path / "eval.npz", x=x, y=y)
    code, doc, _ = run_runner("--model", str(tmp_path / "int8_io.onnx"), "--data", str(tmp_path / "eval.npz"),
                              "--runs", "3", "--min-seconds", "0")
    assert code == 0, doc
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=str(models["int8.tflite"])).get_input_details()[0]
    assert doc["inputs"][0]["dtype"] == "int8"
    assert doc["inputs"][0]["scale"] == pytest.approx(detail["quantization"][0])
    assert doc["inputs"][0]["zero_point"] == detail["quantization"][1]
    code, tflite_doc, _ = run_runner("--model", str(models["int8.tflite"]), "--data", str(tmp_path / "eval.npz"),
                                     "--runs", "3", "--min-seconds", "0")
    # Same integers in, same integer arithmetic: the same classes, save a rare tie broken otherwise.
    agree = np.mean(np.array(doc["quality"]["predictions"]) == np.array(tflite_doc["quality"]["predictions"]))
    assert agree >= 0.98 and doc["quality"]["accuracy"] == pytest.approx(tflite_doc["quality"]["accuracy"], abs=0.02)


def test_qdq_edges_read_from_constants_typed_fields_and_layout_ops(tmp_path):
    """Scales in a Constant node's float_data, a negative zero point in int32_data, layout ops at both edges."""
    import onnx
    from onnx import TensorProto, helper

    from edgeqd.devices import runner

    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.5])  # float_data, not raw_data
    nodes = [helper.make_node("Constant", [], ["in_scale"], value=scale),
             helper.make_node("Transpose", ["x"], ["x_t"], perm=[0, 1]),
             helper.make_node("DequantizeLinear", ["x_t", "in_scale", "in_zero"], ["x_f"]),
             helper.make_node("Relu", ["x_f"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "out_scale", "out_zero"], ["q"]),
             helper.make_node("Identity", ["q"], ["y"])]
    initializers = [helper.make_tensor("in_zero", TensorProto.INT8, [], [-3]),
                    onnx.numpy_helper.from_array(np.array(0.25, np.float32), "out_scale"),  # raw_data
                    helper.make_tensor("out_zero", TensorProto.INT8, [], [7])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.INT8, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, ["n", 4])], initializers)
    path = tmp_path / "qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert runner._onnx_edge_quantization(str(path)) == {"x": ([0.5], [-3]), "y": ([0.25], [7])}
    model = runner.open_model(str(path), threads=1)
    x = np.array([[-2.0, -0.5, 0.0, 1.0], [3.0, 10.0, 60.0, 70.0], [0.25, 0.75, 1.25, -9.0]], np.float32)
    q_in = np.clip(np.round(x / 0.5 - 3), -128, 127)  # the runner quantizes with the file's own parameters
    expected = (np.clip(np.round(np.maximum((q_in + 3) * 0.5, 0) / 0.25 + 7), -128, 127) - 7) * 0.25
    for batch in (1, 2, 256):  # one per inference; batches of 2 and a last of 1; all at once
        np.testing.assert_array_equal(runner.predict(model, x, batch=batch), expected)
