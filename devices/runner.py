#!/usr/bin/env python3
"""edgeqd's on-device runner: measure one model file and print one JSON document.

This file is copied to the target (a Raspberry Pi, an Android phone with Termux,
an emulated ARM userland, the host) together with the artifact and an ``.npz``
slice of evaluation data, and run there with the target's own Python. It imports
nothing from edgeqd — only the standard library, numpy and one runtime:
``ai_edge_litert`` (else ``tflite_runtime``) for ``.tflite``, ``onnxruntime`` for
``.onnx`` — so every transport runs the same code and reports the same schema.

Measurements are named like TFLite's ``benchmark_model``: init, first inference,
warmup average, then timed runs until both ``--runs`` and ``--min-seconds`` are
met (count, mean, std, min, max, p50, p90, p99), peak resident memory (VmHWM) and
its increase over the runtime's import, accuracy and top-1 agreement on the
shipped samples, threads, XNNPACK on/off, the runtime and the device; with
``--profile``, a per-op profile where the runtime has a profiler (ONNX Runtime).

Memory stays bounded however long the timing runs (:class:`LatencyStats`): count,
mean, std, min and max are exact streaming figures; p50/p90/p99 are exact up to
10,000 timed runs and beyond that estimated from a uniform 10,000-sample reservoir
(Vitter's Algorithm R, seeded). ``timings_ms`` says which: ``percentile_samples``
and ``percentiles_exact``.

Usage::

    python3 runner.py --model model_int8.tflite --data eval.npz --threads 2 --runs 50
    python3 runner.py --model model_int8.onnx --profile
    python3 runner.py --probe

stdout carries exactly one JSON document (runtime chatter is sent to stderr);
the exit status is 0 when ``"ok": true``.
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

# ARM "CPU part" numbers (implementer 0x41) → core names, for a readable CPU model
# on boards whose /proc/cpuinfo has no "model name" line (Raspberry Pi OS, Android).
_ARM_PARTS = {
    "0xc07": "Cortex-A7", "0xc08": "Cortex-A8", "0xc09": "Cortex-A9", "0xc0f": "Cortex-A15",
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2", "0xd4b": "Cortex-A78C", "0xd4d": "Cortex-A715", "0xd4e": "Cortex-X3",
    "0xd80": "Cortex-A520", "0xd81": "Cortex-A720", "0xd82": "Cortex-X4",
}


# TFLite builtins whose state lives in variable tensors that persist across invoke().
STATEFUL_OPS = {"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN",
                 "BIDIRECTIONAL_SEQUENCE_RNN", "LSTM", "SVDF"}


def is_stateful(interpreter):
    """Whether a loaded TFLite interpreter runs an op whose state persists across invoke().

    Args:
        interpreter: an ``ai_edge_litert`` / ``tflite_runtime`` Interpreter.
    """
    try:
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
    except Exception:  # a runtime without the op listing: assume stateless
        return False
    return bool(ops & STATEFUL_OPS)


class RunnerError(Exception):
    """A failure the runner reports in its JSON (bad model, bad data, missing runtime)."""


# --------------------------------------------------------------------------- memory

def _status_kb(field):
    """A field of /proc/self/status in kB (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _peak_rss_kb():
    """Peak resident set size: VmHWM, else getrusage's ru_maxrss (kB on Linux)."""
    peak = _status_kb("VmHWM")
    if peak is None:
        try:
            import resource

            peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        except Exception:  # Windows or a stripped-down Python: no figure rather than a crash
            peak = None
    return peak


def _mb(kb):
    return None if kb is None else round(kb / 1024.0, 3)


# --------------------------------------------------------------------------- device identity

def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _getprop(name):
    """An Android system property, or "" where there is no getprop (not Android)."""
    if not shutil.which("getprop"):
        return ""
    import subprocess

    try:
        return subprocess.run(["getprop", name], capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except Exception:
        return ""


def device_info():
    """What the runner knows about the machine it runs on.

    >>> sorted(device_info())[:3]
    ['android_model', 'board', 'cores']
    """
    cpuinfo = _read("/proc/cpuinfo")
    fields = {}
    parts = []
    for line in cpuinfo.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            fields.setdefault(key, value)
            if key == "CPU part":
                parts.append(value.lower())
    cpu = fields.get("model name") or fields.get("Processor") or fields.get("cpu model") or ""
    if parts:
        names = []
        for part in parts:
            name = _ARM_PARTS.get(part, "ARM part " + part)
            if name not in names:
                names.append(name)
        cpu = cpu if cpu and not cpu.startswith("ARMv") else " + ".join(names)
    board = fields.get("Model", "") or _read("/proc/device-tree/model").strip("\x00\n ")
    os_name = ""
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            os_name = line.split("=", 1)[1].strip().strip('"')
    android = _getprop("ro.build.version.release")
    if android:
        os_name = "Android " + android
    mem_kb = None
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    emulated = bool(os.environ.get("EDGEQD_EMULATED")) or "qemu" in cpuinfo.lower()
    return {
        "machine": platform.machine(),
        "cpu": cpu or platform.processor() or "unknown",
        "board": board,
        "android_model": _getprop("ro.product.model"),
        "cores": os.cpu_count(),
        "memory_mb": _mb(mem_kb),
        "os": os_name or platform.platform(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "hostname": platform.node(),
        "emulated": emulated,
    }


def available_runtimes():
    """Which runtimes import here, with their versions (for ``--probe``)."""
    found = {}
    for module in ("ai_edge_litert", "tflite_runtime", "onnxruntime", "numpy"):
        try:
            imported = __import__(module)
            found[module] = _version_of(module, imported)
        except Exception:
            continue
    return found


def _version_of(distribution_module, module):
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib import metadata

        return metadata.version(distribution_module.replace("_", "-"))
    except Exception:
        return "unknown"


# --------------------------------------------------------------------------- runtimes

class _Model:
    """What both runtime wrappers share: the I/O description and (de)quantization.

    ``inputs``/``outputs`` describe the tensors as ``{"name", "shape" (-1 = dynamic),
    "dtype", "scale": [...], "zero_point": [...]}`` (one scale per channel where the
    tensor is per-channel quantized, none for float tensors). Floats go in and come
    out: an integer input is quantized with the artifact's own scale and zero point,
    q = round(x / S + Z) clipped, and an integer output dequantized, x = (q − Z)·S.
    """

    resize_costs = False  # whether another batch size costs a reallocation (LiteRT)

    def tensors(self):
        return self.inputs, self.outputs

    def input_shape(self):
        return list(self.inputs[0]["shape"])

    def prepare(self, x):
        """Turn a float batch into the input tensor's dtype (quantizing if needed)."""
        np = _np()
        tensor = self.inputs[0]
        dtype = np.dtype(tensor["dtype"])
        if dtype.kind == "f":
            return x.astype(dtype)
        scale, zero_point = _per_tensor(tensor)
        if not scale:
            raise RunnerError("integer input %s has no quantization scale" % tensor["name"])
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)

    def get_output(self):
        np = _np()
        q = self._output()
        if np.dtype(self.outputs[0]["dtype"]).kind == "f" or not self.outputs[0]["scale"]:
            return q.astype(np.float32)
        scale, zero_point = _per_tensor(self.outputs[0])
        return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _per_tensor(tensor):
    if len(tensor["scale"]) > 1:
        raise RunnerError("%s is quantized per channel (%d scales); the runner feeds and reads "
                          "per-tensor quantized I/O only" % (tensor["name"], len(tensor["scale"])))
    return (tensor["scale"] or [0.0])[0], (tensor["zero_point"] or [0])[0]


def _tflite_tensor(detail):
    params = detail.get("quantization_parameters") or {}
    return {"name": detail["name"], "shape": [int(d) for d in detail.get("shape_signature", detail["shape"])],
            "dtype": _np().dtype(detail["dtype"]).name, "scale": [float(s) for s in params.get("scales", ())],
            "zero_point": [int(z) for z in params.get("zero_points", ())]}


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
        self.runtime, self.version = name, _version_of(name, __import__(name))
        self.path, self.threads, self.xnnpack = path, threads, xnnpack

    def load(self):
        kwargs = {"model_path": self.path, "num_threads": self.threads}
        if not self.xnnpack:
            # BUILTIN_WITHOUT_DEFAULT_DELEGATES: the reference kernels, no XNNPACK.
            kwargs["experimental_op_resolver_type"] = \
                self._module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = self._module.Interpreter(**kwargs)
            self.interpreter.allocate_tensors()
        except Exception as exc:
            raise RunnerError("%s cannot load %s: %s" % (self.runtime, os.path.basename(self.path),
                                                         str(exc).strip()[:300]))
        self.input = self.interpreter.get_input_details()[0]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.inputs = [_tflite_tensor(d) for d in self.interpreter.get_input_details()]
        self.outputs = [_tflite_tensor(d) for d in self.interpreter.get_output_details()]
        # An app resets a stateful model before each independent sequence; the runner does
        # too (and times it).
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
        # LiteRT's Python Interpreter exposes no op profiler (benchmark_model's
        # --enable_op_profiling does: edgeqd uses it on adb devices).
        return {"available": False,
                "reason": "%s's Python API has no per-op profiler; TFLite per-op profiles come from "
                          "benchmark_model (adb devices with --benchmark-binary)" % self.runtime}


_ONNX_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16"}


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
        self._ort = onnxruntime
        self.runtime, self.version = "onnxruntime", onnxruntime.__version__
        self.path, self.threads = path, threads
        # ORT's CPU provider has no XNNPACK switch in the default wheels: report it as n/a.
        self.xnnpack = None
        self._feed = None

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
        args = self.session.get_inputs() + self.session.get_outputs()
        # Integer graph inputs/outputs (tf2onnx's TFLite front end keeps int8 I/O) carry their
        # scale and zero point only in the Q/DQ nodes next to them: read those from the file.
        params = _onnx_edge_quantization(self.path) if any("int" in a.type for a in args) else {}

        def describe(arg):
            scale, zero_point = params.get(arg.name, ([], []))
            return {"name": arg.name, "shape": [d if isinstance(d, int) else -1 for d in arg.shape],
                    "dtype": _ONNX_TYPES.get(arg.type, arg.type), "scale": scale, "zero_point": zero_point}
        self.inputs = [describe(a) for a in self.session.get_inputs()]
        self.outputs = [describe(a) for a in self.session.get_outputs()]
        self.input_name, self.output_name = self.inputs[0]["name"], self.outputs[0]["name"]

    def set_input(self, prepared):
        self._feed = {self.input_name: prepared}

    def invoke(self):
        self._result = self.session.run([self.output_name], self._feed)[0]

    def _output(self):
        return self._result

    def profile(self, prepared, runs, folder, warmup=5):
        """Per-op profile from ONNX Runtime's own profiler, on a separate session.

        A second session with ``enable_profiling`` runs ``warmup`` + ``runs`` inferences,
        so that the profiler's bookkeeping never touches the timed runs; the warmup runs
        (a new session's first inferences are slow) are dropped from the profile.

        Args:
            prepared: the input tensor.
            runs: inferences averaged.
            folder: where ORT may write its trace (removed after reading).
            warmup: inferences run first and left out.
        """
        session = self._session(enable_profiling=True,
                                profile_file_prefix=os.path.join(folder, "edgeqd_ort_profile"))
        feed = {self.input_name: prepared}
        for _ in range(warmup + runs):
            session.run([self.output_name], feed)
        trace = session.end_profiling()
        try:
            with open(trace) as handle:
                events = json.load(handle)
        finally:
            os.remove(trace)
        starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
        if len(starts) != warmup + runs:
            raise RunnerError("onnxruntime's trace holds %d runs, expected %d" % (len(starts), warmup + runs))
        measured_from = starts[warmup]
        nodes = {}
        for event in events:
            # One "<node>_kernel_time" event per node per run: the kernel's own time.
            if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time") \
                    or event.get("ts", 0) < measured_from:
                continue
            name = event["name"][:-len("_kernel_time")]
            entry = nodes.setdefault(name, {"op": event.get("args", {}).get("op_name", "?"), "us": 0.0,
                                            "calls": 0})
            entry["us"] += float(event.get("dur", 0))
            entry["calls"] += 1
        return summarize_profile(
            [(name, n["op"], n["us"] / 1000.0 / runs, n["calls"] / float(runs)) for name, n in nodes.items()],
            source="onnxruntime %s profiler" % self.version, runs=runs)


_RUNTIMES = {".tflite": _TFLiteModel, ".onnx": _ONNXModel}


def _np():
    import numpy

    return numpy


# --------------------------------------------------------------------------- ONNX Q/DQ edges
# ONNX Runtime does not expose the graph, and the onnx package is not on devices: a
# minimal reader of the protobuf wire format finds the few fields needed (field numbers
# from onnx.proto: ModelProto.graph 7; GraphProto node 1, initializer 5, input 11,
# output 12; NodeProto input 1, output 2, op_type 4, attribute 5; AttributeProto name 1,
# t 5; TensorProto data_type 2, float_data 4, int32_data 5, int64_data 7, name 8, raw_data 9).

def _varint(buf, i):
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _pb(buf):
    """Fields of one protobuf message as (number, wire type, value) — no copies of payloads.

    >>> [(f, w, bytes(v) if w == 2 else v) for f, w, v in _pb(b"\\x08\\x96\\x01\\x12\\x02hi")]
    [(1, 0, 150), (2, 2, b'hi')]
    """
    buf, i = memoryview(buf), 0
    while i < len(buf):
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire in (1, 2, 5):
            size, i = (8, i) if wire == 1 else (4, i) if wire == 5 else _varint(buf, i)
            value, i = buf[i:i + size], i + size
        else:
            raise RunnerError("unsupported protobuf wire type %d in the ONNX file" % wire)
        yield key >> 3, wire, value


def _pb_strings(buf, number):
    return [bytes(v).decode("utf-8", "replace") for f, w, v in _pb(buf) if f == number and w == 2]


_PB_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
              10: "float16", 11: "float64"}


def _pb_array(tensor):
    """A small TensorProto's values as a flat numpy array (raw_data or the typed fields)."""
    np = _np()
    dtype, values = 1, []
    for field, wire, value in _pb(tensor):
        if field == 2:
            dtype = value
        elif field == 9:
            return np.frombuffer(value, _PB_DTYPES.get(dtype, "uint8")).reshape(-1)
        elif field == 4:  # float_data: packed, or one fixed32
            values.extend(np.frombuffer(value, "<f4").tolist())
        elif field in (5, 7):  # int32_data / int64_data: varints, packed or not (negatives are 64-bit)
            raw = [value] if wire == 0 else []
            i = 0
            while wire == 2 and i < len(value):
                item, i = _varint(value, i)
                raw.append(item)
            values.extend(v - (1 << 64) if v >= 1 << 63 else v for v in raw)
    return np.asarray(values).reshape(-1)


def _onnx_edge_quantization(path):
    """Scale and zero point of integer graph inputs/outputs, read from their Q/DQ nodes."""
    with open(path, "rb") as handle:
        graph = next((v for f, _, v in _pb(handle.read()) if f == 7), b"")
    nodes, constants, inputs, outputs = [], {}, [], []
    for field, _, value in _pb(graph):
        if field == 1:
            fields = list(_pb(value))
            op_type = "".join(_pb_strings(value, 4))
            nodes.append((op_type, _pb_strings(value, 1), _pb_strings(value, 2)))
            if op_type == "Constant":
                for attribute in (v for f, _, v in fields if f == 5):
                    tensor = [v for f, _, v in _pb(attribute) if f == 5]
                    if _pb_strings(attribute, 1) == ["value"] and tensor:
                        constants[nodes[-1][2][0]] = tensor[0]
        elif field == 5:
            constants["".join(_pb_strings(value, 8))] = value
        elif field in (11, 12):
            (inputs if field == 11 else outputs).append("".join(_pb_strings(value, 1)))
    # An edge may pass through layout-only ops before its Q/DQ node (tf2onnx's TFLite front
    # end reshapes NHWC int8 inputs to NCHW first): follow those back to the graph edge.
    layout_ops = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten")
    edges = {name: name for name in inputs}
    for op_type, ins, outs in nodes:
        if op_type in layout_ops and ins and ins[0] in edges:
            edges[outs[0]] = edges[ins[0]]
    producers = {out: (op_type, ins) for op_type, ins, outs in nodes for out in outs}
    for edge in outputs:
        name = edges[edge] = edge
        while name in producers and producers[name][0] in layout_ops:
            name = producers[name][1][0]
            edges[name] = edge
    params = {}
    for op_type, ins, outs in nodes:
        if op_type == "DequantizeLinear" and ins[0] in edges:
            name = edges[ins[0]]
        elif op_type == "QuantizeLinear" and outs[0] in edges:
            name = edges[outs[0]]
        else:
            continue
        if ins[1] in constants:
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
    total = sum(ms for _, _, ms, _ in nodes) or 1.0
    by_type = {}
    for _, op, ms, _ in nodes:
        entry = by_type.setdefault(op, {"op": op, "nodes": 0, "avg_ms": 0.0})
        entry["nodes"] += 1
        entry["avg_ms"] += ms
    for entry in by_type.values():
        entry["avg_ms"] = round(entry["avg_ms"], 6)
        entry["percent"] = round(100.0 * entry["avg_ms"] / total, 3)
    slowest = sorted(nodes, key=lambda node: -node[2])[:top]
    return {"available": True, "source": source, "runs": int(runs),
            "total_ms": round(sum(ms for _, _, ms, _ in nodes), 6),
            "by_op_type": sorted(by_type.values(), key=lambda entry: -entry["avg_ms"]),
            "top_nodes": [{"name": name, "op": op, "avg_ms": round(ms, 6),
                           "percent": round(100.0 * ms / total, 3), "calls": calls}
                          for name, op, ms, calls in slowest]}


def open_model(path, threads=1, xnnpack=True, runtime="auto"):
    """Load ``path`` in its runtime and return the runner's model wrapper.

    Args:
        path: a ``.tflite`` or ``.onnx`` file.
        threads: CPU threads for the runtime.
        xnnpack: whether LiteRT may apply its default XNNPACK delegate.
        runtime: "auto", "ai_edge_litert", "tflite_runtime" or "onnxruntime".

    >>> open_model("model.tflite").runtime  # doctest: +SKIP
    'ai_edge_litert'
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _RUNTIMES:
        raise RunnerError("%s: unsupported artifact (give a .tflite or .onnx file)" % path)
    model = _RUNTIMES[suffix](path, threads, xnnpack, runtime)
    model.load()
    return model


def _fit_samples(x, input_shape):
    """Reshape float samples (N, ...) to the model's per-sample input shape: (N, *sample)."""
    np = _np()
    sample_shape = [d for d in input_shape[1:]]
    if any(d < 0 for d in sample_shape):
        sample_shape = list(x.shape[1:])
    size = int(np.prod(sample_shape)) if sample_shape else 1
    per_sample = int(np.prod(x.shape[1:])) if x.ndim > 1 else 1
    if per_sample != size:
        raise RunnerError("data samples have shape %s (%d values) but the model's input is %s "
                          "(%d values per sample)" % (list(x.shape[1:]), per_sample, input_shape, size))
    return x.reshape([len(x)] + sample_shape).astype(np.float32, copy=False)


def predict(model, x, batch=1):
    """Outputs (dequantized, float32) of ``model`` for float samples ``x``.

    On a device the runner feeds one sample per inference, as an app does; host-side
    verification passes a larger ``batch``, used where the model's batch dimension is
    dynamic (LiteRT resizes its input once, ONNX Runtime takes any batch). A model with
    a fixed batch size gets batches of that size; the last batch is padded where its
    size is fixed or a resize would cost a reallocation. A stateful model
    (LSTM) is reset before every inference: each row is an independent sequence.

    Args:
        model: a wrapper from :func:`open_model`.
        x: float samples, shape (N, ...).
        batch: samples per inference where the batch dimension is dynamic.

    >>> predict(open_model("model.tflite"), x, batch=256).shape  # doctest: +SKIP
    (500, 10)
    """
    np = _np()
    shape = model.input_shape()
    samples = _fit_samples(x, shape)
    fixed = shape[0] if shape and shape[0] > 0 else None
    size = fixed or max(1, min(int(batch), len(samples)))
    outputs = []
    for start in range(0, len(samples), size):
        chunk = samples[start:start + size]
        count = len(chunk)
        if count < size and (fixed or model.resize_costs):  # pad the last batch rather than resize
            chunk = np.concatenate([chunk, np.zeros((size - count,) + chunk.shape[1:], chunk.dtype)])
        model.set_input(model.prepare(chunk))
        model.invoke()
        outputs.append(model.get_output().reshape(len(chunk), -1)[:count])
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


# --------------------------------------------------------------------------- measurement

RESERVOIR_SIZE = 10000


class LatencyStats:
    """Latency statistics in constant memory, whatever the number of timed runs.

    count, mean, std (population, as benchmark_model's ``Stat<>``; Welford's update),
    min and max are exact. The percentiles come from a reservoir of at most ``size``
    samples kept by Vitter's Algorithm R: every run so far has the same chance to be
    in it, so they are exact up to ``size`` runs and estimated from a uniform sample
    beyond. Keeping every sample instead cost 5.4 GB at the 150 s cap on a fast model.

    Args:
        size: most samples kept for the percentiles.
        seed: seed of the reservoir's draws (the same timings give the same figures).

    >>> stats = LatencyStats(size=3)
    >>> for ms in (1.0, 2.0, 3.0, 4.0, 5.0):
    ...     stats.add(ms)
    >>> summary = stats.summary()
    >>> summary["count"], summary["mean"], summary["min"], summary["max"], len(stats.reservoir)
    (5, 3.0, 1.0, 5.0, 3)
    """

    def __init__(self, size=RESERVOIR_SIZE, seed=0):
        import random

        self.size = int(size)
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0  # sum of squared differences from the running mean (Welford)
        self.min = float("inf")
        self.max = float("-inf")
        self.reservoir = []
        self._random = random.Random(seed)

    def add(self, ms):
        """Take one timed run.

        Args:
            ms: its latency in milliseconds.
        """
        self.count += 1
        delta = ms - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (ms - self.mean)
        if ms < self.min:
            self.min = ms
        if ms > self.max:
            self.max = ms
        if len(self.reservoir) < self.size:
            self.reservoir.append(ms)
        else:
            # Algorithm R: the n-th run replaces a random slot with probability size/n.
            slot = self._random.randrange(self.count)
            if slot < self.size:
                self.reservoir[slot] = ms

    def summary(self):
        """The ``timings_ms`` figures: count, mean, std, min, max, p50/p90/p99, and how exact they are."""
        np = _np()
        values = np.asarray(self.reservoir, dtype=np.float64)
        return {
            "count": self.count,
            "mean": self.mean,
            "std": (self._m2 / self.count) ** 0.5 if self.count else 0.0,
            "min": self.min,
            "max": self.max,
            "p50": float(np.percentile(values, 50)),
            "p90": float(np.percentile(values, 90)),
            "p99": float(np.percentile(values, 99)),
            # How many runs the percentiles come from: all of them (exact) or the reservoir.
            "percentile_samples": int(values.size),
            "percentiles_exact": self.count <= self.size,
        }


def _ms(start_ns, end_ns):
    return (end_ns - start_ns) / 1e6


def _load_data(path):
    """x (float32), y and reference of the shipped ``.npz`` (None where absent)."""
    np = _np()
    try:
        with np.load(path, allow_pickle=False) as archive:
            return (archive["x"].astype(np.float32), archive["y"] if "y" in archive.files else None,
                    archive["reference"] if "reference" in archive.files else None)
    except Exception as exc:
        raise RunnerError("cannot read data %s: %s" % (os.path.basename(path), exc))


def _time_runs(model, args):
    """Warmup, then timed inferences until --runs and --min-seconds are met (or --max-seconds is)."""
    clock = time.perf_counter_ns
    warmup = []
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
    timings = {"first_inference": warmup[0], "warmup_avg": float(sum(warmup) / len(warmup)),
               "warmup_runs": len(warmup)}
    timings.update(stats.summary())
    timings["seconds"] = time.perf_counter() - began
    timings["capped_by_max_seconds"] = capped
    return timings


def _quality(model, samples, labels, reference):
    """Accuracy, top-1 agreement with the reference outputs and mean |Δ| on the shipped samples."""
    np = _np()
    predictions = predict(model, samples)
    top1 = predictions.argmax(axis=1)
    quality = {"samples": int(len(samples)), "accuracy": None, "agreement": None, "mean_abs_diff": None}
    if labels is not None:
        quality["accuracy"] = float((top1 == labels.reshape(-1)).mean())
    if reference is not None:
        reference = reference.reshape(len(reference), -1).astype(np.float32)
        quality["agreement"] = float((top1 == reference.argmax(axis=1)).mean())
        quality["mean_abs_diff"] = float(np.abs(predictions - reference).mean())
    quality["predictions"] = [int(v) for v in top1]
    return quality


def _schema_tensors(tensors):
    """The runner document's tensor entries: one scale and zero point (0 for float tensors)."""
    return [dict(t, scale=(t["scale"] or [0.0])[0], zero_point=(t["zero_point"] or [0])[0]) for t in tensors]


def benchmark(args):
    """Run the whole measurement described in the module docstring; return the JSON dict."""
    rss_start = _status_kb("VmRSS")
    np = _np()
    samples, labels, reference = _load_data(args.data) if args.data else (None, None, None)
    have_samples = samples is not None and len(samples) > 0
    rss_before_import = _status_kb("VmRSS")

    suffix = os.path.splitext(args.model)[1].lower()
    if suffix not in _RUNTIMES:
        raise RunnerError("%s: unsupported artifact (give a .tflite or .onnx file)" % args.model)
    if not os.path.isfile(args.model):
        raise RunnerError("model file not found: %s" % args.model)
    # Import the runtime on its own so its cost is known before the model is loaded.
    model = _RUNTIMES[suffix](args.model, args.threads, not args.no_xnnpack, args.runtime)
    rss_after_import = _status_kb("VmRSS")
    peak_after_import = _peak_rss_kb()

    start = time.perf_counter_ns()
    model.load()
    timings = {"init": _ms(start, time.perf_counter_ns())}
    inputs, outputs = model.tensors()
    if have_samples:
        timing_input = _fit_samples(samples[:1], model.input_shape())
    else:
        # Without data, a fixed pseudo-random input in [0, 1), as benchmark_model uses random data.
        shape = [d if d > 0 else 1 for d in model.input_shape()]
        timing_input = np.random.default_rng(0).random(shape, dtype=np.float32)
    prepared = model.prepare(timing_input)
    model.set_input(prepared)
    timings.update(_time_runs(model, args))
    peak_after_timing = _peak_rss_kb()

    profile = None
    if args.profile:
        # After the timed runs, so that profiling never slows what is reported as latency.
        folder = os.path.dirname(os.path.abspath(args.model))
        try:
            profile = model.profile(prepared, max(1, min(args.runs, args.profile_runs)), folder,
                                    warmup=max(1, args.warmup))
        except Exception as exc:  # a profiler failure costs the profile, not the measurement
            profile = {"available": False, "reason": "%s: %s" % (type(exc).__name__, str(exc)[:300])}
    quality = _quality(model, samples, labels, reference) if have_samples else None

    peak = _peak_rss_kb()
    return {
        "schema": SCHEMA,
        "ok": True,
        "artifact": {"file": os.path.basename(args.model), "bytes": os.path.getsize(args.model),
                     "format": suffix[1:]},
        "runtime": {"name": model.runtime, "version": model.version},
        "threads": args.threads,
        "xnnpack": model.xnnpack,
        "timings_ms": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in timings.items()},
        "memory_mb": {
            "rss_at_start": _mb(rss_start),
            "rss_before_import": _mb(rss_before_import),
            "rss_after_import": _mb(rss_after_import),
            # Peak of the whole process (VmHWM) and how much of it came after the runtime's import:
            # the model's own footprint plus the runtime's working memory.
            "peak_rss": _mb(peak),
            "peak_rss_after_timing": _mb(peak_after_timing),
            "peak_increase_over_import": _mb(None if peak is None or peak_after_import is None
                                             else peak - max(peak_after_import, rss_after_import or 0)),
        },
        "quality": quality,
        "profile": profile,
        "inputs": _schema_tensors(inputs),
        "outputs": _schema_tensors(outputs),
        "device": device_info(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }


def _finite(value):
    """``value`` with every NaN/inf float replaced by None: NaN is not JSON (a model whose
    outputs are NaN gives a NaN mean_abs_diff; the host reads it as "no figure").

    >>> _finite({"a": [1.0, float("nan")]})
    {'a': [1.0, None]}
    """
    if isinstance(value, float):
        return value if value - value == 0 else None  # inf - inf and nan - nan are nan
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def probe():
    """What this device offers: identity, Python and the runtimes that import."""
    return {"schema": SCHEMA, "ok": True, "probe": True, "device": device_info(),
            "runtimes": available_runtimes(), "python": sys.version.split()[0],
            "executable": sys.executable}


def _parse_args(argv):
    parser = argparse.ArgumentParser(description="edgeqd's on-device benchmark runner")
    parser.add_argument("--model", help="the .tflite or .onnx file")
    parser.add_argument("--data", help=".npz with x (float samples), optional y (labels) and "
                                       "reference (float model outputs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50, help="minimum timed runs")
    parser.add_argument("--warmup", type=int, default=5, help="warmup runs (at least 1)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="minimum timed seconds")
    parser.add_argument("--max-seconds", type=float, default=150.0,
                        help="stop timing after this long even if --runs is not met (0 = never)")
    parser.add_argument("--no-xnnpack", action="store_true", help="LiteRT without XNNPACK")
    parser.add_argument("--profile", action="store_true",
                        help="also a per-op profile where the runtime offers one (ONNX Runtime), "
                             "measured after and apart from the timed runs")
    parser.add_argument("--profile-runs", type=int, default=50, help="inferences the profile averages")
    parser.add_argument("--runtime", default="auto",
                        choices=["auto", "ai_edge_litert", "tflite_runtime", "onnxruntime"])
    parser.add_argument("--watch-stdin", action="store_true",
                        help="stop (and clean up) when standard input reaches end-of-file: over "
                             "ssh/adb the host holds it open, so EOF means the connection dropped")
    parser.add_argument("--probe", action="store_true", help="describe the device and exit")
    parser.add_argument("--cleanup-on-signal", metavar="FOLDER",
                        help="folder to delete if a hangup or terminate signal ends the runner "
                             "(its run folder: a dropped connection leaves nothing behind)")
    return parser.parse_args(argv)


class _Hangup(BaseException):
    """Raised from the signal handler: a dropped connection or a kill ends the run."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _hangup(signum, frame):
    # A dropped ssh/adb connection sends SIGHUP; unwind so --cleanup-on-signal runs.
    raise _Hangup(signum)


def _watch_stdin():
    """Hang up this process when stdin closes (the ssh/adb connection is gone)."""
    import threading

    def watch():
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGHUP)

    threading.Thread(target=watch, daemon=True).start()


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
    status = 1
    try:
        try:
            if args.probe:
                result = probe()
            else:
                if not args.model:
                    raise RunnerError("--model is required (or --probe)")
                # Written so that NaN fails too (every comparison with NaN is False).
                if not (args.threads >= 1 and args.runs >= 1 and args.warmup >= 0
                        and 0 <= args.min_seconds < float("inf") and 0 <= args.max_seconds < float("inf")):
                    raise RunnerError("invalid settings: threads %d, runs %d, warmup %d, min-seconds %s, "
                                      "max-seconds %s (seconds must be finite and >= 0)"
                                      % (args.threads, args.runs, args.warmup, args.min_seconds,
                                         args.max_seconds))
                result = benchmark(args)
            status = 0
        except RunnerError as exc:
            result = {"schema": SCHEMA, "ok": False, "error": str(exc)}
        except MemoryError:
            result = {"schema": SCHEMA, "ok": False, "error": "out of memory (VmHWM %s MB)"
                      % _mb(_peak_rss_kb())}
        except Exception as exc:  # a runtime crash inside Python: report it instead of a traceback
            result = {"schema": SCHEMA, "ok": False,
                      "error": "%s: %s" % (type(exc).__name__, str(exc).strip()[:500])}
        sys.stdout.flush()
        os.write(json_fd, (json.dumps(_finite(result), allow_nan=False) + "\n").encode("utf-8"))
    except _Hangup as hangup:
        if args.cleanup_on_signal:
            shutil.rmtree(args.cleanup_on_signal, ignore_errors=True)
        return 128 + hangup.signum
    return status


if __name__ == "__main__":
    sys.exit(main())
