#!/usr/bin/env python3
"""edgeqd's on-device runner: measure one model file and print one JSON document.

Copied to the target (a Raspberry Pi, an Android phone with Termux, an emulated ARM userland, the host)
with the artifact and an ``.npz`` slice of evaluation data, and run there with the target's own Python.
It imports nothing from edgeqd — only the standard library, numpy and one runtime: ``ai_edge_litert``
(else ``tflite_runtime``) for ``.tflite``, ``onnxruntime`` for ``.onnx``, or with ``--runtime tflm``
TensorFlow Lite Micro (``runner_tflm.py``, shipped beside it by the ``tflm`` device). Every transport runs
the same code and reports the same schema; verification runs artifacts through :func:`predict`, batched.

Measurements are named like TFLite's ``benchmark_model``: init, first inference, warmup average, then
timed runs until both ``--runs`` and ``--min-seconds`` are met (count, mean, std, min, max,
p50/p90/p99: :class:`LatencyStats`), peak resident memory (VmHWM) and its increase over the runtime's
import, accuracy and top-1 agreement on the shipped samples, threads, XNNPACK on/off, the runtime and
the device; with ``--profile``, a per-op profile where the runtime has one (ONNX Runtime). Usage::

    python3 runner.py --model model_int8.tflite --data eval.npz --threads 2 --runs 50
    python3 runner.py --model model_int8.onnx --profile
    python3 runner.py --probe

stdout carries exactly one JSON document (runtime chatter goes to stderr); exit status 0 means ``"ok": true``.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import time

SCHEMA = "edgeqd-runner/1"

# ARM "CPU part" numbers (implementer 0x41) → core names, where /proc/cpuinfo has no "model name" (Raspberry Pi OS).
_ARM_PARTS = {
    "0xc07": "Cortex-A7", "0xc08": "Cortex-A8", "0xc09": "Cortex-A9", "0xc0f": "Cortex-A15", "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57", "0xd08": "Cortex-A72", "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76", "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2", "0xd4b": "Cortex-A78C", "0xd4d": "Cortex-A715", "0xd4e": "Cortex-X3",
    "0xd80": "Cortex-A520", "0xd81": "Cortex-A720", "0xd82": "Cortex-X4"}

# TFLite builtins whose state lives in variable tensors that persist across invoke().
STATEFUL_OPS = {"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN",
                 "BIDIRECTIONAL_SEQUENCE_RNN", "LSTM", "SVDF"}


def is_stateful(interpreter):
    """Whether a loaded TFLite interpreter runs an op whose state persists across invoke().

    Args:
        interpreter: an ``ai_edge_litert`` / ``tflite_runtime`` Interpreter.
    """
    try:
        return bool({op["op_name"] for op in interpreter._get_ops_details()} & STATEFUL_OPS)
    except Exception:  # a runtime without the op listing: assume stateless
        return False


class RunnerError(Exception):
    """A failure the runner reports in its JSON (bad model, bad data, missing runtime)."""


def _status_kb(field):
    """A field of /proc/self/status in kB (VmRSS, VmHWM), or None off Linux."""
    for line in _read("/proc/self/status").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _peak_rss_kb():
    """Peak resident set size: VmHWM, else getrusage's ru_maxrss (kB on Linux)."""
    peak = _status_kb("VmHWM")
    try:
        import resource
        return peak or int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    except Exception:  # Windows or a stripped-down Python: no figure rather than a crash
        return peak


def _mb(kb):
    return None if kb is None else round(kb / 1024.0, 3)


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _getprop(name):
    """An Android system property, or "" where there is no getprop (not Android)."""
    try:
        import subprocess
        return subprocess.run(["getprop", name], capture_output=True, text=True,
                              timeout=5).stdout.strip() if shutil.which("getprop") else ""
    except Exception:
        return ""


