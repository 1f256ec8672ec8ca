"""``edgeqd optimize``: a thin shell over :func:`edgeqd.optimize.optimize`.

Exit codes: 0 a candidate meets the budgets (``DIR/best/`` written), 2 usage (an existing
``DIR`` without ``--resume``/``--force``, an emulated device with ``--max-latency-ms``),
3 a teacher or data that does not fit, 4 no candidate meets the budgets (the closest ones
and what to relax are printed; ``candidates.json`` and ``report.html`` are still written),
5 the device failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from edgeqd.cli.common import handle_errors, print_json, progress_bar
from edgeqd.cli.options import (build_settings, data_option, force_option, json_option, out_option, quiet_option,
                                settings_options, unsafe_option)
from edgeqd.optimize.settings import OptimizeSettings

_LISTS = {"widths": float, "depths": float, "precisions": str, "recipes": str}


def _list(text: Optional[str], kind: type, option: str) -> Optional[list]:
    """The values of a comma-separated option; None when it was not given."""
    from edgeqd.errors import UsageError

    if text is None:
        return None
    values = [v.strip() for v in text.split(",") if v.strip()]
    try:
        return [kind(v) for v in values]
    except ValueError:
        raise UsageError(f"{option} takes a comma-separated list like 0.25,0.5,1 (got {text!r})") from None


def _show(result, as_json: bool) -> None:
    """Print the summary: JSON, or the summary line, the chosen candidate and the outputs."""
    if as_json:
        print_json({k: v for k, v in result.document.items() if k != "candidates"} |
                   {"candidates": len(result.document["candidates"])})
        return
    click.echo(result.document["summary"])
    if result.chosen is not None:
        click.echo(f"wrote {result.out}/best/ ({result.chosen['file']}), candidates.json and report.html")
        held = result.document["held_out"]
        if held.get("within_max_drop") is False:
            click.echo(f"warning: on the held-out split the chosen candidate is {held['drop_pts']:.3g} pts below the "
                       "teacher, over --max-drop (it met the budget on the selection split)")


@click.command("optimize")
@click.option("--teacher", required=True, type=click.Path(path_type=Path), metavar="MODEL",
              help="The trained teacher (.keras, .h5 or SavedModel).")
@data_option()
@out_option("Output folder: study.db, trials/, best/, candidates.json, report.html.")
@click.option("--device", default=None, metavar="SPEC",
              help="Where latency is measured: local, ssh://[user@]host, adb[:SERIAL] or a devices file (.yaml); "
                   "an emulated device (qemu-*) gives no latency and refuses --max-latency-ms.")
@click.option("--student", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Your own (untrained) student model, tried as one more fixed candidate.")
@click.option("--storage", default=None, metavar="URL",
              help="Optuna storage shared by workers, e.g. postgresql://user@host/db [default: sqlite:///DIR/study.db].")
@click.option("--resume", is_flag=True, help="Continue the study in DIR (or --storage) up to --trials trained.")
@click.option("--worker", is_flag=True, help="Join the study (created if missing) and add trials; write no final "
                                              "outputs (run the main command, or --resume, for those).")
@settings_options(OptimizeSettings, "max_size_kb", "max_latency_ms", "max_drop", "trials", "families", "epochs",
                  "qat_epochs", "train_samples", "test_fraction", "sampler", "study_name", "bench_runs", "seed")
@click.option("--widths", default=None, metavar="LIST", help="Width multipliers searched [default: 0.25,0.5,1,1.5].")
@click.option("--depths", default=None, metavar="LIST", help="Depth multipliers searched [default: 0.5,1].")
@click.option("--precisions", default=None, metavar="LIST",
              help="Precisions searched: int8, w4a8, mixed (per-layer int4/int8 chosen after training) "
                   "[default: each one whose converter is registered].")
@click.option("--recipes", default=None, metavar="LIST", help="Distillation recipes searched [default: classic,"
                                                              "consistent].")
@force_option
@unsafe_option
@quiet_option
@json_option
@handle_errors
def optimize_command(teacher, data, out, device, student, storage, resume, worker, widths, depths, precisions,
                     recipes, force, unsafe_deserialization, quiet, as_json, **options) -> None:
    """Search students of TEACHER for the best artifact within the budgets, measured on the device.

    Candidates (student family × width × depth × precision × recipe) are proposed by an
    Optuna study (multi-objective: accuracy drop, size, latency; budgets as constraints).
    Each is first converted untrained — its exact size — and timed on --device; one that
    cannot meet --max-size-kb or --max-latency-ms is pruned without training. Survivors are
    distilled, quantized (QAT with the teacher, or PTQ when that agrees better) and
    verified. The chosen one (smallest drop within budget) is copied to DIR/best/ and its
    drop re-measured on held-out data the search never saw.
    """
    from edgeqd.optimize import optimize

    lists = {name: _list(text, _LISTS[name], f"--{name}") for name, text in
             (("widths", widths), ("depths", depths), ("precisions", precisions), ("recipes", recipes))}
    settings = build_settings(OptimizeSettings, options, **{k: v for k, v in lists.items() if v is not None})
    with progress_bar(quiet=as_json or quiet) as report:
        result = optimize(teacher, data, out, settings, device=device, student=student, storage=storage,
                          resume=resume, worker=worker, force=force, unsafe_deserialization=unsafe_deserialization,
                          progress=report)
    if worker:
        click.echo(result.document["summary"]) if not as_json else print_json(result.document)
        return
    _show(result, as_json)
    result.raise_for_problems()


def register(group: click.Group) -> None:
    """Add ``optimize`` to the main command group.

    Args:
        group: the ``edgeqd`` click group.

    >>> register(click.Group())
    """
    group.add_command(optimize_command)
