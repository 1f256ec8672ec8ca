"""Harness fidelity: ``edgeqd bench --device local`` against Google's ``litert-benchmark``.

In one run on the host, for the demo's float and int8 TFLite models at 1 and 2
threads, alternates (A B A B …) edgeqd's runner and the ``litert-benchmark`` tool
shipped in the ai-edge-litert package, and compares their p50 (median) and mean
latency: the ratio edgeqd / litert-benchmark must sit within 0.9–1.1. Also reports
the int8 vs float speed-up on the host as each tool measures it.

Usage::

    python benchmarks/harness_fidelity.py [MODEL_FP32.tflite MODEL_INT8.tflite] [--rounds 3] [--runs 300]

Without model paths it uses ``demo_out/`` (``make demo``), else builds demo-like
models (the demo teacher's architecture, converted to float and int8 TFLite).
Writes the table into ``benchmarks/RESULTS.md`` under ``## Harness fidelity (issue 5)``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECTION = "Harness fidelity (issue 5)"
LITERT_BENCHMARK = Path(sys.executable).with_name("litert-benchmark")


def demo_like_models(folder: Path) -> tuple[Path, Path]:
    """The demo teacher's architecture (trained 1 epoch on 5k images), as float and int8 TFLite."""
    import numpy as np
    import tensorflow as tf

    from edgeqd.data import load_dataset
    from edgeqd.demo import build_teacher

    data = load_dataset("fashion-mnist")
    model = build_teacher()
    model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x_train[:5000], data.y_train[:5000], epochs=1, batch_size=128, verbose=0)
    fp32, int8 = folder / "model_fp32.tflite", folder / "model_int8.tflite"
    fp32.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None].astype(np.float32)] for s in data.x_train[:200])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    int8.write_bytes(converter.convert())
    return fp32, int8


def run_edgeqd(model: Path, threads: int, runs: int) -> dict:
    """One ``edgeqd bench --device local`` row (the public function the CLI calls)."""
    from edgeqd.devices import bench
    from edgeqd.settings import BenchSettings

    settings = BenchSettings(threads=(threads,), runs=runs, warmup=5, min_seconds=0.0, reference="none")
    row = bench([model], ["local"], settings=settings)[0]
    if not row.ok:
        raise SystemExit(f"edgeqd bench failed: {row.reason}")
    return {"p50": row.p50_ms, "mean": row.mean_ms}


# The tool rounds its reported figures to 0.01 ms, too coarse for the demo's sub-millisecond
# models (±8 % at 0.06 ms). Its module is run unchanged in a fresh process, with only the
# module-level `round` it uses for reporting replaced by the identity.
_UNROUNDED = ("import sys; import ai_edge_litert.tools.benchmark_litert_model as tool; "
              "tool.round = lambda value, digits=None: value; sys.argv[0] = 'litert-benchmark'; tool.main()")