def device_info():
    """What the runner knows about the machine it runs on.

    >>> sorted(device_info())[:3]
    ['android_model', 'board', 'cores']
    """
    cpuinfo = _read("/proc/cpuinfo")
    fields, names = {}, []
    for key, _, value in (line.partition(":") for line in cpuinfo.splitlines() if ":" in line):
        key, value = key.strip(), value.strip()
        fields.setdefault(key, value)
        name = _ARM_PARTS.get(value.lower(), "ARM part " + value.lower()) if key == "CPU part" else None
        if name and name not in names:
            names.append(name)
    cpu = fields.get("model name") or fields.get("Processor") or fields.get("cpu model") or ""
    cpu = " + ".join(names) if names and (not cpu or cpu.startswith("ARMv")) else cpu
    os_name = "".join(line.split("=", 1)[1].strip().strip('"') for line in _read("/etc/os-release").splitlines()
                      if line.startswith("PRETTY_NAME="))
    android = _getprop("ro.build.version.release")
    mem_kb = [int(line.split()[1]) for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal:")]
    return {"machine": platform.machine(), "cpu": cpu or platform.processor() or "unknown",
            "board": fields.get("Model", "") or _read("/proc/device-tree/model").strip("\x00\n "),
            "android_model": _getprop("ro.product.model"), "cores": os.cpu_count(),
            "memory_mb": _mb(mem_kb[-1] if mem_kb else None),
            "os": ("Android " + android if android else os_name) or platform.platform(),
            "kernel": platform.release(), "python": platform.python_version(), "hostname": platform.node(),
            "emulated": bool(os.environ.get("EDGEQD_EMULATED")) or "qemu" in cpuinfo.lower()}


def _version_of(module):
    """The version of an importable ``module`` (its ``__version__``, else its distribution's)."""
    version = getattr(__import__(module), "__version__", None)
    try:
        from importlib import metadata
        return str(version or metadata.version(module.replace("_", "-")))
    except Exception:
        return "unknown"


class _Model:
    """What both runtime wrappers share. ``inputs``/``outputs``: ``{"name", "shape" (-1 = dynamic), "dtype",
    "scale": [...], "zero_point": [...]}`` (per channel where per-channel, none for floats). Floats go in
    and out: quantized inputs get q = round(x / S + Z) clipped with the artifact's own scale and zero point
    (integer inputs without a scale, token ids, pass as they are); quantized outputs are dequantized, (q − Z)·S."""

    resize_costs = False  # whether another batch size costs a reallocation (LiteRT)

    def tensors(self):
        return self.inputs, self.outputs

    def input_shape(self):
        return list(self.inputs[0]["shape"])

    def prepare(self, x):
        """A batch in the input's dtype: quantized where the input has a scale, else as it is (token ids)."""
        np, tensor, dtype = _np(), self.inputs[0], _np().dtype(self.inputs[0]["dtype"])
        scale, zero_point = self._per_tensor(tensor)
        if dtype.kind == "f" or not scale:
            return (np.round(x) if dtype.kind != "f" and x.dtype.kind == "f" else x).astype(dtype)
        return np.clip(np.round(x / scale + zero_point), np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)

    def get_output(self):
        np, q, tensor = _np(), self._output(), self.outputs[0]
        if np.dtype(tensor["dtype"]).kind == "f" or not tensor["scale"]:
            return q.astype(np.float32)
        scale, zero_point = self._per_tensor(tensor)
        return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)

    @staticmethod
    def _per_tensor(tensor):
        if len(tensor["scale"]) > 1:  # per-channel I/O: no converter writes it
            raise RunnerError("%s has %d scales: per-channel quantized I/O is not supported"
                              % (tensor["name"], len(tensor["scale"])))
        return (tensor["scale"] or [0.0])[0], (tensor["zero_point"] or [0])[0]


class _TFLiteModel(_Model):
    """LiteRT's Interpreter (ai_edge_litert, else tflite_runtime) behind one small API."""

    resize_costs = True

    def __init__(self, path, threads, xnnpack, runtime):
        names = ["ai_edge_litert", "tflite_runtime"] if runtime == "auto" else [runtime]
        if not set(names) <= {"ai_edge_litert", "tflite_runtime"}:
            raise RunnerError("runtime %s cannot run .tflite files" % runtime)
        last_error = None
        for name in names:
            try:
                self._module = __import__(name + ".interpreter", fromlist=["Interpreter"])
                break
            except ImportError as exc:
                last_error = exc
        else:
            raise RunnerError("no TFLite runtime here (pip install ai-edge-litert, or tflite-runtime "
                              "on boards without an ai-edge-litert wheel): %s" % last_error)
        self.runtime, self.version = name, _version_of(name)
        self.path, self.threads, self.xnnpack = path, threads, xnnpack

    def load(self):
        kwargs = {"model_path": self.path, "num_threads": self.threads}
        if not self.xnnpack:  # the reference kernels, no XNNPACK
            kwargs["experimental_op_resolver_type"] = self._module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = self._module.Interpreter(**kwargs)
            self.interpreter.allocate_tensors()
        except Exception as exc:
            raise RunnerError("%s cannot load %s: %s" % (self.runtime, os.path.basename(self.path),
                                                         str(exc).strip()[:300]))
        details = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        self.input, self.output_index = details[0][0], details[1][0]["index"]
        self.inputs, self.outputs = ([{
            "name": d["name"], "shape": [int(n) for n in d.get("shape_signature", d["shape"])],
            "dtype": _np().dtype(d["dtype"]).name,
            "scale": [float(v) for v in (d.get("quantization_parameters") or {}).get("scales", ())],
            "zero_point": [int(v) for v in (d.get("quantization_parameters") or {}).get("zero_points", ())]}
            for d in side] for side in details)
        # An app resets a stateful model before each independent sequence: so does the runner (timed).
        self.stateful = is_stateful(self.interpreter)

    def set_input(self, prepared):
        if list(prepared.shape) != list(self.input["shape"]):
            # A batch of another size (the batch dimension is dynamic): resize, then reallocate.
            self.interpreter.resize_tensor_input(self.input["index"], list(prepared.shape))
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
        self.interpreter.set_tensor(self.input["index"], prepared)

    def invoke(self):
        if self.stateful:
            self.interpreter.reset_all_variables()
        self.interpreter.invoke()

    def _output(self):
        return self.interpreter.get_tensor(self.output_index)

    def profile(self, prepared, runs, folder, warmup=5):
        return {"available": False,
                "reason": "%s's Python API has no per-op profiler; TFLite per-op profiles come from "
                          "benchmark_model (adb devices with --benchmark-binary)" % self.runtime}


