"""``edgeqd convert`` and ``edgeqd quantize``: one pipeline, two presets.

Both commands call :func:`edgeqd.pipeline.convert` with the same options; they differ
only in the default of ``--mode`` (``convert``: post-training quantization;
``quantize``: quantization-aware training). Exit codes: 0 ok, 2 usage, 3 a model,
teacher or data that does not fit, 4 a converter failed or an artifact is over
``--max-drop`` (or a layer must stay float under ``--strict``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import click

from edgeqd.cli.common import handle_errors, print_json, progress_bar
from edgeqd.cli.options import (build_settings, data_option, force_option, formats_option, json_option,
                                out_option, parse_formats, seed_option, settings_options, unsafe_option)
from edgeqd.settings import (DEFAULT_FORMATS, CalibrationSettings, ConvertSettings, DistillSettings, QATSettings,
                             VerifySettings)

MODES = ("ptq", "qat")
# convert offers distillation's --epochs as --distill-epochs (QAT has --epochs of its own).
DISTILL_SPELLINGS = {"epochs": "--distill-epochs"}


def _pipeline_options(default_mode: str) -> Callable:
    """The options of both commands, declared once; ``--mode`` defaults to ``default_mode``."""
    decorators = [
        click.argument("model", type=click.Path(path_type=Path), required=False),
        data_option(), out_option("Output folder (created atomically; replaced only with --force)."),
        formats_option,
        click.option("--mode", type=click.Choice(MODES), default=default_mode, show_default=True,
                     help="ptq: calibrate int8 ranges; qat: quantization-aware fine-tuning first."),
        click.option("--teacher", type=click.Path(path_type=Path), default=None, metavar="MODEL",
                     help="Distil from this model in every QAT step (--mode qat) [default: the float model "
                          "teaches itself]."),
        settings_options(QATSettings),
        click.option("--distill-from", type=click.Path(path_type=Path), default=None, metavar="TEACHER",
                     help="Distil a student from TEACHER first and convert the student (no MODEL); with "
                          "--mode qat the same teacher teaches the QAT steps."),
        settings_options(DistillSettings, "student", "recipe", "epochs", **DISTILL_SPELLINGS),
        settings_options(CalibrationSettings), settings_options(VerifySettings),
        seed_option, force_option, unsafe_option, json_option,
    ]

    def decorate(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return decorate


def _settings(mode: str, formats: Optional[str], distill_from: Optional[Path], seed: int,
              options: dict) -> ConvertSettings:
    """The run's settings from the command's options (every stage option is consumed)."""
    from edgeqd.errors import UsageError

    qat = build_settings(QATSettings, options)
    distill = build_settings(DistillSettings, options, DISTILL_SPELLINGS)
    if mode == "ptq" and qat.features:
        raise UsageError("--feature applies to --mode qat (post-training quantization does not train)")
    return ConvertSettings(formats=tuple(parse_formats(formats) or DEFAULT_FORMATS), seed=seed,
                           calibration=build_settings(CalibrationSettings, options),
                           verify=build_settings(VerifySettings, options),
                           qat=qat if mode == "qat" else None, distill=distill if distill_from else None)


def _teacher(teacher: Optional[Path], distill_from: Optional[Path]) -> Optional[Path]:
    """The run's one teacher: --distill-from and --teacher name the same model when both are given."""
    from edgeqd.errors import UsageError

    if teacher and distill_from and Path(teacher).resolve() != Path(distill_from).resolve():
        raise UsageError(f"--teacher {teacher} and --distill-from {distill_from} differ: one teacher distils "
                         "the student and teaches the QAT steps")
    return teacher or distill_from


