"""``edgeqd distill``: the distillation command, a thin shell over :func:`edgeqd.distillation.distill`.

Registered on the main group by :func:`register`. Exit codes: 0 ok, 2 usage (an
existing output without ``--force``, contradicting options, a bad option value such as
``--temperature 0`` or ``--alpha nan``), 3 a teacher, student or data that does not fit,
130 interrupted by Ctrl-C, 143 by SIGTERM (either way a checkpoint of the last finished
epoch is kept beside ``--out`` for ``--resume``; nothing else is written).
"""

from __future__ import annotations

from typing import Optional

import click

from edgeqd.cli.common import console, handle_errors, print_json
from edgeqd.cli.options import (build_settings, data_option, force_option, json_option, out_option, quiet_option,
                                seed_option, settings_options, unsafe_option)
from edgeqd.errors import UsageError
from edgeqd.settings import DistillSettings

_DEMO_SHAPE, _DEMO_CLASSES = (28, 28, 1), 10


def _students_table(rows, input_shape, num_classes, teacher_params):
    from rich.table import Table

    caption = f"for samples of shape {tuple(input_shape)} and {num_classes} classes"
    if teacher_params:
        caption += f"; default width sizes each student to ~1/15 of the teacher's {teacher_params:,} parameters"
    table = Table(title="student families (--student NAME, or a Keras model path)", caption=caption)
    for column, justify in (("family", "left"), ("fits", "left"), ("width", "right"), ("params", "right"),
                            ("× smaller", "right"), ("description", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for row in rows:
        ratio = f"{1 / row['fraction_of_teacher']:.1f}" if row["fraction_of_teacher"] else "–"
        table.add_row(row["family"], "yes" if row["fits"] else "[dim]no[/]",
                      f"{row['width']:.3g}" if row["width"] else "–",
                      f"{row['params']:,}" if row["params"] else "–", ratio, row["description"])
    return table


def _list_students(teacher: Optional[str], data: Optional[str], width: Optional[float], depth: float,
                   unsafe_deserialization: bool, as_json: bool) -> None:
    from edgeqd.distillation.students import list_students

    input_shape, num_classes, teacher_params = _DEMO_SHAPE, _DEMO_CLASSES, None
    if teacher:
        from edgeqd.distillation import logits_model
        from edgeqd.models import load_model, model_signature

        model = load_model(teacher, unsafe_deserialization=unsafe_deserialization)
        shape, num_classes = model_signature(logits_model(model)[0])
        teacher_params = int(model.count_params())
        input_shape = shape if None not in shape else input_shape
    if data:
        from edgeqd.data import load_dataset

        dataset = load_dataset(data)
        input_shape = dataset.input_shape
        if not teacher:
            labels = dataset.y_train if dataset.y_train is not None else dataset.y_eval
            num_classes = len(dataset.class_names) or (int(labels.max()) + 1 if labels is not None else num_classes)
    rows = list_students(input_shape, num_classes, teacher_params, width, depth)
    if as_json:
        print_json({"input_shape": list(input_shape), "num_classes": num_classes,
                    "teacher_params": teacher_params, "students": rows})
    else:
        console().print(_students_table(rows, input_shape, num_classes, teacher_params))


def _result_table(result):
    from rich.table import Table

    def pct(value):
        return "–" if value is None else f"{100 * value:.2f}%"

    table = Table(title="edgeqd distill", show_header=False)
    table.add_column("figure")
    table.add_column("value", overflow="fold")
    rows = [("student", f"{result.settings.get('student')} ({result.student_params:,} parameters, "
                        f"{result.param_ratio:.1f}× smaller than the teacher)"),
            ("student accuracy", pct(result.student_accuracy)),
            ("teacher accuracy", pct(result.teacher_accuracy)),
            ("agreement with teacher", pct(result.agreement)),
            ("best epoch", f"{result.best_epoch} of {result.epochs_run} run"),
            ("time", f"{result.seconds:.1f} s"),
            ("saved", result.student_path or "–"), ("report", result.report_path or "–")]
    for note in result.notes:
        rows.append(("note", note))
    for key, value in rows:
        table.add_row(key, value)
    return table


@click.command("distill")
@click.option("--teacher", "teacher", metavar="MODEL", help="The trained teacher (.keras, .h5 or SavedModel).")
@data_option(required=False)
@out_option("Where to save the student (.keras or .h5).", required=False, metavar="STUDENT.keras")
@settings_options(DistillSettings)
@click.option("--resume", is_flag=True, help="Go on from the checkpoint an interrupted run left beside --out.")
@force_option
@seed_option
@unsafe_option
@quiet_option
@json_option
@click.option("--list-students", is_flag=True,
              help="List the built-in students with parameter counts for --data/--teacher, then exit.")
@handle_errors
def distill_command(teacher, data, out, resume, force, seed, unsafe_deserialization, quiet, as_json, list_students,
                    **options):
    """Distil a small student from a trained teacher (soft targets, features, attention).

    \b
    loss = (1 − α)·CE(labels, student) + α·teacher term
           [+ feature terms] [+ attention terms]; without labels the teacher term alone.
    teacher term: T²·KL(teacher/T ‖ student/T) (--loss kl) or DKD (--loss dkd).

    \b
    --recipe presets loss, augmentation and schedule (each option overrides it):
      classic     KL·T², no augmentation, constant rate, 20 epochs
      consistent  teacher and student see the same augmented view (crops + mixup for
                  images, jitter + scaling for sequences), cosine decay, 20 epochs
      patient     consistent for 60 epochs
      dkd         consistent with decoupled KD

    \b
    Examples:
      edgeqd distill --teacher teacher.keras --data fashion-mnist --out student.keras
      edgeqd distill --teacher t.keras --data d.npz --recipe patient --flip --out s.keras
      edgeqd distill --teacher t.keras --data d.npz --student mobilenet --width 0.5 \\
          --feature re_lu_3:block2_pw_relu --out s.keras
      edgeqd distill --list-students --teacher teacher.keras --data fashion-mnist
    """
    settings = build_settings(DistillSettings, options)
    if list_students:
        _list_students(teacher, data, settings.width, settings.depth, unsafe_deserialization, as_json)
        return
    missing = [name for name, value in (("--teacher", teacher), ("--data", data), ("--out", out)) if not value]
    if missing:
        raise UsageError(f"missing {', '.join(missing)} (or pass --list-students)")
    from edgeqd.distillation import distill

    result = distill(teacher, data, settings, out, seed=seed, force=force, resume=resume,
                     unsafe_deserialization=unsafe_deserialization, progress=not quiet)
    if as_json:
        print_json(result.to_dict())
    elif result.student_path is not None:  # non-chief workers of a multi-worker run stay silent
        console().print(_result_table(result))


def register(group: click.Group) -> None:
    """Add ``distill`` to the main command group.

    Args:
        group: the ``edgeqd`` click group.
    """
    group.add_command(distill_command)