class _ONNXModel(_Model):
    """ONNX Runtime's InferenceSession behind the same API as :class:`_TFLiteModel`."""

    def __init__(self, path, threads, xnnpack, runtime):
        if runtime not in ("auto", "onnxruntime"):
            raise RunnerError("runtime %s cannot run .onnx files" % runtime)
        try:
            import onnxruntime
        except ImportError as exc:
            if platform.machine().startswith("armv7") or platform.machine() == "armv6l":
                raise RunnerError("onnxruntime publishes no wheels for 32-bit ARM (%s): run the .tflite "
                                  "artifacts here, or use a 64-bit OS on the board" % platform.machine())
            raise RunnerError("onnxruntime is not installed here (pip install onnxruntime): %s" % exc)
        self._ort, self.runtime, self.version = onnxruntime, "onnxruntime", onnxruntime.__version__
        self.path, self.threads, self.xnnpack = path, threads, None  # ORT's CPU wheels: no XNNPACK switch

    def _session(self, **settings):
        options = self._ort.SessionOptions()
        if self.threads:  # None: ONNX Runtime's default (one thread per core)
            options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        for key, value in settings.items():
            setattr(options, key, value)
        return self._ort.InferenceSession(self.path, sess_options=options, providers=["CPUExecutionProvider"])

    def load(self):
        try:
            self.session = self._session()
        except Exception as exc:
            raise RunnerError("onnxruntime cannot load %s: %s" % (os.path.basename(self.path),
                                                                  str(exc).strip()[:300]))
        sides = self.session.get_inputs(), self.session.get_outputs()
        # Integer graph I/O (tf2onnx's TFLite front end keeps int8 I/O) has its scale in the Q/DQ nodes.
        try:
            params = _onnx_edge_quantization(self.path) if any("int" in a.type for s in sides for a in s) else {}
        except Exception as exc:  # ORT loaded it, so the file is sound: a field this reader does not know
            raise RunnerError("cannot read the Q/DQ scales of %s: %s" % (os.path.basename(self.path), exc))
        self.inputs, self.outputs = ([{
            "name": a.name, "shape": [d if isinstance(d, int) else -1 for d in a.shape],
            # "tensor(float)" → "float32", "tensor(int8)" → "int8": numpy's names, as LiteRT's
            "dtype": {"float": "float32", "double": "float64"}.get(a.type[7:-1], a.type[7:-1]),
            "scale": params.get(a.name, ([], []))[0], "zero_point": params.get(a.name, ([], []))[1]}
            for a in side] for side in sides)
        self._feed, self.output_name = None, self.outputs[0]["name"]

    def set_input(self, prepared):
        self._feed = {self.inputs[0]["name"]: prepared}

    def invoke(self):
        self._result = self.session.run([self.output_name], self._feed)[0]

    def _output(self):
        return self._result

    def profile(self, prepared, runs, folder, warmup=5):
        """Per-op profile of ``runs`` inferences on ``prepared`` from ONNX Runtime's profiler, on a
        second session (its bookkeeping never touches the timed runs) whose first ``warmup`` (slow)
        runs are left out; ORT writes its trace in ``folder``, removed once read."""
        session = self._session(enable_profiling=True, profile_file_prefix=os.path.join(folder, "edgeqd_ort_profile"))
        for _ in range(warmup + runs):
            session.run([self.output_name], {self.inputs[0]["name"]: prepared})
        trace = session.end_profiling()
        try:
            with open(trace) as handle:
                events = json.load(handle)
        finally:
            os.remove(trace)
        starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
        if len(starts) != warmup + runs:
            raise RunnerError("onnxruntime's trace holds %d runs, expected %d" % (len(starts), warmup + runs))
        nodes = {}
        # One "<node>_kernel_time" event per node per run: the kernel's own time.
        for event in (e for e in events if e.get("cat") == "Node" and e.get("ts", 0) >= starts[warmup]
                      and e.get("name", "").endswith("_kernel_time")):
            entry = nodes.setdefault(event["name"][:-len("_kernel_time")],
                                     {"op": event.get("args", {}).get("op_name", "?"), "us": 0.0, "calls": 0})
            entry["us"], entry["calls"] = entry["us"] + float(event.get("dur", 0)), entry["calls"] + 1
        return summarize_profile(
            [(name, n["op"], n["us"] / 1000.0 / runs, n["calls"] / float(runs)) for name, n in nodes.items()],
            source="onnxruntime %s profiler" % self.version, runs=runs)


