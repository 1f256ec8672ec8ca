"""The demo: a big teacher becomes a small, verified int8 student — the whole story in one command.

``make demo`` runs ``python -m edgeqd.demo`` through the one path every run takes
(:func:`edgeqd.pipeline.convert`):

1. **teacher**: a VGG-style CNN (~0.9 M parameters) trained on Fashion-MNIST once, seeded,
   cached in ``<cache>/demo/`` (:func:`demo_teacher_path`); later runs reuse it;
2. **student** (one ``convert`` call): distil a small student, fine-tune it quantization-aware
   with the teacher in every step, write int8 TFLite and ONNX (and their float twins), each
   verified in its runtime → ``demo_out/``;
3. **teacher fp32**: ``convert`` of the teacher, float TFLite and ONNX verified on the same
   held-out images → ``demo_out/teacher/``;
4. **bench** on this host, teacher fp32 against student int8 → ``demo_out/bench.json``, and the
   student's int8 TFLite in TensorFlow Lite Micro (device ``tflm``: tensor arena, flash, ops);
5. **report** → ``demo_out/report.html``; then the **summary**, every figure read back from
   the manifests and the bench document just written.

The budgets are a :class:`DemoBudget`; ``EDGEQD_DEMO_OUT`` sets the output folder.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional


from edgeqd.demo.summary import (Figures, artifact_row, int8_origin, micro_line, read_figures,  # noqa: F401
                                 summary_lines, timing_lines)
from edgeqd.demo.teacher import (DEMO_EPOCHS, DEMO_SEED, build_teacher, demo_teacher_path,  # noqa: F401
                                 train_demo_teacher, training_subset)
from edgeqd.errors import EdgeqdError
from edgeqd.settings import BenchSettings, ConvertSettings, DistillSettings, QATSettings, VerifySettings

TEACHER_FOLDER = "teacher"  # the teacher's own run, inside the demo's output folder
BENCH_FILE, REPORT_FILE = "bench.json", "report.html"
# Formats of the student's run: the int8 pair the story is about, and the float pair the
# report's parity table compares them with (and that `edgeqd bench demo_out/...` names).
STUDENT_FORMATS = ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8")
TEACHER_FORMATS = ("tflite-fp32", "onnx-fp32")
# (teacher's run, its format) → (student's run, its format): the pairs the bench compares.
BENCH_PAIRS = (("tflite-fp32", "tflite-int8"), ("onnx-fp32", "onnx-int8"))
STUDENT_STAGE = "student (distil, QAT, convert, verify)"


@dataclass(frozen=True)
class DemoBudget:
    """How much work the demo does; the defaults are ``make demo``'s, a test shrinks them.

    Attributes:
        teacher_epochs: epochs of the teacher's training (only when it is not cached).
        teacher_samples: training images of the teacher (None = all 60,000).
        train_samples: training images the student sees, a seeded subset (None = all).
        distill: the distillation stage (student family, size, epochs).
        qat: the quantization-aware fine-tuning (with the teacher in every step).
        eval_samples: held-out images every accuracy is measured on (None = all 10,000).
        bench: the latency measurement on this host.
    """

    teacher_epochs: int = DEMO_EPOCHS
    teacher_samples: Optional[int] = None
    train_samples: Optional[int] = 20_000
    # A short schedule wants the classic recipe (augmented views need more epochs than the demo
    # has), a cosine decay and more steps. Measured on these 20,000 images, 10,000 test images:
    # consistent 3 epochs 71.8 %; classic 3 epochs 82.8 %; + Adam 3e-3, batch 64 85.7 %; 5 epochs
    # with cosine decay 88.5 % (all 60,000 images for 2 epochs: 88.5 %, at 1.4× the time).
    distill: DistillSettings = field(default_factory=lambda: DistillSettings(
        student="mobilenet", recipe="classic", epochs=5, learning_rate=3e-3, batch_size=64, schedule="cosine",
        warmup_epochs=0))
    qat: QATSettings = field(default_factory=lambda: QATSettings(epochs=1, train_samples=10_000))
    eval_samples: Optional[int] = None
    bench: BenchSettings = field(default_factory=lambda: BenchSettings(threads=(1,), runs=100, min_seconds=1.0,
                                                                       samples=500))


# --------------------------------------------------------------------------- the figures


# --------------------------------------------------------------------------- the run

@dataclass
class DemoResult:
    """What one demo run produced: the output folder, both models' figures, the summary lines,
    stage → seconds (in the order they ran) and the HTML report."""

    out: Path
    teacher: Figures
    student: Figures
    summary: list[str]
    timings: dict[str, float]
    report: Path


class _Clock:
    """Seconds per stage, and progress lines stamped with the time since the start."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}
        self._last = ""

    def stage(self, name: str, seconds: float) -> None:
        self.timings[name] = round(seconds, 1)

    def progress(self, step: str, done: int, total: int) -> None:
        """A ``convert`` progress callback: one line per new step."""
        if step != self._last:
            self._last = step
            self.say(f"  {time.perf_counter() - self.started:6.1f} s  {step}")


