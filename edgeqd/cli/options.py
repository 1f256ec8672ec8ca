"""Every command-line option declared once.

Options that set a stage's settings are built from the fields of the settings
dataclasses (:mod:`edgeqd.settings`): name, default, help, bounds and choices come
from there, so the CLI can never drift from the library's defaults. The options
every command shares (``--data``, ``--out``, ``--force``, ``--json``, ``--seed``,
``--unsafe-deserialization``, ``--formats``) are declared here as decorators.

>>> import click
>>> @click.command()
... @settings_options(CalibrationSettings)
... def command(**kwargs):
...     print(build_settings(CalibrationSettings, kwargs))
>>> command.main(["--calibration-samples", "50", "--per-tensor"], standalone_mode=False)
CalibrationSettings(samples=50, method='minmax', per_channel=False, precision='fixed')
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Callable, Optional

import click

from edgeqd.cli.common import FiniteFloat
from edgeqd.settings import CalibrationSettings, Settings  # noqa: F401  (CalibrationSettings: doctest)

DATA_HELP = ("'fashion-mnist', an .npz (x [y x_val y_val class_names]; no y = unlabelled) or an image folder "
             "(one sub-folder per class).")


def _dest(settings_class: type, name: str) -> str:
    """The click parameter name of a settings field: unique across settings groups."""
    return f"{settings_class.section}__{name}"


def _field(settings_class: type, name: str):
    for item in fields(settings_class):
        if item.name == name:
            return item
    raise KeyError(f"{settings_class.__name__} has no field {name!r}")


def _default(item) -> Any:
    if item.default is not MISSING:
        return item.default
    return item.default_factory()  # type: ignore[misc]


def settings_option(settings_class: type, name: str, option: Optional[str] = None,
                    help: Optional[str] = None) -> Callable:
    """A click option for one settings field.

    Args:
        settings_class: the settings dataclass.
        name: the field.
        option: another spelling for this command (e.g. ``--distill-epochs``); the
            field's own option is used otherwise.
        help: another help text for this command.
    """
    item = _field(settings_class, name)
    meta = item.metadata
    default = _default(item)
    names = [option or meta["option"], *([] if option else meta["aliases"])]
    text = help or meta["help"]
    kwargs: dict[str, Any] = {"help": text}
    if meta["metavar"]:
        kwargs["metavar"] = meta["metavar"]
    if meta["kind"] is bool:
        # A flag turns the default around: --per-tensor sets per_channel=False, --strict strict=True.
        return click.option(*names, _dest(settings_class, name), is_flag=True, flag_value=not default,
                            default=default, **kwargs)
    if isinstance(default, tuple) and name != "formats" and name != "threads":
        return click.option(*names, _dest(settings_class, name), multiple=True, **kwargs)
    if meta["choices"]:
        kwargs["type"] = click.Choice(list(meta["choices"]))
    elif meta["kind"] is float:
        # Bounds are checked by the settings dataclass (build_settings), not by click, so that
        # the CLI and the Python API refuse a value with the same message ("--temperature must
        # be a finite number > 0, got 0.0"); click only refuses what is not a (finite) number.
        kwargs["type"] = FiniteFloat()
    elif meta["kind"] is int:
        kwargs["type"] = click.INT
    return click.option(*names, _dest(settings_class, name), default=default,
                        show_default=default is not None, **kwargs)


def settings_options(settings_class: type, *names: str, **spellings: str) -> Callable:
    """Options for several fields of one settings group (all of its option fields by default).

    Args:
        settings_class: the settings dataclass.
        *names: the fields to offer; none means every field that has an option.
        **spellings: per-field option spellings for this command, e.g. ``epochs="--distill-epochs"``.
    """
    chosen = names or tuple(item.name for item in fields(settings_class) if "option" in item.metadata)

    def decorate(command: Callable) -> Callable:
        for name in reversed(chosen):
            command = settings_option(settings_class, name, spellings.get(name))(command)
        return command

    return decorate


def build_settings(settings_class: type, options: dict[str, Any], spellings: Optional[dict[str, str]] = None,
                   **values: Any) -> Settings:
    """The settings from the options a command received (they are taken out of ``options``).

    Args:
        settings_class: the settings dataclass.
        options: the command's keyword arguments.
        spellings: the option spellings this command gave fields (as for :func:`settings_options`), so that
            a refused value is named as the user typed it ("--distill-epochs must be >= 1").
        **values: more field values (e.g. nested settings groups).
    """
    from edgeqd.errors import UsageError

    prefix = f"{settings_class.section}__"
    for key in [k for k in options if k.startswith(prefix)]:
        value = options.pop(key)
        values[key[len(prefix):]] = list(value) if isinstance(value, tuple) else value
    try:
        return settings_class(**values)
    except UsageError as error:
        for name, spelling in (spellings or {}).items():
            own = _field(settings_class, name).metadata["option"]
            if str(error).startswith(own + " "):
                raise UsageError(spelling + str(error)[len(own):]) from None
        raise


def data_option(required: bool = True, help: str = DATA_HELP) -> Callable:
    """``--data``: the dataset.

    Args:
        required: whether the command needs it.
        help: the help text when the command uses the data differently.
    """
    return click.option("--data", required=required, metavar="DATA", help=help)


def out_option(help: str, required: bool = True, metavar: str = "DIR") -> Callable:
    """``--out``: where the command writes (created atomically).

    Args:
        help: what is written there.
        required: whether the command needs it.
        metavar: the placeholder in ``--help`` (``DIR`` or a file name).
    """
    return click.option("--out", "-o", "out", required=required, metavar=metavar, type=click.Path(path_type=Path),
                        help=help)


force_option = click.option("--force", is_flag=True, help="Replace an existing output (never an input of the run).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")
seed_option = click.option("--seed", type=int, default=0, show_default=True,
                           help="Seed of data splits, subsets, shuffling and new weights.")
unsafe_option = click.option("--unsafe-deserialization", is_flag=True,
                             help="Load models whose layers carry code (Lambda, arbitrary TF ops, modules outside "
                                  "Keras): only for files you trust.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar or progress lines.")
formats_option = click.option("--formats", default=None, metavar="LIST",
                              help="Comma-separated output formats (default: tflite-fp32,tflite-int8,onnx-fp32,"
                                   "onnx-int8); see `edgeqd formats`.")


def parse_formats(text: Optional[str]) -> Optional[list[str]]:
    """The names in a ``--formats`` value; None when the option was not given (the defaults).

    Args:
        text: the comma-separated value, or None.

    Raises:
        UsageError: the value names no format at all (``--formats ','``): exit 2.

    >>> parse_formats("tflite-int8, onnx-int8")
    ['tflite-int8', 'onnx-int8']
    """
    if text is None:
        return None
    names = [f.strip() for f in text.split(",") if f.strip()]
    if not names:
        from edgeqd.converters import CONVERTERS
        from edgeqd.errors import UsageError

        raise UsageError(f"--formats {text!r}: no formats given; choose from {', '.join(sorted(CONVERTERS))}")
    return names
