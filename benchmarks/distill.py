"""Distillation benchmark (issue 13): do edgeqd's recipes close the teacher–student gap?

Two tasks, each on its full training split (10% held out — 20% on the small sequence task —
to pick the best epoch) and scored on its full test split:

- ``fashion-mnist``: 60,000 training / 10,000 test images; the demo teacher (``edgeqd.demo``,
  VGG-style CNN, ~0.87 M parameters) and a student ≥ 15× smaller.
- ``japanese-vowels``: a sequence task that ships inside a package (sktime's wheel; see
  ``_sequence_data.py``): 270 / 370 utterances, 12 channels × 29 frames, 9 speakers. The
  teacher is a wide ``conv1d`` trained here (seeded, cached); the student a ``conv1d`` ≥ 15×
  smaller.

Rows (the same student architecture, initial weights, optimizer, batch size, epoch budget,
hold-out split and best-epoch rule in every row; ``--patience 0``: no row stops early):

- ``alone``: the student on hard labels (edgeqd's loop with α = 0, constant rate);
- ``alone-aug``: the same with the augmentation and cosine schedule of ``--recipe
  consistent`` (mixed labels where mixup mixes) — so a recipe's gain over it is the teacher's;
- ``classic`` / ``consistent`` / ``dkd``: ``edgeqd distill --recipe …``;
- ``keras3``: Keras 3's ``keras.distillation.Distiller`` with ``LogitsDistillation(temperature=4,
  loss=keras.losses.KLDivergence())`` — the loss *instance*, so that it applies softmax and
  T² — and ``student_loss_weight=0.1`` (edgeqd's α = 0.9); teacher and student are the same
  models carried into Keras 3 through ``.h5`` (weights identical);
- ``keras-io``: the keras-io example's Distiller (T = 10, α = 0.1 on the student loss) in tf_keras.

In the α = 0 rows the teacher term has weight 0; a one-layer stand-in teacher saves its
forward pass (same loop, augmentation, schedule and best-epoch rule).

Every finished (task, row, seed) is appended to a JSON file (``--state``) at once, and a
re-run skips what is there, so an interruption loses at most one run. ``--write`` turns the
state into the section "Distillation recipes (issue 13)" of RESULTS.md.

Run: ``nice -n 10 .venv/bin/python benchmarks/distill.py [--task all] [--seeds 3] [--epochs 10]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edgeqd  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from _common import machine, write_section  # noqa: E402
from _distill_peers import keras3_peer, keras_io_peer, standin_teacher  # noqa: E402

SECTION = "Distillation recipes (issue 13)"


@dataclass(frozen=True)
class Row:
    """One way to train the student."""

    label: str
    kind: str = "edgeqd"  # edgeqd | keras3 | keras-io
    settings: dict = field(default_factory=dict)
    standin: bool = False  # α = 0: the teacher term is off, a stand-in teacher saves its forward pass


ROWS = {
    "alone": Row("student alone (hard labels)", settings={"recipe": "classic", "alpha": 0.0}, standin=True),
    "alone-aug": Row("student alone + consistent's augmentation & cosine", settings={"recipe": "consistent",
                                                                                       "alpha": 0.0}, standin=True),
    "classic": Row("edgeqd --recipe classic (KL·T², T=4, α=0.9)", settings={"recipe": "classic"}),
    "consistent": Row("edgeqd --recipe consistent (same view, cosine)", settings={"recipe": "consistent"}),
    "dkd": Row("edgeqd --recipe dkd (DKD α=1 β=2, same view, cosine)", settings={"recipe": "dkd"}),
    "keras3": Row("Keras 3 keras.distillation (T=4, KLDivergence(), α=0.9)", kind="keras3"),
    "keras-io": Row("keras-io recipe (T=10, α=0.1 on CE)", kind="keras-io"),
}


@dataclass
class Task:
    """A data set, its teacher, and the student family and size."""

    name: str
    data: object  # edgeqd.types.Dataset
    teacher: object  # tf_keras model
    teacher_accuracy: float
    student: str
    width: float
    validation_fraction: float
    batch_size: int
    learning_rate: float
    note: str


def _accuracy(model, x, y) -> float:
    return float((np.asarray(model.predict(x, batch_size=512, verbose=0)).argmax(1) == y).mean())


TEACHER_EPOCHS = 12


def train_fashion_teacher(data, path: Path, epochs: int = TEACHER_EPOCHS):
    """The demo teacher's architecture (``edgeqd.demo.build_teacher``) trained to its potential.

    The cached demo teacher trains for 4 epochs without augmentation (90.8%): fine for the
    demo, but a weak teacher to distil from — it is wrong on ~8% of the training images, about
    as often as a small student. This one: random crops (±3 px) and flips, Adam 1e-3 with
    cosine decay, ``epochs`` epochs, seed 0, on the 54,000 images outside the hold-out.
    """
    import tensorflow as tf
    import tf_keras as keras

    from edgeqd.demo import build_teacher
    from edgeqd.distillation.augment import random_crop, random_flip
    from edgeqd.distillation.schedules import WarmupCosine
    from edgeqd.models import save_model

    keras.utils.set_random_seed(0)
    order = np.random.default_rng(0).permutation(len(data.x_train))[int(round(0.1 * len(data.x_train))):]
    ds = tf.data.Dataset.from_tensor_slices((data.x_train[order], data.y_train[order].astype(np.int32)))
    ds = ds.shuffle(len(order), seed=0).batch(128).map(
        lambda x, y: (random_flip(random_crop(x, 3)), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    model = build_teacher(data.input_shape, 10)
    steps = epochs * int(np.ceil(len(order) / 128))
    model.compile(optimizer=keras.optimizers.Adam(WarmupCosine(1e-3, steps, steps // epochs)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(ds, epochs=epochs, verbose=2)
    save_model(model, path, force=True)


def fashion_task(student: str, width: Optional[float]) -> Task:
    from edgeqd.data import cache_dir, load_dataset
    from edgeqd.distillation.students import size_to_teacher
    from edgeqd.models import load_model

    data = load_dataset("fashion-mnist")
    path = cache_dir() / "bench" / f"fashion_teacher_{TEACHER_EPOCHS}.keras"
    if not path.exists():
        train_fashion_teacher(data, path)
    teacher = load_model(path)
    # cnn at width 1 (16/32 filters): ~1/50 of the teacher, where a student alone leaves a clear gap.
    width = width or (1.0 if student == "cnn" else size_to_teacher(student, data.input_shape, 10,
                                                                   teacher.count_params()))
    return Task("fashion-mnist", data, teacher, _accuracy(teacher, data.x_eval, data.y_eval), student, width, 0.1,
                128, 1e-3, f"demo architecture, {TEACHER_EPOCHS} epochs with crops + flips, cosine")


def vowels_task(student: str, width: Optional[float]) -> Task:
    """Japanese Vowels and a wide conv1d teacher trained on its training split (cached by seed)."""
    import tf_keras as keras

    from _sequence_data import japanese_vowels
    from edgeqd.data import cache_dir
    from edgeqd.distillation.students import build_student, size_to_teacher
    from edgeqd.models import load_model, save_model
    from edgeqd.types import Dataset

    x, y, x_test, y_test, names = japanese_vowels()
    data = Dataset("japanese-vowels", x, y, x_test, y_test, names)
    path = cache_dir() / "bench" / "vowels_teacher_aug300.keras"
    if not path.exists():
        import tensorflow as tf

        from edgeqd.distillation.augment import jitter_and_scale
        from edgeqd.distillation.schedules import WarmupCosine

        keras.utils.set_random_seed(0)
        teacher = build_student("conv1d", x.shape[1:], 9, width=4.0)  # 16·4, 32·4, 64·4 filters
        ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32))).shuffle(len(x), seed=0).batch(32)
        ds = ds.map(lambda a, b: (jitter_and_scale(a, 0.03, 0.1), b))
        steps = 300 * int(np.ceil(len(x) / 32))
        teacher.compile(optimizer=keras.optimizers.Adam(WarmupCosine(1e-3, steps, steps // 30)),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        teacher.fit(ds, epochs=300, verbose=0)
        save_model(teacher, path, force=True)
    teacher = load_model(path)
    # The sizing rule aims at 1/15 and lands at 1/14.4 here; 0.875 makes the student ≥ 15× smaller.
    width = width or (0.875 if student == "conv1d" else size_to_teacher(student, x.shape[1:], 9,
                                                                       teacher.count_params()))
    return Task("japanese-vowels", data, teacher, _accuracy(teacher, x_test, y_test), student, width, 0.2, 32,
                1e-3, "conv1d ×4 trained here: 300 epochs, jitter + scaling, cosine, seed 0")


def run_row(task: Task, key: str, seed: int, epochs: int) -> dict:
    """Train the student one way with one seed; its test accuracy and seconds."""
    import tf_keras as keras

    from edgeqd.distillation import distill, split_validation
    from edgeqd.distillation.students import build_student
    from edgeqd.settings import DistillSettings

    row = ROWS[key]
    started = time.time()
    data = task.data
    keras.utils.set_random_seed(seed)
    student = build_student(task.student, data.input_shape, task.teacher.output_shape[-1], task.width)
    if row.kind == "edgeqd":
        teacher = standin_teacher(data.input_shape, task.teacher.output_shape[-1]) if row.standin else task.teacher
        settings = DistillSettings(student=task.student, epochs=epochs, patience=0, batch_size=task.batch_size,
                                   learning_rate=task.learning_rate, validation_fraction=task.validation_fraction,
                                   **row.settings)
        result = distill(teacher, data, settings, student=student, seed=seed, progress=False)
        accuracy, params, notes = result.student_accuracy, result.student_params, result.settings["resolved_recipe"]
    else:
        split = split_validation(data, task.validation_fraction, seed)
        peer = keras3_peer if row.kind == "keras3" else keras_io_peer
        accuracy = peer(task.teacher, student, split, (data.x_eval, data.y_eval), epochs, task.batch_size,
                        task.learning_rate, seed)
        params, notes = student.count_params(), None
    return {"accuracy": accuracy, "seconds": round(time.time() - started, 1), "params": int(params),
            "recipe": notes}


def _load_state(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _paired(runs: dict, key: str) -> str:
    """Mean ± std over seeds of (row − alone) with the same seed: same split, same initial weights."""
    if key in ("alone", "alone-aug") or "alone" not in runs:
        return "—"
    seeds = sorted(set(runs[key]) & set(runs["alone"]))
    deltas = [100 * (runs[key][s]["accuracy"] - runs["alone"][s]["accuracy"]) for s in seeds]
    if not deltas:
        return "—"
    mean, std = mean_std(deltas)
    return f"{mean:+.2f} ± {std:.2f}"


def _table(task_state: dict, rows: list[str]) -> tuple[list[str], list[str]]:
    """Markdown table lines and verdict lines of one task."""
    info = task_state["info"]
    teacher = info["teacher_accuracy"]
    runs = task_state["runs"]
    figures = {key: [runs[key][s]["accuracy"] for s in sorted(runs.get(key, {}))] for key in rows}
    lines = ["| row | params | × smaller | test accuracy | vs alone (pts) | paired Δ (pts) | gap closed | "
             "vs alone+aug | seeds | s/run |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    alone = mean_std(figures["alone"]) if figures.get("alone") else None
    alone_aug = mean_std(figures["alone-aug"]) if figures.get("alone-aug") else None
    verdicts = []
    for key in rows:
        values = figures.get(key) or []
        if not values:
            lines.append(f"| {ROWS[key].label} | | | not run | | | | | 0 | |")
            continue
        mean, std = mean_std(values)
        params = runs[key][sorted(runs[key])[0]]["params"]
        seconds = statistics.mean(r["seconds"] for r in runs[key].values())
        cells = []
        for base in (alone, alone_aug):
            if base is None or key in ("alone", "alone-aug"):
                cells.append(("—", "—"))
                continue
            gap = (mean - base[0]) / (teacher - base[0]) if teacher != base[0] else float("nan")
            cells.append((f"{100 * (mean - base[0]):+.2f}", f"{100 * gap:.0f}%"))
        lines.append(f"| {ROWS[key].label} | {params:,} | {info['teacher_params'] / params:.1f} | "
                     f"{100 * mean:.2f} ± {100 * std:.2f}% | {cells[0][0]} | {_paired(runs, key)} | {cells[0][1]} | "
                     f"{cells[1][1]} ({cells[1][0]}) | {len(values)} | {seconds:.0f} |")
        if key not in ("alone", "alone-aug") and alone is not None:
            for name, base in (("alone", alone), ("alone+aug", alone_aug)):
                if base is None:
                    continue
                gap = (mean - base[0]) / (teacher - base[0])
                if len(values) < 2 or len(figures["alone" if name == "alone" else "alone-aug"]) < 2:
                    verdicts.append(f"{key} vs {name}: {100 * gap:.0f}% of the gap (one seed: no std yet)")
                    continue
                margin = (mean - base[0]) / max(std, base[1], 1e-9)
                met = gap >= 0.5 and margin > 2 and info["teacher_params"] / params >= 15
                verdicts.append(f"{key} vs {name}: {100 * gap:.0f}% of the gap, {margin:.1f} std ahead → "
                                f"{'goal met' if met else 'goal not met'}")
    lines.append(f"| teacher ({info['teacher_note']}) | {info['teacher_params']:,} | 1.0 | {100 * teacher:.2f}% | "
                 f"— | — | — | — | — | — |")
    return lines, verdicts


def write_results(state: dict, rows: list[str]) -> str:
    body = [
        "Each task on its full training split (a seeded hold-out picks the best epoch) and its full test split; "
        "every row trains the same student (same initial weights per seed, Adam, batch size, epoch budget, "
        "no early stopping, best validation epoch kept); mean ± std over the seeds. \"Gap closed\" = "
        "(row − alone) / (teacher − alone); the goal (issue 13): ≥ 50% of the gap for a ≥ 15× smaller student "
        "at the same epoch budget and > 2 std ahead of the student alone (std = the larger of the two rows').",
        f"Machine: {machine()}, shared with other jobs, run at `nice -n 10`.", ""]
    for task_name, task_state in state.items():
        info = task_state["info"]
        body.append(f"### {task_name}: {info['student']} student (width {info['width']:.3g}), {info['epochs']} epochs, "
                    f"batch {info['batch_size']}, Adam {info['learning_rate']:g}")
        body.append("")
        body.append(f"{info['train_samples']:,} training samples ({100 * info['validation_fraction']:.0f}% held out), "
                    f"{info['test_samples']:,} test samples.")
        body.append("")
        lines, verdicts = _table(task_state, rows)
        done = [len(task_state["runs"].get(key, {})) for key in rows]
        if min(done) < max(done) or min(done) < 3:
            lines.append(f"| *partial: {sum(done)} of {3 * len(rows)} runs finished (a rerun resumes the rest)* "
                         "| | | | | | | | | |")
        body += lines + ["", "Verdicts: " + ("; ".join(verdicts) if verdicts else "none yet") + ".", ""]
    body.append("Reproduce: `nice -n 10 .venv/bin/python benchmarks/distill.py --task all --write` "
                "(`--seeds`, `--epochs`, `--rows`, `--student`, `--state`).")
    text = "\n".join(body)
    write_section(SECTION, text)
    return text


def main(argv=None) -> int:
    from edgeqd.data import cache_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("fashion-mnist", "japanese-vowels", "all"), default="all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="default: 8 (fashion-mnist), 60 (japanese-vowels)")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated, from: " + ", ".join(ROWS))
    parser.add_argument("--student", default=None, help="default: cnn (fashion-mnist), conv1d (japanese-vowels)")
    parser.add_argument("--width", type=float, default=None, help="default: sized to ~1/15 of the teacher")
    parser.add_argument("--state", type=Path, default=None,
                        help="JSON of finished runs (default: <edgeqd cache>/bench/distill_<task>.json)")
    parser.add_argument("--write", action="store_true", help="write the RESULTS.md section from every task's state")
    parser.add_argument("--write-only", action="store_true", help="only write the section; run nothing")
    args = parser.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    tasks = ("fashion-mnist", "japanese-vowels") if args.task == "all" else (args.task,)
    # One state file per task: two tasks can run side by side without overwriting each other.
    paths = {name: args.state or cache_dir() / "bench" / f"distill_{name}.json" for name in tasks}
    for name in tasks if not args.write_only else ():
        state = _load_state(paths[name])
        epochs = args.epochs or {"fashion-mnist": 8, "japanese-vowels": 60}[name]
        student = args.student or {"fashion-mnist": "cnn", "japanese-vowels": "conv1d"}[name]
        task = (fashion_task if name == "fashion-mnist" else vowels_task)(student, args.width)
        info = {"student": student, "width": task.width, "epochs": epochs, "batch_size": task.batch_size,
                "learning_rate": task.learning_rate, "teacher_accuracy": task.teacher_accuracy,
                "teacher_params": int(task.teacher.count_params()), "teacher_note": task.note,
                "train_samples": int(len(task.data.x_train)), "test_samples": int(len(task.data.x_eval)),
                "validation_fraction": task.validation_fraction}
        task_state = state.setdefault(name, {"info": info, "runs": {}})
        if {k: v for k, v in task_state["info"].items() if k != "teacher_accuracy"} != \
                {k: v for k, v in info.items() if k != "teacher_accuracy"}:
            print(f"{name}: settings changed since the state was written; starting this task afresh", flush=True)
            task_state = state[name] = {"info": info, "runs": {}}
        print(f"{name}: teacher {100 * task.teacher_accuracy:.2f}% ({info['teacher_params']:,} params), "
              f"student {student} width {task.width:.3g}, {epochs} epochs", flush=True)
        for seed in range(args.seeds):  # seeds outside: an interrupted run leaves whole seeds
            for key in rows:
                if str(seed) in task_state["runs"].get(key, {}):
                    continue
                figures = run_row(task, key, seed, epochs)
                task_state["runs"].setdefault(key, {})[str(seed)] = figures
                _save_state(paths[name], state)
                print(f"{name} seed {seed} {key:10s} {100 * figures['accuracy']:.2f}% "
                      f"({figures['params']:,} params, {figures['seconds']:.0f} s)", flush=True)
    if args.write or args.write_only:
        every = {}
        for name in ("fashion-mnist", "japanese-vowels"):
            path = args.state or cache_dir() / "bench" / f"distill_{name}.json"
            if name in _load_state(path):
                every[name] = _load_state(path)[name]
        print(write_results(every, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