_RUNTIMES = {".tflite": _TFLiteModel, ".onnx": _ONNXModel}


def _tflm_model(path, threads, xnnpack, runtime):
    """TensorFlow Lite Micro: the adapter in ``runner_tflm.py``, which the tflm device ships beside this file."""
    import importlib.util
    where = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner_tflm.py")
    if not os.path.isfile(where):
        raise RunnerError("--runtime tflm needs runner_tflm.py beside the runner (the tflm device ships it)")
    spec = importlib.util.spec_from_file_location("runner_tflm", where)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.adapter(_Model, RunnerError, STATEFUL_OPS)(path, threads, xnnpack, runtime)


def _np():
    import numpy

    return numpy


# ONNX Runtime does not expose the graph and the onnx package is not on devices: a minimal protobuf
# reader takes the few fields needed (onnx.proto: ModelProto.graph 7; GraphProto node 1, initializer 5,
# input 11, output 12; NodeProto input 1, output 2, op_type 4, attribute 5; AttributeProto name 1, t 5;
# ValueInfoProto name 1; TensorProto data_type 2, float_data 4, int32_data 5, int64_data 7, name 8, raw_data 9).

def _varint(buf, i):
    value = shift = 0
    while buf[i] & 0x80:
        value, shift, i = value | (buf[i] & 0x7F) << shift, shift + 7, i + 1
    return value | buf[i] << shift, i + 1


def _pb(buf):
    """A protobuf message's fields as {number: [value, ...]}: ints, or memoryview slices.

    >>> fields = _pb(b"\\x08\\x96\\x01\\x12\\x02hi")
    >>> fields[1], bytes(fields[2][0])
    ([150], b'hi')
    """
    buf, i, fields = memoryview(buf), 0, {}
    while i < len(buf):
        key, i = _varint(buf, i)
        if key & 7 == 0:
            value, i = _varint(buf, i)
        else:  # fixed64, fixed32 or length-delimited
            size, i = (8, i) if key & 7 == 1 else (4, i) if key & 7 == 5 else _varint(buf, i)
            value, i = buf[i:i + size], i + size
        fields.setdefault(key >> 3, []).append(value)
    return fields


def _text(fields, number):
    return [bytes(v).decode("utf-8", "replace") for v in fields.get(number, [])]


def _pb_array(tensor):
    """A small TensorProto's values, flat (raw_data, float_data, int32_data or int64_data)."""
    np, fields = _np(), _pb(tensor)
    if 9 in fields:
        dtype = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
                 10: "float16", 11: "float64"}
        return np.frombuffer(fields[9][0], dtype.get(fields.get(2, [1])[0], "float32"))
    if 4 in fields:
        return np.concatenate([np.frombuffer(v, "<f4") for v in fields[4]])
    values = []
    for item in fields.get(5, []) + fields.get(7, []):  # varints, packed or not; negatives 64-bit
        i = 0
        while not isinstance(item, int) and i < len(item):
            value, i = _varint(item, i)
            values.append(value)
        values += [item] if isinstance(item, int) else []
    return np.array([v - (1 << 64) if v >= 1 << 63 else v for v in values])


def _onnx_edge_quantization(path):
    """{graph input/output name: (scales, zero points)} read from the Q/DQ nodes at the edges."""
    with open(path, "rb") as handle:
        graph = _pb(_pb(handle.read()).get(7, [b""])[0])
    nodes = [("".join(_text(n, 4)), _text(n, 1), _text(n, 2), n.get(5, [])) for n in map(_pb, graph.get(1, []))]
    constants = {"".join(_text(_pb(t), 8)): t for t in graph.get(5, [])}
    for _, _, outs, attributes in (n for n in nodes if n[0] == "Constant"):
        constants.update({outs[0]: a[5][0] for a in map(_pb, attributes) if _text(a, 1) == ["value"] and 5 in a})
    # An edge may pass through layout-only ops before its Q/DQ node (tf2onnx's TFLite front
    # end reshapes NHWC int8 inputs to NCHW first): follow those back to the graph edge.
    layout = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten")
    edges = {name: name for name in ("".join(_text(_pb(v), 1)) for v in graph.get(11, []))}
    for op, ins, outs, _ in nodes:
        if op in layout and ins and ins[0] in edges:
            edges[outs[0]] = edges[ins[0]]
    producers = {out: (op, ins) for op, ins, outs, _ in nodes for out in outs}
    for edge in ("".join(_text(_pb(v), 1)) for v in graph.get(12, [])):
        name = edges[edge] = edge
        while name in producers and producers[name][0] in layout:
            name = producers[name][1][0]
            edges[name] = edge
    params = {}
    for op, ins, outs, _ in nodes:
        name = edges.get(ins[0]) if op == "DequantizeLinear" else edges.get(outs[0]) if op == "QuantizeLinear" else None
        if name is not None and ins[1] in constants:
            zero = _pb_array(constants[ins[2]]) if len(ins) > 2 and ins[2] in constants else [0]
            params[name] = ([float(s) for s in _pb_array(constants[ins[1]])], [int(z) for z in zero])
    return params


