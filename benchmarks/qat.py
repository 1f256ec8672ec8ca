"""Quantization-aware training with the teacher in the loop vs PTQ and TFMOT's plain QAT (issue 4).

A MobileNet-style student (depthwise-separable blocks, batch norm, ReLU6: the family
where post-training quantization loses accuracy) is distilled in float from the demo
teacher on Fashion-MNIST, then quantized six ways. Every quantized figure is the
accuracy of the **int8 TFLite and int8 ONNX artifacts** run in LiteRT / ONNX Runtime
on the full test split (10,000 images), over several seeds (mean ± std):

* float student (Keras);
* PTQ per-tensor and PTQ per-channel (edgeqd, 200 calibration samples);
* TFMOT's plain ``quantize_model`` QAT on labels (the peer), converted the same way;
* edgeqd QAT + KD, two-phase (distil in float, then QAT on labels) and joint
  (QAT with the distillation loss from the first step).

All QAT rows use the same training subset, epochs, batch size and learning rate.
Writes the section "Quantization-aware training (issue 4)" of RESULTS.md.

Usage: ``python benchmarks/qat.py [--seeds 3] [--train-samples 10000] [--float-epochs 15] [--qat-epochs 2]``
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
from edgeqd.quantization import DEFAULT_QAT_ALPHA, DEFAULT_QAT_TEMPERATURE  # noqa: E402

SECTION = "Quantization-aware training (issue 4)"
ROWS = ("float student", "PTQ per-tensor", "PTQ per-channel", "TFMOT quantize_model QAT (labels)",
        "edgeqd QAT + KD two-phase", "edgeqd QAT + KD joint")
FORMATS = ("tflite-int8", "onnx-int8")


def _artifact_accuracies(manifest: dict) -> dict:
    found = {}
    for row in manifest["artifacts"]:
        if row["status"] == "ok":
            found[row["format"]] = row["evaluation"]["accuracy"]
    return found


def run_seed(seed: int, teacher, dataset, args, work: Path) -> dict:
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    from edgeqd.distillation import Distiller
    from edgeqd.pipeline import convert
    from edgeqd.quantization import quantize
    from edgeqd.distillation.students import build_student
    from edgeqd.types import QuantMode

    results: dict = {}
    keras.utils.set_random_seed(seed)
    student = build_student("mobilenet", dataset.input_shape, 10, teacher_params=teacher.count_params())
    started = time.perf_counter()
    distiller = Distiller(student, teacher, temperature=4.0, alpha=args.alpha)
    # Cosine decay to ~0: QAT should start from a converged float student, otherwise the
    # QAT rows measure "more training" rather than quantization.
    steps = args.float_epochs * -(-len(dataset.x_train) // 128)
    schedule = keras.optimizers.schedules.CosineDecay(args.float_lr, steps)
    distiller.compile(optimizer=keras.optimizers.Adam(schedule))
    distiller.fit(dataset.x_train, dataset.y_train, batch_size=128, epochs=args.float_epochs, verbose=0,
                  shuffle=True)
    float_acc = float((student.predict(dataset.x_eval, batch_size=512, verbose=0).argmax(1) == dataset.y_eval).mean())
    train_acc = float((student.predict(dataset.x_train, batch_size=512, verbose=0).argmax(1) == dataset.y_train).mean())
    results["float student"] = {"keras": float_acc, "train": train_acc, "seconds": time.perf_counter() - started,
                                "params": int(student.count_params())}
    print(f"seed {seed}: float student {float_acc:.4f} ({student.count_params()} params)", flush=True)

    common = dict(formats=FORMATS, force=True, seed=seed)
    qat = dict(epochs=args.qat_epochs, learning_rate=args.qat_lr, batch_size=128, alpha=args.qat_alpha,
               temperature=args.qat_temperature)
    jobs = {
        "PTQ per-tensor": lambda out: quantize(student, dataset, out, mode="ptq", per_channel=False, **common),
        "PTQ per-channel": lambda out: quantize(student, dataset, out, mode="ptq", per_channel=True, **common),
        "edgeqd QAT + KD two-phase": lambda out: quantize(student, dataset, out, teacher=teacher,
                                                          schedule="two-phase", **qat, **common),
        "edgeqd QAT + KD joint": lambda out: quantize(student, dataset, out, teacher=teacher, schedule="joint",
                                                      **qat, **common),
    }

    def peer(out):
        # TFMOT's documented recipe: quantize_model, compile, fit on labels, convert.
        keras.utils.set_random_seed(seed)
        clone = keras.models.clone_model(student)
        clone.set_weights(student.get_weights())
        model = tfmot.quantization.keras.quantize_model(clone)
        model.compile(optimizer=keras.optimizers.Adam(args.qat_lr),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(dataset.x_train, dataset.y_train, batch_size=128, epochs=args.qat_epochs, verbose=0)
        return convert(model, dataset, out, formats=FORMATS, mode=QuantMode.QAT, force=True, seed=seed)

    jobs["TFMOT quantize_model QAT (labels)"] = peer
    for name in ROWS[1:]:
        started = time.perf_counter()
        result = jobs[name](work / f"s{seed}-{name.replace(' ', '_')}")
        manifest = result.manifest
        row = {"seconds": time.perf_counter() - started, **_artifact_accuracies(manifest),
               "keras": manifest["keras"]["accuracy"]}
        tflite = next(a for a in manifest["artifacts"] if a["format"] == "tflite-int8")
        row["keras_vs_tflite_agreement"] = tflite["evaluation"]["agreement"] if tflite["evaluation"] else None
        if "quantize" in manifest:
            row["left_float"] = len(manifest["quantize"].get("left_float", []))
        results[name] = row
        print(f"seed {seed}: {name}: " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                                     for k, v in row.items()}), flush=True)
    return results


def _stat(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    return f"{100 * np.mean(values):.2f} ± {100 * np.std(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-samples", type=int, default=10000)
    parser.add_argument("--float-epochs", type=int, default=15)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--float-lr", type=float, default=2e-3)
    parser.add_argument("--qat-lr", type=float, default=1e-4)
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="weight of the teacher term of the float distillation (T = 4)")
    parser.add_argument("--qat-alpha", type=float, default=DEFAULT_QAT_ALPHA,
                        help="weight of the teacher term in QAT + KD (edgeqd quantize's default)")
    parser.add_argument("--qat-temperature", type=float, default=DEFAULT_QAT_TEMPERATURE,
                        help="temperature of the teacher term in QAT + KD (edgeqd quantize's default)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    import tf_keras as keras

    from edgeqd.data import load_fashion_mnist
    from edgeqd.demo import train_demo_teacher
    from edgeqd.types import Dataset

    full = load_fashion_mnist()
    order = np.sort(np.random.default_rng(0).permutation(len(full.x_train))[:args.train_samples])
    dataset = Dataset("fashion-mnist", full.x_train[order], full.y_train[order], full.x_eval, full.y_eval,
                      full.class_names, full.normalization)
    teacher = keras.models.load_model(train_demo_teacher(), compile=False)
    teacher_acc = float((teacher.predict(full.x_eval, batch_size=512, verbose=0).argmax(1) == full.y_eval).mean())
    teacher_train = float((teacher.predict(dataset.x_train, batch_size=512, verbose=0).argmax(1)
                           == dataset.y_train).mean())
    started = time.perf_counter()
    per_seed = []
    with tempfile.TemporaryDirectory(prefix="edgeqd-bench-qat-") as work:
        for seed in range(args.seeds):
            per_seed.append(run_seed(seed, teacher, dataset, args, Path(work)))
    minutes = (time.perf_counter() - started) / 60

    float_mean = np.mean([r["float student"]["keras"] for r in per_seed])
    lines = ["| method | int8 TFLite top-1 | int8 ONNX top-1 | Δ TFLite vs float (pts) | Keras fake-quant vs "
             "TFLite agreement | layers left float |", "|---|---:|---:|---:|---:|---:|"]
    summary = {}
    for name in ROWS:
        rows = [r[name] for r in per_seed]
        if name == "float student":
            lines.append(f"| {name} (Keras, {rows[0]['params']:,} params) | {_stat([r['keras'] for r in rows])} "
                         "(Keras) | — | — | — | — |")
            continue
        tfl = [r.get("tflite-int8") for r in rows]
        onnx = [r.get("onnx-int8") for r in rows]
        drops = [100 * (t - r["float student"]["keras"]) for t, r in zip(tfl, per_seed) if t is not None]
        agreement = [r.get("keras_vs_tflite_agreement") for r in rows]
        agree_text = _stat(agreement) + " %" if "QAT" in name else "(PTQ: vs float)" + " " + _stat(agreement) + " %"
        left = rows[0].get("left_float", "—")
        lines.append(f"| {name} | {_stat(tfl)} | {_stat(onnx)} | {np.mean(drops):+.2f} ± {np.std(drops):.2f} | "
                     f"{agree_text} | {left} |")
        summary[name] = {"tflite": float(np.mean([t for t in tfl if t is not None])), "drop": float(np.mean(drops))}

    best_kd = max(summary["edgeqd QAT + KD two-phase"]["tflite"], summary["edgeqd QAT + KD joint"]["tflite"])
    peer = summary["TFMOT quantize_model QAT (labels)"]["tflite"]
    checks = [
        f"- QAT + KD int8 TFLite within 0.5 pt of the float student: two-phase "
        f"{summary['edgeqd QAT + KD two-phase']['drop']:+.2f} pts, joint {summary['edgeqd QAT + KD joint']['drop']:+.2f} pts.",
        f"- QAT + KD (best schedule {100 * best_kd:.2f}%) vs TFMOT plain QAT ({100 * peer:.2f}%): "
        f"{100 * (best_kd - peer):+.2f} pts.",
    ]
    body = "\n".join([
        f"MobileNet-style student (depthwise-separable, BN, ReLU6; `edgeqd.distillation.students` family `mobilenet`, sized to "
        f"1/15 of the demo teacher) distilled in float from the demo teacher ({100 * teacher_acc:.2f}% test "
        f"top-1) for {args.float_epochs} epochs (Adam {args.float_lr:g}, cosine decay; T = 4, α = {args.alpha:g}), then quantized. {args.seeds} seeds (0…{args.seeds - 1}), mean ± "
        f"std (population). Accuracy is measured on the **int8 artifacts** in LiteRT / ONNX Runtime on the full "
        f"Fashion-MNIST test split (10,000 images).",
        f"Budget: training on a fixed subset of {args.train_samples:,} of the 60,000 training images; every QAT "
        f"row fine-tunes for {args.qat_epochs} epoch(s) at Adam {args.qat_lr:g}, batch 128, KD rows with edgeqd quantize's "
        f"QAT distillation settings T = {args.qat_temperature:g}, α = {args.qat_alpha:g} (two-phase: "
        f"{args.qat_epochs} float-distillation epochs, then {args.qat_epochs} QAT epochs on labels). PTQ: 200 "
        f"calibration samples, minmax. TFMOT row: `quantize_model` + `fit` on labels, converted by the same "
        f"converters in QAT mode.",
        f"Machine: {machine()}; total {minutes:.0f} min wall clock on a shared machine.",
        "",
        *lines,
        "",
        *checks,
        "",
        "Anchors (ImageNet, published): TFMOT — MobileNetV1 float 70.99 → PTQ 69.37 → QAT 70.67; MobileNetV2 "
        "QAT 70.77 → 70.01 (TFMOT docs); TFLite's model table — MobileNetV2 float 71.9 / PTQ 63.7 / QAT 70.9. "
        "Fashion-MNIST is far easier, so the gaps here are smaller; the ordering is what carries over.",
        "",
        f"On the {args.train_samples:,} training images the teacher is right on {100 * teacher_train:.2f}%, the "
        f"float student on {100 * np.mean([r['float student']['train'] for r in per_seed]):.2f}%: there the "
        "teacher is no better a target than the labels. That is why edgeqd quantize's QAT defaults keep most "
        "weight on the labels and use the teacher's plain probabilities (T = 1) instead of repeating the float "
        "distillation's T = 4 soft targets: with T = 4, α = 0.5 the joint schedule re-optimizes the objective the "
        "float student has already converged on and stayed at the float accuracy, ~0.7 pt under label-only QAT "
        "(`--qat-temperature 4 --qat-alpha 0.5` reproduces that recipe).",
        "",
        "Reading (written for the default settings): every QAT row fine-tunes the converged float student for "
        "more epochs; on labels (TFMOT's row, and the QAT phase of two-phase) that extra training alone moves "
        "accuracy, so \"above float\" is not a quantization gain. Compare QAT rows with each other, and PTQ rows "
        "with the float student.",
        "",
        "Reproduce: `python benchmarks/qat.py` (`--seeds`, `--train-samples`, `--float-epochs`, `--qat-epochs`, "
        "`--alpha`, `--qat-alpha`, `--qat-temperature`).",
    ])
    print(body)
    print(json.dumps(per_seed, indent=1, default=float))
    if not args.no_write:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
