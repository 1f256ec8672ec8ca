"""edgeqd convert against what a user would do instead, on the demo teacher, in one run.

Rows: the float TFLite model; edgeqd's int8 TFLite and int8 ONNX (calibrated on 200
training samples, per-channel); TFLite dynamic-range quantization (Optimize.DEFAULT,
no representative data); full-int8 TFLite calibrated on 100 random-noise samples;
ONNX Runtime quantize_static with its default settings (per-tensor, no pre-processing).
Every artifact is evaluated on the full 10,000-image test split in its real runtime.

Usage: python benchmarks/convert_vs_peers.py   (writes its section of RESULTS.md)
"""

from __future__ import annotations

import edgeqd  # noqa: F401  (legacy Keras for TFMOT)

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write_section  # noqa: E402

from edgeqd.converters import CONVERTERS, ConversionContext  # noqa: E402
from edgeqd.converters.onnx import _CalibrationReader  # noqa: E402
from edgeqd.converters.tflite import representative_dataset  # noqa: E402
from edgeqd.data import load_dataset  # noqa: E402
from edgeqd.demo import train_demo_teacher  # noqa: E402
from edgeqd.models import load_model  # noqa: E402
from edgeqd.data import calibration_subset  # noqa: E402
from edgeqd.verify import evaluate_outputs, predict  # noqa: E402


def timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    import tensorflow as tf
    from onnxruntime.quantization import quantize_static

    model = load_model(train_demo_teacher())
    data = load_dataset("fashion-mnist")
    reference = model.predict(data.x_eval, batch_size=256, verbose=0)
    keras_acc = float((reference.argmax(1) == data.y_eval).mean())
    calibration, _ = calibration_subset(data, 200, seed=0)
    work = Path(tempfile.mkdtemp(prefix="edgeqd-bench-"))
    rows = []  # (name, path, runtime, seconds)

    def edgeqd_artifact(fmt):
        context = ConversionContext(model=model, calibration=calibration, workdir=work)
        if fmt == "onnx-int8":  # the float ONNX export is part of the int8 path's cost
            context.cache.clear()
        path = work / CONVERTERS[fmt].filename
        rows.append((f"edgeqd {fmt}", path, CONVERTERS[fmt].runtime,
                     timed(lambda: CONVERTERS[fmt].fn(context, path))))

    edgeqd_artifact("tflite-fp32")
    rows[-1] = ("float32 TFLite (reference size)",) + rows[-1][1:]
    edgeqd_artifact("tflite-int8")
    edgeqd_artifact("onnx-int8")

    def dynamic_range():
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        (work / "dynamic.tflite").write_bytes(converter.convert())

    rows.append(("TFLite dynamic range (no data)", work / "dynamic.tflite", "tflite", timed(dynamic_range)))

    def noise_calibrated():
        noise = np.random.default_rng(0).random((100, *data.input_shape), dtype=np.float32)
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(noise)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        (work / "noise.tflite").write_bytes(converter.convert())

    rows.append(("TFLite int8, 100 random-noise samples", work / "noise.tflite", "tflite", timed(noise_calibrated)))

    def ort_defaults():
        context = ConversionContext(model=model, calibration=calibration, workdir=work)
        CONVERTERS["onnx-fp32"].fn(context, work / "float.onnx")
        import onnx

        name = onnx.load(str(work / "float.onnx")).graph.input[0].name
        quantize_static(str(work / "float.onnx"), str(work / "ort_default.onnx"), _CalibrationReader(name, calibration))

    rows.append(("ORT quantize_static defaults", work / "ort_default.onnx", "onnx", timed(ort_defaults)))

    float_bytes = rows[0][1].stat().st_size
    lines = ["| artifact | accuracy | Δ vs float (pts) | agreement with float | size | × fp32 | conversion s |",
             "|---|---:|---:|---:|---:|---:|---:|",
             f"| Keras float teacher | {100 * keras_acc:.2f}% | — | — | — | — | — |"]
    for name, path, runtime, seconds in rows:
        ev = evaluate_outputs(predict(path, data.x_eval), reference, data.y_eval)
        size = path.stat().st_size
        lines.append(f"| {name} | {100 * ev.accuracy:.2f}% | {100 * (ev.accuracy - keras_acc):+.2f} | "
                     f"{100 * ev.agreement:.2f}% | {size / 1024:.0f} KiB | {size / float_bytes:.2f} | {seconds:.1f} |")
        print(lines[-1], flush=True)
    body = (f"Demo teacher ({model.count_params():,} parameters) on the Fashion-MNIST test split "
            f"(10,000 images), each artifact run in its own runtime (LiteRT / ONNX Runtime).\n"
            f"Machine: {machine()}. Conversion seconds are wall clock on a shared machine (one run; "
            "indicative only).\n\n" + "\n".join(lines) + "\n\n"
            "Dynamic-range TFLite keeps float activations (float I/O, weights int8) and so is not a "
            "full-integer model for int8-only accelerators/MCUs; noise calibration shows what goes wrong "
            "without representative data.\n\nReproduce: `python benchmarks/convert_vs_peers.py`.")
    write_section("Convert vs peers (issue 2)", body)


if __name__ == "__main__":
    main()