def summarize_profile(nodes, source, runs, top=10):
    """The per-op profile document shared by every source (ORT here, benchmark_model on adb).

    Args:
        nodes: (node name, op type, average ms per inference, calls per inference) tuples.
        source: what measured them.
        runs: inferences profiled.
        top: how many of the slowest nodes to list.

    >>> summarize_profile([("c1", "Conv", 0.3, 1), ("c2", "Conv", 0.1, 1), ("fc", "Gemm", 0.1, 1)],
    ...                   "test", 10)["by_op_type"][0]
    {'op': 'Conv', 'nodes': 2, 'avg_ms': 0.4, 'percent': 80.0}
    """
    total, by_type = sum(ms for _, _, ms, _ in nodes) or 1.0, {}
    for _, op, ms, _ in nodes:
        entry = by_type.setdefault(op, {"op": op, "nodes": 0, "avg_ms": 0.0})
        entry["nodes"], entry["avg_ms"] = entry["nodes"] + 1, entry["avg_ms"] + ms
    for entry in by_type.values():
        entry.update(avg_ms=round(entry["avg_ms"], 6), percent=round(100.0 * round(entry["avg_ms"], 6) / total, 3))
    return {"available": True, "source": source, "runs": int(runs),
            "total_ms": round(sum(ms for _, _, ms, _ in nodes), 6),
            "by_op_type": sorted(by_type.values(), key=lambda entry: -entry["avg_ms"]),
            "top_nodes": [{"name": name, "op": op, "avg_ms": round(ms, 6),
                           "percent": round(100.0 * ms / total, 3), "calls": calls}
                          for name, op, ms, calls in sorted(nodes, key=lambda node: -node[2])[:top]]}


def open_model(path, threads=1, xnnpack=True, runtime="auto", load=True):
    """The runner's model wrapper for ``path``, loaded in its runtime.

    Args:
        path: a ``.tflite`` or ``.onnx`` file.
        threads: CPU threads for the runtime (None: the runtime's default).
        xnnpack: whether LiteRT may apply its default XNNPACK delegate.
        runtime: "auto", "ai_edge_litert", "tflite_runtime", "onnxruntime" or "tflm" (TensorFlow Lite Micro).
        load: False to import the runtime only (``model.load()`` then loads the file).

    >>> open_model("model.tflite").runtime  # doctest: +SKIP
    'ai_edge_litert'
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _RUNTIMES:
        raise RunnerError("%s: unsupported artifact (give a .tflite or .onnx file)" % path)
    if not os.path.isfile(path):
        raise RunnerError("model file not found: %s" % path)
    model = (_tflm_model if runtime == "tflm" else _RUNTIMES[suffix])(path, threads, xnnpack, runtime)
    if load:
        model.load()
    return model


def _fit_samples(x, input_shape):
    """Reshape samples (N, ...) to the model's per-sample input shape: (N, *sample); integers stay integers."""
    np, sample_shape = _np(), list(input_shape[1:])
    sample_shape = list(x.shape[1:]) if any(d < 0 for d in sample_shape) else sample_shape
    size = int(np.prod(sample_shape)) if sample_shape else 1
    per_sample = int(np.prod(x.shape[1:])) if x.ndim > 1 else 1
    if per_sample != size:
        raise RunnerError("data samples have shape %s (%d values) but the model's input is %s "
                          "(%d values per sample)" % (list(x.shape[1:]), per_sample, input_shape, size))
    return x.reshape([len(x)] + sample_shape).astype(x.dtype if x.dtype.kind in "iu" else np.float32, copy=False)


