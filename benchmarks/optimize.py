"""``edgeqd optimize`` against what a user would do by hand, and against a random search.

The demo teacher on Fashion-MNIST (a seeded training subset, the 10,000 test images split
in half: one half for the search to select on, the other — the "test" half — for every
figure below). For each budget:

* **by hand, PTQ**: ``convert --distill-from`` with the default ``distill`` student (sized
  to ~1/15 of the teacher), int8 PTQ;
* **by hand, QAT**: that student, then plain TFMOT QAT on the labels (no teacher, no PTQ
  fallback: ``QATSettings(self_distill=False, fallback=False)``);
* **random search**: ``optimize`` with ``--sampler random``, the same trial count;
* **optimize**: ``optimize`` with its default sampler (TPE).

Each row: accuracy of the shipped int8 artifact on the test half, drop against the teacher
there, size, median latency at 1 thread on this machine (``local``), whether it is within
the budget, and wall time. Every run uses the same epochs and training subset. Writes the
section "Search — edgeqd optimize (issue 15)" of RESULTS.md.

Usage: ``nice -n 10 python benchmarks/optimize.py [--trials 6] [--epochs 3] [--train-samples 6000]
[--budgets 64:1,16:3] [--teacher PATH]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edgeqd  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)

from _common import machine, write_section  # noqa: E402

SECTION = "Search — edgeqd optimize (issue 15)"
# Written for the run in RESULTS.md (its figures are that run's); a new run replaces the section.
READING = (
    'Reading. At this small training budget (3 epochs on 6,000 images; the teacher was trained far '
    'longer) **no pipeline met either budget**: every student is 11+ pts below the teacher, so each '
    'search ended with exit 4, and the rows give the closest trained candidate it named. **≤ 64 KB**: '
    "optimize's closest, an mlp (w0.5, int8, QAT with the teacher), beats the by-hand pipelines on all "
    'three figures — 79.24 % vs 70.7 %, 61.2 KB vs 75 KB (the default student is over the size budget), '
    "0.001 ms vs 0.05 ms — and the random search's pick (64.08 %) at the same 5 trained candidates. **≤ "
    "16 KB**: both searches' closest candidates are poor (27-32 %): the small cnn/mobilenet students at "
    'depth 0.5 barely learn in 3 epochs (their float students were at 14-25 %), and TPE spent 14 of its '
    'proposals on candidates pruned for size or repeated (seconds each, no training). Wall time: 140-164 '
    's per search for 5 trained candidates against 78 s (PTQ) and 121 s (QAT) by hand. One seed, one run,'
    ' shared 2-core machine: read the ≤ 64 KB ordering as a result, the rest as a smoke test of the '
    "benchmark; the issue's budgets need full-length training to be reachable. Acceptance run (not in "
    'this script): the Conv1D sine-sequence teacher of the tests (15,139 parameters, 100 % held out), '
    '`--max-size-kb 16 --max-drop 4 --trials 8 --device local`: 16 proposals, 8 trained, 4 pruned on '
    'exact size; chosen mlp w0.5 d0.5 w4a8 (PTQ), 9.3 KB, 0.333 pts below the teacher on 300 held-out '
    'samples the search never saw; 3 min 55 s; `--resume --trials 10` continued the same study (trials '
    '16-17 added, 1 min 20 s).'
)


def _teacher(path: str | None) -> Path:
    """The demo teacher: the given file, the cached one, or one trained on 10,000 images for 1 epoch."""
    from edgeqd.demo.teacher import demo_teacher_path, train_demo_teacher

    for candidate in (path, demo_teacher_path(), Path.home() / ".cache/edgeqd/demo/teacher.keras"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return train_demo_teacher(epochs=1, samples=10_000)


def _latency(artifact: Path) -> float:
    from edgeqd.devices import bench
    from edgeqd.settings import BenchSettings

    rows = bench([artifact], ["local"], None, BenchSettings(runs=50, warmup=5, min_seconds=0.5, reference="none"))
    return float(rows[0].p50_ms)


def _row(name: str, artifact: Path, test, teacher_test: float, budget: tuple, seconds: float, note: str) -> dict:
    from edgeqd.optimize.train import artifact_accuracy

    accuracy = artifact_accuracy(artifact, test.x_eval, test.y_eval)
    size_kb = artifact.stat().st_size / 1024
    drop = 100 * (teacher_test - accuracy)
    return {"name": name, "accuracy": accuracy, "drop": drop, "size_kb": size_kb, "latency": _latency(artifact),
            "within": size_kb <= budget[0] and drop <= budget[1], "seconds": seconds, "note": note}


def _by_hand(teacher: Path, selection, test, teacher_test: float, epochs: int, work: Path) -> list:
    """The two by-hand pipelines (the same for every budget): their artifacts and wall times."""
    from edgeqd.pipeline import convert
    from edgeqd.settings import ConvertSettings, DistillSettings, QATSettings

    started = time.monotonic()
    ptq = convert(None, selection, work / "hand-ptq", ConvertSettings(formats=("tflite-int8",),
                                                                      distill=DistillSettings(epochs=epochs)),
                  teacher=str(teacher))
    ptq_s = time.monotonic() - started
    student = work / "hand-ptq" / ptq.manifest["distillation"]["student_path"]
    started = time.monotonic()
    convert(student, selection, work / "hand-qat",
            ConvertSettings(formats=("tflite-int8",), qat=QATSettings(epochs=1, self_distill=False, fallback=False)))
    qat_s = time.monotonic() - started + ptq_s  # the student had to be distilled first
    return [("by hand: default student + PTQ", work / "hand-ptq" / "model_int8.tflite", ptq_s),
            ("by hand: default student + TFMOT QAT", work / "hand-qat" / "model_int8.tflite", qat_s)]


def _search(name: str, sampler: str, teacher: Path, selection, budget: tuple, args, work: Path):
    from edgeqd.errors import ConversionError
    from edgeqd.optimize import OptimizeSettings, optimize

    settings = OptimizeSettings(max_size_kb=budget[0], max_drop=budget[1], trials=args.trials, epochs=args.epochs,
                                sampler=sampler, test_fraction=0.5, seed=0)
    out = work / f"{sampler}-{budget[0]:g}-{budget[1]:g}"
    started = time.monotonic()
    result = optimize(str(teacher), selection, out, settings, device="local")
    seconds = time.monotonic() - started
    rows = result.document["candidates"]
    counted = f"{sum(r['status'] == 'trained' for r in rows)} trained, {sum(r['status'] != 'trained' for r in rows)} " \
              "pruned/duplicate/failed"
    try:
        result.raise_for_problems()
    except ConversionError:
        # Nothing within budget: the closest trained candidate (what the exit-4 message names first), still
        # measured on the test half so that the rows stay comparable.
        from edgeqd.optimize.results import closest

        near = [r for r in closest(rows, result.document["budgets"]) if r["status"] == "trained"]
        if not near:
            return None, seconds, f"nothing trained ({counted})"
        return (Path(near[0]["trial_dir"]) / near[0]["file"], seconds,
                f"none within budget; closest: {near[0]['candidate']['label']} ({counted})")
    chosen = result.chosen
    return (out / "best" / chosen["file"], seconds,
            f"{chosen['candidate']['label']}, {chosen['quantization']} ({counted})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-samples", type=int, default=6000)
    parser.add_argument("--budgets", default="64:1,16:3", help="KB:PTS pairs")
    parser.add_argument("--teacher", default=None)
    args = parser.parse_args()
    from edgeqd.data import load_for_model
    from edgeqd.optimize.measure import accuracy
    from edgeqd.optimize.train import split_held_out, subset_train
    from edgeqd.pipeline import load_keras

    teacher = _teacher(args.teacher)
    model, _ = load_keras(str(teacher), "teacher", False)
    dataset = subset_train(load_for_model(model, "fashion-mnist"), args.train_samples, 0)
    selection, test = split_held_out(dataset, 0.5, 0)
    teacher_test = accuracy(model, test.x_eval, test.y_eval)
    budgets = [tuple(float(v) for v in pair.split(":")) for pair in args.budgets.split(",")]
    work = Path(tempfile.mkdtemp(prefix="edgeqd-bench-optimize-"))
    lines = [f"Machine: {machine()}. Demo teacher ({model.count_params():,} parameters, {teacher.name}), "
             f"{100 * teacher_test:.2f} % on the test half ({len(test.x_eval):,} images). "
             f"{args.train_samples:,} training images, {args.epochs} distillation epochs everywhere, "
             f"{args.trials} trained candidates per search, QAT 1 epoch. Latency: LiteRT on this machine "
             "(`local`), 1 thread, median. Accuracy and drop: the test half, which no search selected on.", ""]
    try:
        hand = _by_hand(teacher, selection, test, teacher_test, args.epochs, work)
        for budget in budgets:
            rows = [_row(name, path, test, teacher_test, budget, s, "") for name, path, s in hand]
            for name, sampler in (("random search", "random"), ("edgeqd optimize (TPE)", "tpe")):
                path, seconds, note = _search(name, sampler, teacher, selection, budget, args, work)
                if path is None:
                    rows.append({"name": name, "note": note, "seconds": seconds})
                else:
                    rows.append(_row(name, path, test, teacher_test, budget, seconds, note))
            lines += [f"### Budget ≤ {budget[0]:g} KB, ≤ {budget[1]:g} pts", "",
                      "| pipeline | accuracy | drop (pts) | size (KB) | p50 (ms) | within budget | wall (s) | shipped |",
                      "|---|---:|---:|---:|---:|:---:|---:|---|"]
            for r in rows:
                if "accuracy" not in r:
                    lines.append(f"| {r['name']} | – | – | – | – | no | {r['seconds']:.0f} | {r['note']} |")
                    continue
                lines.append(f"| {r['name']} | {100 * r['accuracy']:.2f} % | {r['drop']:.2f} | {r['size_kb']:.1f} | "
                             f"{r['latency']:.3f} | {'yes' if r['within'] else 'no'} | {r['seconds']:.0f} | "
                             f"{r['note']} |")
            lines.append("")
            print("\n".join(lines[-len(rows) - 4:]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_section(SECTION, "\n".join(lines + ["", READING]))


if __name__ == "__main__":
    main()
