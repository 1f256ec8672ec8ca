"""The public API: ``import edgeqd`` is light, and every public name resolves to a callable or class."""

from __future__ import annotations

import subprocess
import sys

import edgeqd


def test_import_edgeqd_loads_no_tensorflow():
    code = "import sys, edgeqd; edgeqd.ConvertSettings(); print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_every_public_name_resolves():
    for name in edgeqd.__all__:
        value = getattr(edgeqd, name)
        assert value is not None and (name == "__version__" or callable(value)), name


def test_verbs_stay_functions_after_their_stage_packages_are_imported():
    import edgeqd.distillation  # noqa: F401
    import edgeqd.pipeline  # noqa: F401
    import edgeqd.quantization  # noqa: F401

    assert callable(edgeqd.convert) and callable(edgeqd.quantize) and callable(edgeqd.distill)
    assert edgeqd.convert.__module__ == "edgeqd.pipeline"