def predict(model, x, batch=1):
    """Outputs (dequantized, float32) of ``model`` for float samples ``x``.

    On a device one sample per inference, as an app runs it; verification passes a larger
    ``batch``, used where the batch dimension is dynamic (a fixed one sets the batch; the last
    batch is padded where a resize would cost a reallocation). A stateful model (LSTM) is
    reset before every inference: each row is an independent sequence.

    Args:
        model: a wrapper from :func:`open_model`.
        x: float samples, shape (N, ...).
        batch: samples per inference where the batch dimension is dynamic.

    >>> predict(open_model("model.tflite"), x, batch=256).shape  # doctest: +SKIP
    (500, 10)
    """
    np, shape = _np(), model.input_shape()
    samples = _fit_samples(x, shape)
    fixed = shape[0] if shape and shape[0] > 0 else None
    size = fixed or max(1, min(int(batch), len(samples)))
    outputs = []
    for start in range(0, len(samples), size):
        chunk, count = samples[start:start + size], min(size, len(samples) - start)
        if count < size and (fixed or model.resize_costs):  # pad the last batch rather than resize
            chunk = np.concatenate([chunk, np.zeros((size - count,) + chunk.shape[1:], chunk.dtype)])
        model.set_input(model.prepare(chunk))
        model.invoke()
        outputs.append(model.get_output().reshape(len(chunk), -1)[:count])
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


RESERVOIR_SIZE = 10000


class LatencyStats:
    """Latency statistics in constant memory, whatever the number of timed runs.

    count, mean, std (population, as benchmark_model's ``Stat<>``; Welford), min and max are exact;
    p50/p90/p99 come from a reservoir of at most ``size`` samples (Vitter's Algorithm R: every run
    has the same chance to be in it), exact up to ``size`` runs (keeping every sample cost 5.4 GB
    at the 150 s cap on a fast model).

    Args:
        size: most samples kept for the percentiles.
        seed: seed of the reservoir's draws (the same timings give the same figures).

    >>> stats = LatencyStats(size=3)
    >>> for ms in (1.0, 2.0, 3.0, 4.0, 5.0):
    ...     stats.add(ms)
    >>> [stats.summary()[key] for key in ("count", "mean", "min", "max")], len(stats.reservoir)
    ([5, 3.0, 1.0, 5.0], 3)
    """

    def __init__(self, size=RESERVOIR_SIZE, seed=0):
        import random
        self.size, self.count, self.mean, self.min, self.max = int(size), 0, 0.0, float("inf"), float("-inf")
        self._m2 = 0.0  # sum of squared differences from the running mean (Welford)
        self.reservoir, self._random = [], random.Random(seed)

    def add(self, ms):
        """Take one timed run of ``ms`` milliseconds."""
        self.count += 1
        delta = ms - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (ms - self.mean)
        self.min, self.max = min(self.min, ms), max(self.max, ms)
        if len(self.reservoir) < self.size:
            self.reservoir.append(ms)
        else:  # Algorithm R: the n-th run replaces a random slot with probability size/n
            slot = self._random.randrange(self.count)
            if slot < self.size:
                self.reservoir[slot] = ms

    def summary(self):
        """The ``timings_ms`` figures: count, mean, std, min, max, p50/p90/p99, and how exact they are."""
        np, values = _np(), _np().asarray(self.reservoir, dtype="float64")
        return {"count": self.count, "mean": self.mean, "std": (self._m2 / self.count) ** 0.5 if self.count else 0.0,
                "min": self.min, "max": self.max, "p50": float(np.percentile(values, 50)),
                "p90": float(np.percentile(values, 90)), "p99": float(np.percentile(values, 99)),
                # How many runs the percentiles come from: all of them (exact) or the reservoir.
                "percentile_samples": int(values.size), "percentiles_exact": self.count <= self.size}


def _ms(start_ns, end_ns):
    return (end_ns - start_ns) / 1e6


def _time_runs(model, args):
    """Warmup, then timed inferences until --runs and --min-seconds are met (or --max-seconds is)."""
    clock, warmup = time.perf_counter_ns, []
    for _ in range(max(1, args.warmup)):
        start = clock()
        model.invoke()
        warmup.append(_ms(start, clock()))
    stats = LatencyStats()  # constant memory however long the timing runs
    began, capped = time.perf_counter(), False
    while True:
        start = clock()
        model.invoke()
        stats.add(_ms(start, clock()))
        elapsed = time.perf_counter() - began
        if stats.count >= args.runs and elapsed >= args.min_seconds:
            break
        if args.max_seconds and elapsed >= args.max_seconds:
            capped = True
            break
    return dict(first_inference=warmup[0], warmup_avg=float(sum(warmup) / len(warmup)), warmup_runs=len(warmup),
                **stats.summary(), seconds=time.perf_counter() - began, capped_by_max_seconds=capped)