def run_litert(model: Path, threads: int, runs: int, folder: Path) -> dict:
    """One ``litert-benchmark`` run (Google's Python benchmark tool in ai-edge-litert)."""
    result = folder / "litert.json"
    done = subprocess.run([sys.executable, "-c", _UNROUNDED, "--model", str(model), "--num_threads",
                           str(threads), "--num_runs", str(runs), "--warmup_runs", "5",
                           "--result_json", str(result)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"litert-benchmark failed: {done.stderr[-500:]}")
    latency = json.loads(result.read_text())["latency"]
    return {"p50": latency["median_ms"], "mean": latency["avg_ms"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, help="float and int8 .tflite (default: demo_out/)")
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds per configuration")
    parser.add_argument("--runs", type=int, default=2000, help="timed runs per measurement")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="edgeqd-fidelity-"))
    if args.models:
        if len(args.models) != 2:
            parser.error("give two models: the float and the int8 .tflite")
        fp32, int8 = args.models
        source = f"{fp32} and {int8}"
    elif (ROOT / "demo_out" / "model_fp32.tflite").exists():
        fp32, int8 = ROOT / "demo_out" / "model_fp32.tflite", ROOT / "demo_out" / "model_int8.tflite"
        source = "the demo's `demo_out/model_fp32.tflite` and `model_int8.tflite` (`make demo`)"
    else:
        fp32, int8 = demo_like_models(folder)
        source = "demo-like models (the demo teacher's architecture, built by this script)"

    import os

    load_before = os.getloadavg()[0]
    results = {}
    for threads in (1, 2):
        for label, model in (("float32", fp32), ("int8", int8)):
            ours, theirs = [], []
            for _ in range(args.rounds):  # alternate A B A B: drift on a shared machine hits both
                ours.append(run_edgeqd(model, threads, args.runs))
                theirs.append(run_litert(model, threads, args.runs, folder))
            results[(label, threads)] = {
                tool: {key: statistics.median(m[key] for m in measurements) for key in ("p50", "mean")}
                for tool, measurements in (("edgeqd", ours), ("litert", theirs))}
            r = results[(label, threads)]
            print(f"{label} × {threads}: edgeqd p50 {r['edgeqd']['p50']:.3f} ms mean {r['edgeqd']['mean']:.3f} | "
                  f"litert-benchmark p50 {r['litert']['p50']:.3f} mean {r['litert']['mean']:.3f}", flush=True)

    lines = ["| model | threads | edgeqd p50 ms | litert-benchmark p50 ms | ratio p50 | edgeqd mean ms | "
             "litert-benchmark mean ms | ratio mean | within 0.9–1.1 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    all_within = True
    for (label, threads), r in results.items():
        ratio_p50 = r["edgeqd"]["p50"] / r["litert"]["p50"]
        ratio_mean = r["edgeqd"]["mean"] / r["litert"]["mean"]
        within = 0.9 <= ratio_p50 <= 1.1 and 0.9 <= ratio_mean <= 1.1
        all_within &= within
        lines.append(f"| {label} | {threads} | {r['edgeqd']['p50']:.3f} | {r['litert']['p50']:.3f} | "
                     f"{ratio_p50:.3f} | {r['edgeqd']['mean']:.3f} | {r['litert']['mean']:.3f} | "
                     f"{ratio_mean:.3f} | {'yes' if within else 'NO'} |")
    speed = ["", "int8 vs float32 speed-up on this host (p50 float / p50 int8):", "",
             "| threads | edgeqd | litert-benchmark |", "|---:|---:|---:|"]
    for threads in (1, 2):
        f, i = results[("float32", threads)], results[("int8", threads)]
        speed.append(f"| {threads} | {f['edgeqd']['p50'] / i['edgeqd']['p50']:.2f}× | "
                     f"{f['litert']['p50'] / i['litert']['p50']:.2f}× |")
    body = "\n".join([
        f"Models: {source}. Machine: {machine()}; 1-minute load average {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after the run (other jobs shared the cores: with load above the core "
        f"count, the 2-thread rows measure contention as much as the harness).",
        f"Each figure is the median of {args.rounds} alternating runs (edgeqd, litert-benchmark, edgeqd, …) "
        f"of {args.runs} timed inferences after 5 warmups, XNNPACK on in both. edgeqd times "
        "`Interpreter.invoke()` on a real Fashion-MNIST sample; litert-benchmark (ai-edge-litert's own "
        "tool, run unchanged except that its reporting no longer rounds to 0.01 ms) times "
        "`CompiledModel.run_by_name` on random inputs. Shared 2-core machine: compare ratios, "
        "not absolute milliseconds; means absorb other processes' bursts, p50 does not.", "", *lines, *speed, "",
        f"All ratios within 0.9–1.1: **{'yes' if all_within else 'no'}**.", "",
        "Reproduce: `python benchmarks/harness_fidelity.py` (after `make demo`)."])
    print(body)
    if not args.no_write:
        write_section(SECTION, body)
    return 0 if all_within else 1


if __name__ == "__main__":
    sys.exit(main())
