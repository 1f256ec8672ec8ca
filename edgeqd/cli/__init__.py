"""The ``edgeqd`` command line: a thin shell over edgeqd's public functions.

Each command parses its options, calls one public function with the same
parameter names, and prints. Heavy imports (TensorFlow) happen inside commands so
``--help`` stays fast. Errors raised on purpose (:class:`EdgeqdError`) print one
line and exit with their code; no traceback is shown for a user's mistake.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from edgeqd import __version__
from edgeqd.cli.common import (EXIT_CODES_HELP, FiniteFloat, console, handle_errors,  # noqa: F401
                               native_logs_captured, print_json, progress_bar)


class EdgeqdGroup(click.Group):
    """The command group: click's own usage errors become one ``error:`` line too.

    Click prints a usage block and "Error: …" for an option it cannot parse (``--runs abc``,
    ``--max-drop nan``); every other mistake in edgeqd prints one ``error:`` line with
    exit 2, so this does the same for click's.
    """

    def main(self, *args, standalone_mode: bool = True, **kwargs):  # noqa: D102 (click's signature)
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `edgeqd`: the help, not an error
            click.echo(exc.format_message())
            sys.exit(0)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "edgeqd"
            click.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=EdgeqdGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
             epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="edgeqd")
def cli() -> None:
    """Distil, quantize, convert and measure Keras models for edge devices."""


@cli.group()
def data() -> None:
    """Provide and inspect datasets."""


@data.command("fetch")
@click.option("--force", is_flag=True, help="Fetch again into the cache (as root: reinstall the package), "
              "replacing damaged files.")
@handle_errors
def data_fetch(force: bool) -> None:
    """Make the built-in Fashion-MNIST available (Debian's dataset-fashion-mnist) and check its files."""
    from edgeqd.data import provide_fashion_mnist

    click.echo(str(provide_fashion_mnist(force=force)))


def _format_names() -> list[str]:
    from edgeqd.converters import CONVERTERS

    return sorted(CONVERTERS)


def parse_formats(text: Optional[str]) -> Optional[list[str]]:
    """The names in a ``--formats`` value; None when the option was not given (the defaults).

    Args:
        text: the comma-separated value, or None.

    Raises:
        UsageError: the value names no format at all (``--formats ','``): exit 2.
    """
    if text is None:
        return None
    names = [f.strip() for f in text.split(",") if f.strip()]
    if not names:
        from edgeqd.errors import UsageError

        raise UsageError(f"--formats {text!r}: no formats given; choose from {', '.join(_format_names())}")
    return names


@cli.command()
@click.argument("model", type=click.Path(path_type=Path), required=False)
@click.option("--data", required=True, help="'fashion-mnist', an .npz with x and y (x_val/y_val optional), "
              "or an image folder with one sub-folder per class.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder (created atomically).")
@click.option("--formats", default=",".join(("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8")),
              show_default=True, help="Comma-separated output formats; see `edgeqd formats`.")
@click.option("--calibration-samples", default=200, show_default=True, type=int,
              help="Training samples used to calibrate int8 ranges.")
@click.option("--calibration-method", default="minmax", show_default=True,
              type=click.Choice(["minmax", "percentile", "entropy"]), help="ONNX Runtime calibrator.")
@click.option("--per-tensor", is_flag=True, help="One weight scale per tensor instead of per channel.")
@click.option("--max-drop", type=FiniteFloat(), default=None,
              help="Exit 4 when an int8 artifact loses more than this many accuracy points.")
@click.option("--eval-samples", type=int, default=None, help="Evaluate on the first N held-out samples only.")
@click.option("--seed", default=0, show_default=True, help="Seed of calibration draw and held-out split.")
@click.option("--force", is_flag=True, help="Overwrite an existing output folder.")
@click.option("--unsafe-deserialization", is_flag=True,
              help="Allow Lambda layers (their Python code runs on load): only for trusted files.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead of a table.")
@click.option("--mode", default="ptq", show_default=True, type=click.Choice(["ptq", "qat"]),
              help="ptq: calibrate int8 ranges; qat: quantization-aware fine-tuning first (see `edgeqd quantize`).")
@click.option("--epochs", default=3, show_default=True, type=int, help="QAT fine-tuning epochs (--mode qat).")
@click.option("--teacher", type=click.Path(path_type=Path), default=None,
              help="Distil from this model in every QAT step (--mode qat).")
@click.option("--schedule", default="joint", show_default=True, type=click.Choice(["joint", "two-phase"]),
              help="QAT + distillation schedule (--mode qat with --teacher).")
@click.option("--distill-from", type=click.Path(path_type=Path), default=None,
              help="Distil a student from this teacher first, then convert the student (no MODEL).")
@click.option("--student", default="cnn", show_default=True,
              help="Student for --distill-from: a built-in family (edgeqd distill --list-students) or a model path.")
@click.option("--distill-epochs", default=20, show_default=True, type=int,
              help="Most distillation epochs for --distill-from (early stopping may end sooner).")
@handle_errors
def convert(model: Optional[Path], data: str, out: Path, formats: str, calibration_samples: int,
            calibration_method: str, per_tensor: bool, max_drop: Optional[float],
            eval_samples: Optional[int], seed: int, force: bool, unsafe_deserialization: bool,
            as_json: bool, mode: str = "ptq", epochs: int = 3, teacher: Optional[Path] = None,
            schedule: str = "joint", distill_from: Optional[Path] = None, student: str = "cnn",
            distill_epochs: int = 20) -> None:
    """Convert MODEL (.keras, .h5 or SavedModel) to verified int8/float TFLite and ONNX.

    Every artifact is loaded back in LiteRT / ONNX Runtime and evaluated on the
    held-out split; DIR/manifest.json records sizes, quantization parameters,
    accuracy, agreement with the float model and sha256 digests. With
    --distill-from TEACHER --student SPEC a student is distilled first and converted.
    """
    from edgeqd.errors import UsageError

    if mode == "qat" and distill_from is not None:
        raise UsageError("--distill-from runs with --mode ptq; for QAT with a teacher use --mode qat --teacher")
    from edgeqd.pipeline import convert as run_convert
    from edgeqd.cli.tables import convert_table

    names = parse_formats(formats)
    if mode == "qat":  # QAT fine-tunes before converting: edgeqd quantize does it (issue 4)
        from edgeqd.cli.quantize import show_result
        from edgeqd.quantization import quantize

        with progress_bar(quiet=as_json) as report:
            result = quantize(model, data, out, mode=mode, teacher=teacher, schedule=schedule, epochs=epochs,
                              formats=names, calibration_samples=calibration_samples, max_drop=max_drop,
                              force=force, unsafe_deserialization=unsafe_deserialization,
                              eval_samples=eval_samples, per_channel=not per_tensor,
                              calibration=calibration_method, seed=seed, progress=report)
        show_result(result, as_json)
        result.raise_for_problems()
        return
    if teacher is not None:
        raise UsageError("--teacher applies to --mode qat")
    with progress_bar(quiet=as_json) as report:
        result = run_convert(model, data, out, formats=names, calibration_samples=calibration_samples,
                             max_drop=max_drop, force=force, unsafe_deserialization=unsafe_deserialization,
                             eval_samples=eval_samples, per_channel=not per_tensor,
                             calibration_method=calibration_method, seed=seed, distill_from=distill_from,
                             student=student, distill_epochs=distill_epochs, progress=report)
    if as_json:
        print_json(result.manifest)
    else:
        console().print(convert_table(result.manifest))
        click.echo(f"wrote {result.out}/ (manifest.json + {sum(a.status.value == 'ok' for a in result.artifacts)} artifacts)")
    result.raise_for_problems()


@cli.command("formats")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def formats_command(as_json: bool) -> None:
    """List the registered output formats."""
    from rich.table import Table

    from edgeqd.converters import CONVERTERS

    rows = [{"name": c.name, "file": c.filename, "runtime": c.runtime, "quantized": c.quantized,
             "description": c.description} for c in CONVERTERS.values()]
    if as_json:
        print_json(rows)
        return
    table = Table(title="output formats")
    for column in ("name", "file", "runtime", "quantized", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("name", "file", "runtime", "quantized", "description")))
    console().print(table)


# Each command family lives in its own module and registers itself on the group.
from edgeqd.cli import devices as _devices, distill as _distill, quantize as _quantize, report as _report  # noqa: E402

for _module in (_devices, _report, _distill, _quantize):
    _module.register(cli)


def main() -> None:
    """Console entry point."""
    cli(prog_name="edgeqd")


if __name__ == "__main__":
    main()
