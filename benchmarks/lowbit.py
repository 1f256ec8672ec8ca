"""Below 8 bits (issue 14): float, int8, w4a8 (TFLite, ONNX), w4, w2 and --precision auto at 0.5/1/2 pts.

Two Fashion-MNIST models trained here for 3 epochs on 20,000 images (seed 0):

* **mobilenet** — edgeqd's MobileNet-style student (depthwise-separable blocks; its weights are
  mostly 1×1 convolutions, CONV_2D);
* **mlp** — Flatten → Dense 512/256/128 → 10 (weights all in FULLY_CONNECTED; the second
  "task" is the same data with a model whose weights sit in another op).

Each goes through ``edgeqd.pipeline.convert`` (the same verification as the CLI); every row is
the shipped artifact run in its runtime (LiteRT with its default XNNPACK delegate, ONNX Runtime
CPU) on 5,000 held-out test images: accuracy, drop against the Keras float model, agreement,
bytes, and p50 latency of one-sample inference on this host (1 thread, 300 runs after 20 warmups).
The mixed rows come from ``--precision auto --max-drop B`` (search on 2,000 training images).
One seed (0): differences under ~0.5 pt are noise (5,000 samples: one paired SE ≈ 0.2-0.3 pt).
QAT rows: ``quantize --weight-bits 4|2 [--progressive]`` with the float model teaching itself.

Usage: ``nice -n 10 python benchmarks/lowbit.py [--models mobilenet,mlp] [--write]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edgeqd  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np  # noqa: E402

from _common import machine, write_section  # noqa: E402

SECTION = "Below 8 bits: int4/int2 weights and mixed precision (issue 14)"
FORMATS = ("tflite-fp32", "tflite-int8", "onnx-int8", "tflite-w4a8", "onnx-w4a8", "tflite-w4", "tflite-w2")
BUDGETS = (0.5, 1.0, 2.0)
QAT_EPOCHS, QAT_SAMPLES = 2, 6000


def _qat(bits: int, **options):
    from edgeqd.settings import QATSettings

    return QATSettings(weight_bits=bits, epochs=QAT_EPOCHS, train_samples=QAT_SAMPLES, validation_samples=1000,
                       **options)


# (label, format, QAT settings): the float model teaches itself (no separate teacher is trained here).
QAT_RUNS = [("QAT w4, labels only", "tflite-w4a8", lambda: _qat(4, self_distill=False)),
            ("QAT w4 + KD", "tflite-w4a8", lambda: _qat(4)),
            ("QAT w4 + KD, progressive 8→4", "tflite-w4a8", lambda: _qat(4, progressive="8,4")),
            ("QAT w2 + KD", "tflite-w2", lambda: _qat(2)),
            ("QAT w2 + KD, progressive 8→4→2", "tflite-w2", lambda: _qat(2, progressive="8,4,2"))]
EVAL, TRAIN = 5000, 20000


# Written for the run in RESULTS.md (the figures it quotes are that run's).
READING = (
    "Reading. **Size**: where the weights sit in FC layers (mlp) w4a8 is 0.52× int8 (TFLite) / 0.51× (ONNX) and w2 "
    "0.27×; the 42 k-parameter MobileNet only reaches 0.80× (w4a8) and 0.63× (w4/w2): its depthwise layers stay "
    "int8, and biases, per-channel scales and the graph are a large share of so small a file — the issue's "
    "0.6× goal holds on weight-dominated models only. **PTQ accuracy**: int4 costs 0.1-0.7 pt on the mlp and "
    "1.6 pts on the MobileNet; int2 3.5-3.9 pts. **Low-bit QAT** recovers it: MobileNet w4a8 from 82.14 % (PTQ) "
    "to 82.56 % (KD, one stage) and 83.86 % (KD, progressive 8→4: within 0.1 pt of float); w2 from 80.20 % to "
    "83.24 % (one stage) and 83.54 % (progressive 8→4→2); mlp w2 from 81.40 % to 83.86 % / 84.62 %. Progressive "
    "beat single-stage in all three pairs here, by 0.3-1.3 pts — one seed, so only the 1.3-pt ones are clearly "
    "above noise. 'Labels only' scores highest on accuracy (these floats were trained 3 epochs and learn more "
    "from the labels) but agrees least with the float model (92 %): it is more training, not better "
    "quantization. **Mixed precision**: every TFLite mixed artifact was inside its budget held out; at a 0.5-pt "
    "budget on the mlp the search promoted every layer (its all-int4 drop, 0.65 on the search samples, was over "
    "0.5 − 1.64·SE) and shipped the int8 model. The search samples are training samples, which the model fits "
    "better than unseen data: on the MobileNet the held-out drop was 0.8-1.2 pts above the search drop, and "
    "at the 2-pt budget the ONNX twin measured 2.02 pts held out — that run exits 4, as `--max-drop` should. "
    "**Latency**: int4 FC runs in XNNPACK as fast as int8 (mlp 3 µs); int4 CONV_2D is not delegated (MobileNet "
    "w4a8 55 µs vs 24 µs int8; w4/w2 dynamic 150 µs); ONNX Runtime dequantizes int4 weights every inference "
    "(mlp onnx-w4a8 856 µs vs 16 µs int8).")


def _model(name: str, data):
    import tf_keras as keras

    from edgeqd.distillation.students import build_mobilenet

    keras.utils.set_random_seed(0)
    if name == "mobilenet":
        model = build_mobilenet((28, 28, 1), 10)
    else:
        model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten()] +
                                 [keras.layers.Dense(n, activation="relu") for n in (512, 256, 128)] +
                                 [keras.layers.Dense(10, name="logits")], name="mlp")
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train[:TRAIN], data.y_train[:TRAIN], epochs=3, batch_size=128, verbose=0)
    return model


def _p50_us(path: Path, sample: np.ndarray) -> float:
    from edgeqd.devices import runner

    model = runner.open_model(str(path), threads=1)
    model.set_input(model.prepare(sample[None]))
    for _ in range(20):
        model.invoke()
    times = []
    for _ in range(300):
        start = time.perf_counter_ns()
        model.invoke()
        times.append((time.perf_counter_ns() - start) / 1000)
    return float(np.median(times))


def _rows(name: str, data, root: Path) -> list[dict]:
    from edgeqd.pipeline import convert
    from edgeqd.settings import CalibrationSettings, ConvertSettings, VerifySettings
    from edgeqd.types import Dataset

    model = _model(name, data)
    dataset = Dataset("fashion-mnist", data.x_train[:TRAIN], data.y_train[:TRAIN], data.x_eval[:EVAL],
                      data.y_eval[:EVAL], data.class_names, data.normalization)
    runs = [("fixed", None, FORMATS, None)] + [("auto", b, ("tflite-mixed", "onnx-mixed"), None) for b in BUDGETS]
    runs += [("fixed", None, (fmt,), (label, qat())) for label, fmt, qat in QAT_RUNS]
    rows, keras_accuracy = [], None
    for precision, budget, formats, qat in runs:
        out = root / f"{name}-{precision}-{budget}-{qat[0] if qat else ''}"
        settings = ConvertSettings(formats=formats, calibration=CalibrationSettings(samples=500, precision=precision),
                                   verify=VerifySettings(max_drop=budget), qat=qat[1] if qat else None)
        result = convert(model, dataset, out, settings)
        keras_accuracy = result.manifest["keras"]["accuracy"]
        for entry in result.manifest["artifacts"]:
            if entry["status"] != "ok":
                rows.append({"model": name, "format": entry["format"], "failed": entry["reason"]})
                continue
            details = entry.get("details") or {}
            label = entry["format"] + (f" (budget {budget:g})" if budget is not None else "") + \
                (f" — {qat[0]}" if qat else "")
            bits = details.get("layers")
            rows.append({"model": name, "format": label, "bytes": entry["bytes"],
                         "accuracy": entry["evaluation"]["accuracy"], "drop": entry["accuracy_drop_pts"],
                         "agreement": entry["evaluation"]["agreement"],
                         "p50_us": _p50_us(out / entry["file"], data.x_eval[0]),
                         "int8_layers": None if bits is None else sum(r["bits"] == 8 for r in bits),
                         "layers": None if bits is None else len(bits),
                         "search_drop": (details.get("search") or {}).get("drop_pts")})
        print(f"{name} {precision} {budget} {qat[0] if qat else ''}: done", file=sys.stderr, flush=True)
    for row in rows:
        row["keras_accuracy"] = keras_accuracy
    return rows


def _table(rows: list[dict]) -> str:
    int8 = {r["model"]: r["bytes"] for r in rows if r["format"] == "tflite-int8"}
    onnx8 = {r["model"]: r["bytes"] for r in rows if r["format"] == "onnx-int8"}
    lines = ["| model | artifact | bytes | × int8 | accuracy % | drop pts | agreement % | p50 µs | layers int8 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['model']} | {r['format']} | failed: {r['failed'][:80]} | | | | | | |")
            continue
        base = (onnx8 if r["format"].startswith("onnx") else int8)[r["model"]]
        kept = "" if r["layers"] is None else f"{r['int8_layers']}/{r['layers']} (search drop {r['search_drop']:g})"
        lines.append(f"| {r['model']} | {r['format']} | {r['bytes']:,} | {r['bytes'] / base:.2f} | "
                     f"{100 * r['accuracy']:.2f} | {r['drop']:+.2f} | {100 * r['agreement']:.2f} | "
                     f"{r['p50_us']:.0f} | {kept} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet,mlp")
    parser.add_argument("--write", action="store_true", help="write the section into RESULTS.md")
    parser.add_argument("--rows", default=str(Path(tempfile.gettempdir()) / "edgeqd-bench-lowbit"),
                        help="folder caching each model's rows (a rerun reuses them)")
    args = parser.parse_args()
    from edgeqd.data import load_fashion_mnist

    data = load_fashion_mnist()
    rows = []
    for name in args.models.split(","):
        cached = Path(args.rows) / f"{name}.json"
        if not cached.exists():  # one model per process is safest: --models mlp, then --models mobilenet
            with tempfile.TemporaryDirectory() as folder:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps(_rows(name, data, Path(folder))))
        rows += json.loads(cached.read_text())
    keras_line = ", ".join(f"{m} {100 * a:.2f} %" for m, a in
                           dict((r["model"], r["keras_accuracy"]) for r in rows).items())
    body = (f"`benchmarks/lowbit.py` — {machine()}; ai-edge-quantizer 0.10.0, LiteRT 2.3 (XNNPACK default), "
            f"ONNX Runtime CPU. One seed (0); {EVAL:,} held-out test images; Keras float accuracy: {keras_line}. "
            f"Drop = Keras float − artifact, in points (negative: the artifact scored higher). "
            f"The p50 is one-sample inference, 1 thread, on a shared 2-core host (±20 %). "
            "A run takes about 1 min (mlp) and 5.5 min (mobilenet) here; rows are cached per model.\n\n" + _table(rows) +
            f"\n\nQAT rows: {QAT_EPOCHS} epochs per stage on {QAT_SAMPLES:,} training images (1,000 of them pick the "
            "best epoch), Adam 1e-4, the float model as the teacher (KD rows: alpha 1, T 2; 'labels only': alpha 0); "
            "the int8 rows are PTQ. Not measured: 3 seeds, a second task with other data.\n\n" + READING)
    print(body)
    if args.write:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
