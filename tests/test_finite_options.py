"""Non-finite numbers (nan, inf, -inf) are refused by every float option and library function.

``float("nan") < 0`` is False, so a ``type=float`` option with a later ``value < 0``
check let ``--max-drop nan`` through: the gate turned off and ``NaN`` (not JSON) went
into manifest.json. The command tree is walked, so a float option added later without
:class:`~edgeqd.cli.common.FiniteFloat` fails here.
"""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from edgeqd.cli import cli
from edgeqd.cli.common import FiniteFloat
from edgeqd.errors import UsageError

NON_FINITE = ["nan", "inf", "-inf", "NaN", "Infinity", "1e999"]


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))
        else:
            yield path + (name,), command


def float_options() -> list[tuple[tuple[str, ...], click.Option]]:
    """Every option that takes a float: a float type, or a float default."""
    found = []
    for path, command in _commands(cli):
        for param in command.params:
            if isinstance(param, click.Option) and not param.is_flag and (
                    isinstance(param.type, (click.types.FloatParamType, FiniteFloat))
                    or isinstance(param.default, float)):
                found.append((path, param))
    return found


FLOAT_OPTIONS = float_options()
CASES = [pytest.param(path, option.opts[0], value, id=f"{' '.join(path)} {option.opts[0]} {value}")
         for path, option in FLOAT_OPTIONS for value in NON_FINITE]


def test_the_walk_finds_the_float_options_we_know():
    found = {(" ".join(path), option.opts[0]) for path, option in FLOAT_OPTIONS}
    # A floor, not the full list: a new float option must be covered, never one dropped silently.
    assert {("convert", "--max-drop"), ("quantize", "--max-drop"), ("bench", "--min-seconds"),
            ("bench", "--max-seconds"), ("bench", "--timeout"), ("devices probe", "--timeout"),
            ("distill", "--temperature"), ("distill", "--alpha"), ("distill", "--width"),
            ("quantize", "--temperature"), ("quantize", "--alpha")} <= found
    assert len(found) >= 17


@pytest.mark.parametrize("path, option", [pytest.param(p, o, id=f"{' '.join(p)} {o.opts[0]}")
                                          for p, o in FLOAT_OPTIONS])
def test_every_float_option_uses_the_finite_type(path, option):
    assert isinstance(option.type, FiniteFloat), (
        f"{' '.join(path)} {option.opts[0]} takes a float without FiniteFloat: nan would pass its checks")


@pytest.mark.parametrize("path, flag, value", CASES)
def test_non_finite_values_exit_2_before_anything_runs(path, flag, value):
    result = CliRunner().invoke(cli, [*path, flag, value])
    assert result.exit_code == 2, result.output
    assert "not a finite number" in result.output and flag in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("argv, words", [
    (["devices", "probe", "local", "--timeout", "0"], "must be > 0, got 0"),
    (["devices", "probe", "local", "--timeout", "-1"], "must be > 0, got -1"),
])
def test_probe_timeout_must_be_positive(argv, words):
    # It used to run the probe and report "timed out after 0 s" as a device failure (exit 5).
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2 and words in result.output, result.output


def test_finite_float_bounds():
    unit = FiniteFloat(min=0, max=1, max_open=True)
    assert unit.convert("0", None, None) == 0.0 and unit.convert("0.5", None, None) == 0.5
    for bad in ("1", "-0.1", "nan"):
        with pytest.raises(click.BadParameter):
            unit.convert(bad, None, None)


# ---------------------------------------------------------------- the Python API bypasses click

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_library_settings_refuse_non_finite_max_drop(value):
    """The Python API builds the same settings objects as the CLI: they refuse NaN and infinities."""
    from edgeqd.settings import VerifySettings

    with pytest.raises(UsageError, match="--max-drop must be a finite number"):
        VerifySettings(max_drop=value)


@pytest.mark.parametrize("kwargs, words", [
    ({"temperature": NAN}, "--temperature must be a finite number > 0"),
    ({"temperature": INF}, "--temperature must be a finite number > 0"),
    ({"alpha": NAN}, "--alpha must be within [0, 1]"),
    ({"feature_weight": INF}, "--feature-weight must be a finite number >= 0"),
    ({"attention_weight": NAN}, "--attention-weight must be a finite number >= 0"),
])
def test_distillation_settings_refuse_non_finite(kwargs, words):
    from edgeqd.distillation import check_settings

    settings = {"temperature": 4.0, "alpha": 0.9, **kwargs}
    with pytest.raises(UsageError) as error:
        check_settings(**settings)
    assert words in str(error.value)


@pytest.mark.parametrize("width, depth", [(NAN, 1.0), (INF, 1.0), (1.0, NAN), (1.0, -INF)])
def test_student_size_refuses_non_finite(width, depth):
    from edgeqd.distillation.students import check_size

    with pytest.raises(UsageError, match="must be a finite number > 0"):
        check_size(width, depth)


@pytest.mark.parametrize("setting", ["min_seconds", "max_seconds", "timeout"])
@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_bench_settings_refuse_non_finite_timings(setting, value):
    from edgeqd.settings import BenchSettings

    with pytest.raises(UsageError, match=f"--{setting.replace('_', '-')} must be a finite number"):
        BenchSettings(**{setting: value})


@pytest.mark.parametrize("value", [0.0, -1.0, NAN, INF])
def test_device_probe_refuses_a_timeout_that_is_not_positive_and_finite(value):
    from edgeqd.devices import device_from_spec

    with pytest.raises(UsageError, match="--timeout must be a finite number of seconds > 0"):
        device_from_spec("local").probe(timeout=value)


def test_documents_are_strict_json():
    from edgeqd.documents import NonFiniteJSONError, to_json

    assert json.loads(to_json({"rows": [{"p50_ms": 0.5}]})) == {"rows": [{"p50_ms": 0.5}]}
    with pytest.raises(NonFiniteJSONError, match=r"rows\[1\]\.mean_abs_diff is nan"):
        to_json({"rows": [{"ok": 1.0}, {"mean_abs_diff": NAN}]}, "bench.json")
    with pytest.raises(NonFiniteJSONError, match="threshold is -inf"):
        to_json({"threshold": -INF})
