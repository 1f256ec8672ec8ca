"""Multi-input and multi-output models are refused up front with one clear line (exit 3), nothing written."""

from __future__ import annotations

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import numpy as np
import pytest
from click.testing import CliRunner

from edgeqd.cli import cli


def _save(tmp_path, kind: str):
    import tf_keras as keras
    from tf_keras import layers

    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    if kind == "two inputs":
        model = keras.Model([a, b], layers.Dense(3)(layers.Concatenate()([a, b])))
    elif kind == "two outputs":
        model = keras.Model(a, [layers.Dense(3, name="classes")(a), layers.Dense(1, name="score")(a)])
    else:  # a (4, 3) output per sample
        model = keras.Model(a, layers.Reshape((4, 3))(layers.Dense(12)(a)))
    path = tmp_path / f"{kind.replace(' ', '_')}.keras"
    model.save(path)
    return path


@pytest.mark.parametrize("kind, message", [
    ("two inputs", r"has 2 inputs and 1 outputs; edgeqd handles single-input, single-output models \(a classifier "
                   r"or a regression head\): export each output as a model of its own"),
    ("two outputs", r"has 1 inputs and 2 outputs; edgeqd handles single-input, single-output models"),
    ("matrix output", r"outputs shape \(4, 3\); expected one vector per sample"),
])
@pytest.mark.parametrize("command", [["convert"], ["quantize"]])
def test_models_edgeqd_cannot_verify_are_refused_in_one_line(tmp_path, kind, message, command):
    model = _save(tmp_path, kind)
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 4), np.float32), y=np.zeros(10, int))
    result = CliRunner().invoke(cli, [*command, str(model), "--data", str(tmp_path / "d.npz"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 3, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    import re

    assert re.search(message, errors[0]), errors[0]
    assert not (tmp_path / "out").exists()