def _timed(clock: _Clock, name: str, work: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    value = work()
    clock.stage(name, time.perf_counter() - started)
    return value


def _bench(out: Path, artifacts: list[Path], settings: BenchSettings, say: Callable[[str], None],
           micro: Optional[Path] = None) -> dict[str, str]:
    """Bench the artifacts on this host (and ``micro`` on ``tflm``), write ``bench.json``; return path → row label."""
    from edgeqd.devices import bench
    from edgeqd.devices.bench import artifact_labels
    from edgeqd.documents import new_bench_document, write_document

    rows = bench(artifacts, ["local"], data="fashion-mnist", settings=settings, log=lambda line: say("  " + line))
    if micro is not None:  # TFLM's reference kernels are slow: few timed runs (its latency is no MCU's anyway)
        import dataclasses

        label = dict(zip(artifacts, artifact_labels(artifacts)))[micro]  # the local rows' name for it
        rows += [dataclasses.replace(row, artifact=label) for row in bench(
            [micro], ["tflm"], data="fashion-mnist", settings=settings.replace(runs=10, min_seconds=0.2),
            log=lambda line: say("  " + line))]
    # Paths relative to the bench file's folder: the report finds them there, wherever demo_out is moved.
    document = new_bench_document([row.to_dict() for row in rows], {
        "artifacts": [str(a.relative_to(out)) for a in artifacts], "data": "fashion-mnist",
        "devices": ["local"] + (["tflm"] if micro is not None else []),
        **settings.to_dict()})
    write_document(out / BENCH_FILE, document, force=True)
    return dict(zip(map(str, artifacts), artifact_labels(artifacts)))


def _student_settings(budget: DemoBudget) -> ConvertSettings:
    return ConvertSettings(formats=STUDENT_FORMATS, seed=DEMO_SEED, distill=budget.distill, qat=budget.qat,
                           verify=VerifySettings(eval_samples=budget.eval_samples))


def run_demo(out: str | Path = "demo_out", budget: Optional[DemoBudget] = None, *,
             teacher: Optional[str | Path] = None, say: Callable[[str], None] = print) -> DemoResult:
    """Run the whole chain: teacher → distilled, QAT-trained int8 student → bench → report → summary.

    Args:
        out: the output folder (replaced: it is the demo's own).
        budget: epochs, samples and bench timing (default: ``make demo``'s).
        teacher: where the teacher is cached (default :func:`demo_teacher_path`); trained
            there with ``budget.teacher_epochs`` when missing.
        say: receives every line the demo prints.

    Returns:
        A :class:`DemoResult`; its summary figures are read from the files written.

    >>> run_demo("demo_out").summary  # doctest: +SKIP
    """
    from edgeqd.data import load_dataset
    from edgeqd.documents import read_document
    from edgeqd.pipeline import convert
    from edgeqd.reporting import write_report

    budget = budget or DemoBudget()
    out, clock = Path(out), _Clock(say)
    teacher_path = Path(teacher or demo_teacher_path(budget.teacher_epochs, budget.teacher_samples))
    cached = teacher_path.exists()
    say(f"== 1. teacher: {teacher_path}" + (" (cached)" if cached else
        f" (training it once: {budget.teacher_epochs} epochs on "
        f"{f'{budget.teacher_samples:,}' if budget.teacher_samples else 'all'} Fashion-MNIST training images)"))
    _timed(clock, "teacher (cached)" if cached else "teacher training", lambda: train_demo_teacher(
        teacher_path, epochs=budget.teacher_epochs, samples=budget.teacher_samples))
    data = training_subset(load_dataset("fashion-mnist"), budget.train_samples)
    say(f"== 2. student: distil a {budget.distill.student} student on {len(data.x_train):,} training images, "
        f"QAT with the teacher in the loop, int8 TFLite + ONNX verified → {out}/")
    result = _timed(clock, STUDENT_STAGE, lambda: convert(
        None, data, out, _student_settings(budget), teacher=teacher_path, force=True, progress=clock.progress))
    result.raise_for_problems()
    _stage_breakdown(clock, result.manifest)
    say(f"== 3. teacher fp32: its own TFLite and ONNX, verified on the same held-out images → {out / TEACHER_FOLDER}/")
    teacher_out = out / TEACHER_FOLDER
    _timed(clock, "teacher fp32 convert + verify", lambda: convert(
        teacher_path, data, teacher_out, ConvertSettings(formats=TEACHER_FORMATS, seed=DEMO_SEED,
                                                         verify=VerifySettings(eval_samples=budget.eval_samples)),
        progress=clock.progress).raise_for_problems())
    artifacts = [folder / _file(folder, name) for pair in BENCH_PAIRS
                 for folder, name in ((teacher_out, pair[0]), (out, pair[1]))]
    say(f"== 4. bench on this host: teacher fp32 vs student int8, {budget.bench.threads[0]} thread(s) "
        f"→ {out / BENCH_FILE}")
    labels = _timed(clock, "bench", lambda: _bench(out, artifacts, budget.bench, say, micro=artifacts[1]))
    report = _timed(clock, "report", lambda: write_report([out, teacher_out], out / REPORT_FILE,
                                                          title="edgeqd demo — teacher vs student", force=True))
    rows = read_document(out / BENCH_FILE)[1]["rows"]
    teacher_figures = read_figures("teacher fp32", teacher_out, "tflite-fp32", rows, labels, "onnx-fp32")
    student_figures = read_figures("student int8", out, "tflite-int8", rows, labels, "onnx-int8")
    headline = (f"== teacher vs student (accuracy on the same {student_figures.eval_samples:,} held-out test "
                f"images; p50 latency on this host, {budget.bench.threads[0]} thread, one bench run)")
    lines = [headline, *summary_lines(teacher_figures, student_figures), int8_origin(result.manifest),
             micro_line(rows, labels[str(artifacts[1])])]
    return DemoResult(out, teacher_figures, student_figures, lines, clock.timings, report)


def _file(folder: Path, name: str) -> str:
    """The file of a run's verified artifact ``name``, from its manifest."""
    from edgeqd.documents import MANIFEST_FILE, read_document

    return artifact_row(read_document(folder / MANIFEST_FILE)[1], name, folder)["file"]


def _stage_breakdown(clock: _Clock, manifest: dict) -> None:
    """Split the student's convert time into its stages, as its manifest records them."""
    total = clock.timings.get(STUDENT_STAGE)
    distil = manifest.get("distillation", {}).get("seconds")
    qat = manifest.get("quantize", {}).get("training_seconds")
    if total is not None and distil is not None and qat is not None:
        clock.stage("  of which distillation", distil)
        clock.stage("  of which QAT (with the teacher)", qat)
        clock.stage("  of which conversion + verification", max(0.0, total - distil - qat))


def main(argv: Optional[list[str]] = None, *, budget: Optional[DemoBudget] = None,
         teacher: Optional[str | Path] = None) -> int:
    """``python -m edgeqd.demo``: run the demo into ``$EDGEQD_DEMO_OUT`` (default ``demo_out``), print the story.

    Args:
        argv: unused (the demo takes no options); kept for ``sys.exit(main(sys.argv[1:]))``.
        budget: epochs, samples and bench timing (default: ``make demo``'s).
        teacher: where the teacher is cached (default :func:`demo_teacher_path`).

    Returns:
        The exit code: 0, or the code of the edgeqd error that stopped it (one ``error:`` line).

    >>> main()  # doctest: +SKIP
    """
    from edgeqd import interrupts
    from edgeqd.cli.common import native_logs_captured

    out = Path(os.environ.get("EDGEQD_DEMO_OUT", "demo_out"))
    started = time.perf_counter()
    try:  # TensorFlow's and LiteRT's C++ log lines stay off the terminal (replayed if something crashes)
        with interrupts.handled(), native_logs_captured():
            result = run_demo(out, budget, teacher=teacher, say=lambda line: print(line, flush=True))
    except EdgeqdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the stage's outputs are already rolled back
        print("interrupted", file=sys.stderr)
        return interrupts.exit_code(interrupts.received())
    print("\n== timings (wall clock, this host)")
    print("\n".join(timing_lines(result.timings)))
    print(f"{'whole run (imports, data included)':38} {time.perf_counter() - started:6.1f} s")
    print()
    print("\n".join(result.summary))
    print(f"\nreport: {result.report.resolve()} (open it in a browser)")
    print(f"next:   edgeqd inspect {out / 'model_int8.tflite'}   ·   {out / 'INTEGRATION.md'}")
    return 0

