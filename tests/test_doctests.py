"""Every ``>>>`` example in edgeqd's docstrings runs (or says why not with ``# doctest: +SKIP``)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import edgeqd
import edgeqd.converters
import edgeqd.devices


def _modules() -> list[str]:
    # converters/ and devices/ are mapped into the package (pyproject's package-dir), so an
    # editable install does not list them under edgeqd.__path__: walk them on their own.
    names = ["edgeqd.converters", "edgeqd.devices"]
    for package in (edgeqd, edgeqd.converters, edgeqd.devices):
        names += [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    # __main__ runs the CLI on import; the vendored schema is generated code without examples.
    return sorted({n for n in names if not n.endswith("__main__") and "._vendor" not in n})


MODULES = _modules()


def test_the_walk_finds_the_mapped_subpackages():
    assert {"edgeqd.converters.tflite", "edgeqd.devices.runner", "edgeqd.pipeline"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see output)"
