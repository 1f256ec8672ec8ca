"""Bounded fuzz loops (issue 10) over ``edgeqd inspect``: mutated real artifacts give exit 0 or 3, never a crash.

Each loop has a fixed seed and a fixed count so a failure replays exactly; the failing
iteration and its mutation are in the assertion message (mutations: tests/fuzz_helpers.py).
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest
from click.testing import CliRunner
from fuzz_helpers import ITERATIONS, SECONDS, mutate

from edgeqd.cli import cli


@pytest.mark.parametrize("artifact, seed", [("model_int8.tflite", 1), ("model_fp32.tflite", 2),
                                            ("model_int8.onnx", 3), ("model_fp32.onnx", 4)])
def test_inspect_fuzz_only_typed_errors(tmp_path, converted, artifact, seed):
    """`edgeqd inspect` (parse, then the terminal tables) on mutated real artifacts: exit 0 or 3, nothing else."""
    source = (converted.out / artifact).read_bytes()
    target = tmp_path / artifact
    rng = random.Random(seed)
    codes: Counter = Counter()
    started = time.perf_counter()
    for i in range(ITERATIONS):
        data, what = mutate(source, rng)
        target.write_bytes(data)
        result = CliRunner().invoke(cli, ["inspect", str(target)])
        codes[result.exit_code] += 1
        assert result.exit_code in (0, 3) and (result.exception is None or isinstance(result.exception, SystemExit)), \
            f"iteration {i} ({what}): exit {result.exit_code}, {result.exception!r}\n{result.output[-800:]}"
        if result.exit_code == 3:
            assert result.output.startswith("error: ") and "Traceback" not in result.output
    elapsed = time.perf_counter() - started
    assert elapsed < SECONDS * 3, f"{ITERATIONS} iterations took {elapsed:.1f} s"  # generous: shared CPUs
    # The loop reached both outcomes: mutations the parsers refuse and ones they accept (weights, names).
    assert codes[3] >= ITERATIONS // 10 and codes[0] >= 1, codes


def test_inspect_shows_names_from_the_file_as_text(tmp_path):
    """Names in an ONNX file that look like rich markup, or are not UTF-8, are shown, not interpreted."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["[/]in"], ["[bold]out"])], "g",
                              [helper.make_tensor_value_info("[/]in", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("[bold]out", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="note", value="[/red]")
    raw = model.SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(raw.replace(b"note", b"n\xffte"))  # a metadata key that is not UTF-8
    onnx.load_model_from_string(raw)  # the unmodified model is valid
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 0, (result.exception, result.output)
    assert "[/]in" in result.output and "[bold]out" in result.output and "[/red]" in result.output
    assert "n\ufffdte" in result.output
