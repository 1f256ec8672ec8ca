"""``edgeqd quantize``: a thin shell over :func:`edgeqd.quantization.quantize`.

Registered on the main group by :func:`register`; ``edgeqd convert --mode qat``
prints its result with :func:`show_result` too. Exit codes: 0 ok, 2 usage, 3 a
model, teacher or data that does not fit, 4 quantization failed (a layer that must
stay float under ``--strict``, an artifact over ``--max-drop``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click

from edgeqd.cli.common import FiniteFloat, console, handle_errors, print_json, progress_bar
from edgeqd.quantization import DEFAULT_QAT_ALPHA, DEFAULT_QAT_TEMPERATURE


def _pct(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def parity_table(manifest: dict[str, Any]):
    """The parity table: Keras model vs int8 TFLite vs int8 ONNX on the same held-out samples.

    Args:
        manifest: a ``quantize`` manifest (with ``parity`` and ``quantize`` sections).
    """
    from rich.table import Table

    parity = manifest["parity"]
    settings = manifest.get("quantize", {})
    float_accuracy = settings.get("float_accuracy")
    table = Table(title=f"parity on {parity['samples']} held-out samples (float model: {_pct(float_accuracy)})")
    names = list(parity["accuracy"])
    for column, justify in (("model", "left"), ("top-1", "right"), ("Δ vs float pts", "right"),
                            *((f"agrees with {n}", "right") for n in names)):
        table.add_column(column, justify=justify)
    for name in names:
        accuracy = parity["accuracy"][name]
        drop = "—" if accuracy is None or float_accuracy is None else f"{100 * (accuracy - float_accuracy):+.2f}"
        cells = []
        for other in names:
            key = f"{name} vs {other}" if f"{name} vs {other}" in parity["agreement"] else f"{other} vs {name}"
            cells.append("" if other == name else _pct(parity["agreement"].get(key)))
        table.add_row(name, _pct(accuracy), drop, *cells)
    return table


def show_result(result, as_json: bool) -> None:
    """Print a quantize result: the manifest as JSON, or the artifact and parity tables and notes.

    Args:
        result: the :class:`edgeqd.pipeline.ConvertResult` of :func:`edgeqd.quantization.quantize`.
        as_json: print the manifest as JSON instead.
    """
    from edgeqd.cli.common import console, print_json
    from edgeqd.cli.tables import convert_table

    manifest = result.manifest
    if as_json:
        print_json(manifest)
        return
    out = console()
    out.print(convert_table(manifest))
    out.print(parity_table(manifest))
    settings = manifest.get("quantize", {})
    for rewrite in settings.get("rewrites", []):
        click.echo(f"rewrote {rewrite['layer']} ({rewrite['rule']}): {rewrite['detail']}")
    if "left_float" in settings:
        left = settings["left_float"]
        click.echo("left float: " + ("nothing — every layer is quantized" if not left else
                                     "; ".join(f"{f['name']} ({f['reason']})" for f in left)))
    for note in settings.get("notes", []):
        click.echo(f"note: {note}")
    click.echo(f"wrote {result.out}/ (manifest.json + {sum(a.status.value == 'ok' for a in result.artifacts)} artifacts)")


def register(cli: click.Group) -> None:
    """Add ``edgeqd quantize`` to the main group.

    Args:
        cli: the ``edgeqd`` click group.
    """
    # Imported here, not at the top: edgeqd.cli imports this module while it is being built.
    from edgeqd.cli.common import handle_errors, progress_bar

    @cli.command("quantize")
    @click.argument("model", type=click.Path(path_type=Path))
    @click.option("--data", required=True, help="'fashion-mnist', an .npz with x and y (x_val/y_val optional), "
                  "or an image folder with one sub-folder per class.")
    @click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder (created atomically).")
    @click.option("--mode", default="qat", show_default=True, type=click.Choice(["qat", "ptq"]),
                  help="Quantization-aware training, or post-training calibration.")
    @click.option("--teacher", type=click.Path(path_type=Path), default=None,
                  help="Trained model to distil from in every QAT step.")
    @click.option("--schedule", default="joint", show_default=True, type=click.Choice(["joint", "two-phase"]),
                  help="joint: QAT with distillation from the start; two-phase: distil in float, then QAT on labels.")
    @click.option("--epochs", default=3, show_default=True, type=int, help="Training epochs (per phase).")
    @click.option("--feature", "features", multiple=True, metavar="TEACHER_LAYER:STUDENT_LAYER",
                  help="Also match this intermediate feature (repeatable).")
    @click.option("--temperature", default=DEFAULT_QAT_TEMPERATURE, show_default=True, type=FiniteFloat(),
                  help="Distillation temperature T.")
    @click.option("--alpha", default=DEFAULT_QAT_ALPHA, show_default=True, type=FiniteFloat(),
                  help="Weight of the teacher term (1 − alpha weighs the labels).")
    @click.option("--learning-rate", default=1e-4, show_default=True, type=FiniteFloat(), help="Adam learning rate.")
    @click.option("--batch-size", default=128, show_default=True, type=int, help="Training batch size.")
    @click.option("--train-samples", type=int, default=None, help="Train on N (seeded) training samples only.")
    @click.option("--per-tensor", is_flag=True, help="One weight scale per tensor instead of per channel.")
    @click.option("--calibration", default="minmax", show_default=True,
                  type=click.Choice(["minmax", "percentile", "entropy"]), help="ONNX Runtime calibrator (PTQ).")
    @click.option("--calibration-samples", default=200, show_default=True, type=int,
                  help="Training samples used to calibrate PTQ ranges.")
    @click.option("--strict", is_flag=True, help="Fail instead of leaving unquantizable layers in float.")
    @click.option("--max-drop", type=FiniteFloat(), default=None,
                  help="Exit 4 when the int8 TFLite/ONNX loses more than this many points vs the float model.")
    @click.option("--formats", default=None, help="Comma-separated formats (default: tflite-int8,onnx-int8 for "
                  "QAT; the four defaults for PTQ).")
    @click.option("--eval-samples", type=int, default=None, help="Evaluate on the first N held-out samples only.")
    @click.option("--seed", default=0, show_default=True, help="Seed of data order, subsets and new weights.")
    @click.option("--force", is_flag=True, help="Overwrite an existing output folder.")
    @click.option("--unsafe-deserialization", is_flag=True,
                  help="Allow Lambda layers (their Python code runs on load): only for trusted files.")
    @click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead of tables.")
    @handle_errors
    def quantize_command(model: Path, data: str, out: Path, mode: str, teacher: Optional[Path], schedule: str,
                         epochs: int, features: tuple, temperature: float, alpha: float, learning_rate: float,
                         batch_size: int, train_samples: Optional[int], per_tensor: bool, calibration: str,
                         calibration_samples: int, strict: bool, max_drop: Optional[float],
                         formats: Optional[str], eval_samples: Optional[int], seed: int, force: bool,
                         unsafe_deserialization: bool, as_json: bool) -> None:
        """Quantize MODEL: QAT (optionally distilling from --teacher in every step) or calibrated PTQ.

        Layers TFMOT rejects are rewritten into equivalents (checked numerically);
        what still cannot be quantized stays float and is listed. The Keras model,
        the int8 TFLite and the int8 ONNX are evaluated on the same held-out split
        and their accuracies and pairwise agreement are printed and written to
        DIR/manifest.json.
        """
        from edgeqd.quantization import quantize

        from edgeqd.cli import parse_formats

        names = parse_formats(formats) or []
        with progress_bar(quiet=as_json) as report:
            result = quantize(model, data, out, mode=mode, teacher=teacher, schedule=schedule, epochs=epochs,
                              features=features, temperature=temperature, alpha=alpha,
                              learning_rate=learning_rate, batch_size=batch_size, train_samples=train_samples,
                              per_channel=not per_tensor, calibration=calibration,
                              calibration_samples=calibration_samples, strict=strict, max_drop=max_drop,
                              formats=names, eval_samples=eval_samples, force=force,
                              unsafe_deserialization=unsafe_deserialization, seed=seed, progress=report)
        show_result(result, as_json)
        result.raise_for_problems()