def _quality(model, samples, labels, reference):
    """Accuracy (MAE for float regression targets), top-1 agreement with the reference outputs (none for one
    output: its argmax is always 0) and mean |Δ| on the shipped samples."""
    np, predictions = _np(), predict(model, samples)
    top1, classes = predictions.argmax(axis=1), predictions.shape[1] > 1
    quality = {"samples": int(len(samples)), "accuracy": None, "agreement": None, "mean_abs_diff": None}
    if labels is not None and labels.dtype.kind == "f":
        quality["mae"] = float(np.abs(predictions - labels.reshape(len(labels), -1)).mean())
    elif labels is not None:
        quality["accuracy"] = float((top1 == labels.reshape(-1)).mean())
    if reference is not None:
        reference = reference.reshape(len(reference), -1).astype(np.float32)
        quality["agreement"] = float((top1 == reference.argmax(axis=1)).mean()) if classes else None
        quality["mean_abs_diff"] = float(np.abs(predictions - reference).mean())
    quality["predictions"] = [int(v) for v in top1]
    return quality


def benchmark(args):
    """Run the whole measurement described in the module docstring; return the JSON dict."""
    np, rss_start = _np(), _status_kb("VmRSS")
    samples = labels = reference = None
    if args.data:  # x (float samples), optional y (labels) and reference (the float model's outputs)
        try:
            with np.load(args.data, allow_pickle=False) as archive:
                samples, labels, reference = (archive[k] if k == "x" or k in archive.files else None
                                              for k in ("x", "y", "reference"))
        except Exception as exc:
            raise RunnerError("cannot read data %s: %s" % (os.path.basename(args.data), exc))
    rss_before_import = _status_kb("VmRSS")
    # Import the runtime on its own so its cost is known before the model is loaded.
    model = open_model(args.model, args.threads, not args.no_xnnpack, args.runtime, load=False)
    rss_after_import, peak_after_import = _status_kb("VmRSS"), _peak_rss_kb()
    start = time.perf_counter_ns()
    model.load()
    timings = {"init": _ms(start, time.perf_counter_ns())}
    if samples is not None and len(samples):
        timing_input = _fit_samples(samples[:1], model.input_shape())
    else:  # without data, a fixed pseudo-random input in [0, 1), as benchmark_model uses random data
        shape = [d if d > 0 else 1 for d in model.input_shape()]
        timing_input = np.random.default_rng(0).random(shape, dtype=np.float32)
    model.set_input(model.prepare(timing_input))
    timings.update(_time_runs(model, args))
    peak_after_timing, profile = _peak_rss_kb(), None
    if args.profile:
        # After the timed runs, so that profiling never slows what is reported as latency.
        try:
            profile = model.profile(model.prepare(timing_input), max(1, min(args.runs, args.profile_runs)),
                                    os.path.dirname(os.path.abspath(args.model)), warmup=max(1, args.warmup))
        except Exception as exc:  # a profiler failure costs the profile, not the measurement
            profile = {"available": False, "reason": "%s: %s" % (type(exc).__name__, str(exc)[:300])}
    quality = _quality(model, samples, labels, reference) if samples is not None and len(samples) else None
    peak = _peak_rss_kb()
    # The runner document's tensors carry one scale and zero point each (0 for float tensors).
    inputs, outputs = ([dict(t, scale=(t["scale"] or [0.0])[0], zero_point=(t["zero_point"] or [0])[0])
                        for t in side] for side in model.tensors())
    return {
        "schema": SCHEMA, "ok": True,
        "artifact": {"file": os.path.basename(args.model), "bytes": os.path.getsize(args.model),
                     "format": os.path.splitext(args.model)[1].lower()[1:]},
        "runtime": {"name": model.runtime, "version": model.version}, "threads": args.threads, "xnnpack": model.xnnpack,
        "timings_ms": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in timings.items()},
        "memory_mb": {
            "rss_at_start": _mb(rss_start), "rss_before_import": _mb(rss_before_import),
            "rss_after_import": _mb(rss_after_import),
            # Peak of the whole process (VmHWM) and how much of it came after the runtime's import:
            # the model's own footprint plus the runtime's working memory.
            "peak_rss": _mb(peak), "peak_rss_after_timing": _mb(peak_after_timing),
            "peak_increase_over_import": _mb(None if peak is None or peak_after_import is None
                                             else peak - max(peak_after_import, rss_after_import or 0)),
        },
        "quality": quality, "profile": profile, "inputs": inputs, "outputs": outputs,
        "micro": model.micro_report() if hasattr(model, "micro_report") else None,  # TFLM: the arena
        "device": device_info(), "python": sys.version.split()[0], "numpy": np.__version__,
    }


def _finite(value):
    """``value`` with NaN/inf floats as None: NaN is not JSON (NaN outputs give a NaN mean_abs_diff: "no figure").

    >>> _finite({"a": [1.0, float("nan")]})
    {'a': [1.0, None]}
    """
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return None if isinstance(value, float) and value - value != 0 else value  # inf - inf, nan - nan: nan


