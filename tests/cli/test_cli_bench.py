"""edgeqd/cli/bench.py: the terminal table of bench rows."""

import io

from rich.console import Console

from edgeqd.cli.bench import bench_table
from edgeqd.types import BenchResult, Status


def test_bench_table_prints_accuracy_and_agreement_as_convert_does():
    """Percentages like convert's tables (a user compares the two), not fractions."""
    row = BenchResult("m.tflite", "local", "local", 1, Status.OK, accuracy=0.732, agreement=0.995)
    out = io.StringIO()
    Console(file=out, width=300).print(bench_table([row]))
    assert "73.20%" in out.getvalue() and "99.50%" in out.getvalue()
    assert "0.7320" not in out.getvalue()