def show_result(result, as_json: bool) -> None:
    """Print a pipeline result: the manifest as JSON, or its tables and notes.

    Args:
        result: the :class:`edgeqd.pipeline.ConvertResult`.
        as_json: print the manifest as JSON instead.
    """
    from edgeqd.cli.common import console
    from edgeqd.cli.tables import convert_table, parity_table

    manifest = result.manifest
    if as_json:
        print_json(manifest)
        return
    out = console()
    out.print(convert_table(manifest))
    section = manifest.get("quantize") or {}
    if section:
        out.print(parity_table(manifest))
    for rewrite in section.get("rewrites", []):
        click.echo(f"rewrote {rewrite['layer']} ({rewrite['rule']}): {rewrite['detail']}")
    if "left_float" in section:
        left = section["left_float"]
        click.echo("left float: " + ("nothing — every layer is quantized" if not left else
                                     "; ".join(f"{f['name']} ({f['reason']})" for f in left)))
    choice = manifest.get("int8_choice")
    if choice:
        click.echo(_choice_line(choice))
    notes = [*section.get("notes", []), manifest.get("calibration", {}).get("note"),
             *(f"{a['file']}: {a['details']['note']}" for a in manifest["artifacts"]
               if a["status"] == "ok" and (a.get("details") or {}).get("note"))]
    for note in filter(None, notes):
        click.echo(f"note: {note}")
    for warning in manifest.get("warnings") or []:
        click.echo(f"warning: {warning} (quantization lost more than usual; --max-drop PTS makes this an error)")
    ok = sum(a.status.value == "ok" for a in result.artifacts)
    click.echo(f"wrote {result.out}/ (manifest.json + {ok} artifacts)")


def _choice_line(choice: dict) -> str:
    """One line on which int8 model shipped: QAT's or PTQ's, with both validation figures."""
    def figure(which: str) -> str:
        entry = choice.get(which) or {}
        if "agreement" in entry:
            return f"{which.upper()} {100 * entry['agreement']:.2f}% (TV {entry['tv']:.3g})"
        return f"{which.upper()} " + ("failed" if "failed" in entry else "not built")

    return (f"int8: {choice['shipped'].upper()} shipped — agreement with the {choice['target']} on "
            f"{choice['validation_samples']} validation samples: {figure('qat')}, {figure('ptq')}; {choice['reason']}")


def _pipeline_command(name: str, default_mode: str, help_text: str) -> click.Command:
    """``convert`` or ``quantize``: the same options and library call, another default mode."""

    @click.command(name, help=help_text)
    @_pipeline_options(default_mode)
    @handle_errors
    def command(model, data, out, formats, mode, teacher, distill_from, seed, force, unsafe_deserialization,
                as_json, **options) -> None:
        from edgeqd.pipeline import convert

        settings = _settings(mode, formats, distill_from, seed, options)
        with progress_bar(quiet=as_json) as report:
            result = convert(model, data, out, settings, teacher=_teacher(teacher, distill_from), force=force,
                             unsafe_deserialization=unsafe_deserialization, progress=report)
        show_result(result, as_json)
        result.raise_for_problems()

    return command


convert_command = _pipeline_command("convert", "ptq", """Convert MODEL (.keras, .h5 or SavedModel) to verified int8/float TFLite and ONNX.

    Every artifact is loaded back in LiteRT / ONNX Runtime and evaluated on the held-out
    split against the float model; DIR/manifest.json records sizes, quantization
    parameters, accuracy, agreement and sha256 digests. --mode qat fine-tunes first
    (see `edgeqd quantize`); --distill-from TEACHER --student SPEC distils a student first.
    """)
quantize_command = _pipeline_command("quantize", "qat", """Quantize MODEL: QAT (from calibrated ranges, distilling from the float model or --teacher) or calibrated PTQ.

    `edgeqd convert` with --mode qat by default. Layers TFMOT rejects are rewritten into
    equivalents (checked numerically); what still cannot be quantized stays float and is
    listed. The best epoch on a validation split is kept, and the QAT and PTQ int8 models
    are compared there: the better ships (--no-fallback: QAT). The Keras model, the
    fake-quant model and every artifact are evaluated on the same held-out split: their
    accuracies and pairwise agreement are printed and written to DIR/manifest.json.
    """)


def register(group: click.Group) -> None:
    """Add ``convert`` and ``quantize`` to the main command group.

    Args:
        group: the ``edgeqd`` click group.

    >>> register(click.Group())
    """
    group.add_command(convert_command)
    group.add_command(quantize_command)