def probe():
    """What this device offers: identity, Python and the runtimes that import, with their versions."""
    runtimes = {}
    for module in ("ai_edge_litert", "tflite_runtime", "onnxruntime", "tflite_micro", "numpy"):
        try:
            runtimes[module] = _version_of(module)
        except Exception:
            continue
    return {"schema": SCHEMA, "ok": True, "probe": True, "device": device_info(), "runtimes": runtimes,
            "python": sys.version.split()[0], "executable": sys.executable}


def _parse_args(argv):
    parser = argparse.ArgumentParser(description="edgeqd's on-device benchmark runner")
    add = parser.add_argument
    add("--model", help="the .tflite or .onnx file")
    add("--data", help=".npz with x (float samples), optional y (labels) and reference (float model outputs)")
    add("--threads", type=int, default=1)
    add("--runs", type=int, default=50, help="minimum timed runs")
    add("--warmup", type=int, default=5, help="warmup runs (at least 1)")
    add("--min-seconds", type=float, default=1.0, help="minimum timed seconds")
    add("--max-seconds", type=float, default=150.0, help="stop timing after this long, --runs met or not (0 = never)")
    add("--no-xnnpack", action="store_true", help="LiteRT without XNNPACK")
    add("--profile", action="store_true", help="a per-op profile where the runtime has one, after the timed runs")
    add("--profile-runs", type=int, default=50, help="inferences the profile averages")
    add("--runtime", default="auto", choices=["auto", "ai_edge_litert", "tflite_runtime", "onnxruntime", "tflm"])
    add("--watch-stdin", action="store_true", help="stop and clean up at stdin's EOF (ssh/adb: the connection dropped)")
    add("--probe", action="store_true", help="describe the device and exit")
    add("--cleanup-on-signal", metavar="FOLDER", help="folder to delete if SIGHUP/SIGTERM ends the runner (its run folder)")
    return parser.parse_args(argv)


class _Hangup(BaseException):
    """A dropped connection or a kill (``args[0]``: the signal) unwinds so that --cleanup-on-signal runs."""


def _hangup(signum, frame):
    raise _Hangup(signum)


def _watch_stdin():
    """Hang up this process when stdin closes (the ssh/adb connection is gone)."""
    import threading
    def watch():
        try:
            while os.read(0, 4096):
                continue
        except OSError:  # stdin gone: as good as end-of-file
            pass
        os.kill(os.getpid(), signal.SIGHUP)

    threading.Thread(target=watch, daemon=True).start()


def _run(args):
    """The JSON document for ``args`` (a failure becomes ``"ok": false`` with its reason) and the exit status."""
    try:
        if args.probe:
            return probe(), 0
        if not args.model:
            raise RunnerError("--model is required (or --probe)")
        # Written so that NaN fails too (every comparison with NaN is False).
        if not (args.threads >= 1 and args.runs >= 1 and args.warmup >= 0
                and 0 <= args.min_seconds < float("inf") and 0 <= args.max_seconds < float("inf")):
            raise RunnerError("invalid settings: threads %d, runs %d, warmup %d, min-seconds %s, max-seconds %s "
                              "(seconds must be finite and >= 0)" % (args.threads, args.runs, args.warmup,
                                                                      args.min_seconds, args.max_seconds))
        return benchmark(args), 0
    except RunnerError as exc:
        error = str(exc)
    except MemoryError:
        error = "out of memory (VmHWM %s MB)" % _mb(_peak_rss_kb())
    except Exception as exc:  # a runtime crash inside Python: report it instead of a traceback
        error = "%s: %s" % (type(exc).__name__, str(exc).strip()[:500])
    return {"schema": SCHEMA, "ok": False, "error": error}, 1


def main(argv=None):
    """Entry point: parse arguments, measure, print one JSON document, return the exit status."""
    args = _parse_args(argv)
    # Keep stdout for the JSON document alone: runtimes print banners ("Created TensorFlow Lite
    # XNNPACK delegate") that would break parsing on the host, so fd 1 points at stderr meanwhile.
    sys.stdout.flush()
    json_fd = os.dup(1)
    os.dup2(2, 1)
    for signum in (signal.SIGHUP, signal.SIGTERM):
        try:
            signal.signal(signum, _hangup)
        except (ValueError, OSError, AttributeError):
            pass
    if args.watch_stdin:
        _watch_stdin()
    try:
        result, status = _run(args)
        sys.stdout.flush()
        os.write(json_fd, (json.dumps(_finite(result), allow_nan=False) + "\n").encode("utf-8"))
    except _Hangup as hangup:
        if args.cleanup_on_signal:
            shutil.rmtree(args.cleanup_on_signal, ignore_errors=True)
        return 128 + hangup.args[0]
    return status


if __name__ == "__main__":
    sys.exit(main())
