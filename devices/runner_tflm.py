"""TensorFlow Lite Micro for edgeqd's runner: loaded by ``runner.py --runtime tflm`` only.

The ``tflm`` device ships this file beside ``runner.py``; every other device leaves it out,
and the runner loads it from its own folder only when asked for ``tflm``. Like the runner it
imports nothing from edgeqd: the standard library, numpy and one runtime, ``tflite_micro``
(``pip install tflite-micro``: TFLM's own ``MicroInterpreter`` and reference kernels, built
for the host).

What an MCU developer needs beyond outputs and accuracy:

- **the smallest tensor arena TFLM runs the model in**, to the byte: TFLM's
  ``RecordingMicroAllocator`` prints its total from ``print_allocations()`` — on **file
  descriptor 2** (C-level stderr, which ``sys.stderr`` redirection does not see), so
  :class:`CaptureFd` points fd 2 at a temporary file with ``os.dup2`` for the call and parses
  "Arena allocation total N bytes" and the head/tail and per-kind lines. That total is where a
  search starts: interpreters with N and N − 1 bytes, then a binary search, each try in a
  forked child (TFLM crashes instead of failing at some too-small sizes);
- **why TFLM cannot run a model**: a missing op fails in the constructor
  (``MicroInterpreter::AllocateTensors()``, not ``Invoke()``); the wrapper raises a bare
  "TFLM failed to allocate tensors", and TFLM's own reason ("Didn't find op for builtin
  opcode 'GELU'") is on fd 2, captured the same way and named in the error.

Latency here is TFLM's portable reference kernels on the host CPU: not an MCU figure.

>>> parse_allocations("[RecordingMicroAllocator] Arena allocation total 75972 bytes")["arena_bytes"]
75972
"""

import os
import re
import tempfile

ARENA_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
KIND_LINE = re.compile(r"'([^']+)' used (\d+) bytes with alignment overhead \(requested (\d+) bytes for (\d+)")
MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)'|Failed to get registration from op code (\w+)")
FIRST_ARENA = 1 << 20  # the wrapper's own default (10 × the model) is too small for models with big activations


class CaptureFd:
    """Capture what C/C++ code writes to a file descriptor (``text`` after the block).

    ``sys.stderr`` redirection misses it: TFLM's ``MicroPrintf`` writes to fd 2 itself.

    Args:
        fd: the descriptor (2: stderr).
    """

    def __init__(self, fd=2):
        self.fd, self.text = fd, ""

    def __enter__(self):
        self._flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(self.fd)
        os.dup2(self._file.fileno(), self.fd)
        return self

    @staticmethod
    def _flush():
        try:
            import ctypes

            ctypes.CDLL(None).fflush(None)  # C stdio buffers, before the descriptor changes
        except Exception:
            pass

    def __exit__(self, *exc):
        self._flush()
        os.dup2(self._saved, self.fd)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", "replace")
        self._file.close()


def parse_allocations(text):
    """The arena figures in ``print_allocations()``'s lines: total, head (non-persistent), tail
    (persistent) and one entry per kind of allocation.

    Args:
        text: what ``print_allocations()`` wrote.
    """
    figures = {"arena_" + ("bytes" if kind == "total" else kind + "_bytes"): int(n) for kind, n in ARENA_LINE.findall(text)}
    figures["allocations"] = [{"kind": kind, "bytes": int(used), "requested": int(requested), "count": int(count)}
                              for kind, used, requested, count in KIND_LINE.findall(text)]
    return figures


def _tail(text, lines=4):
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])[-400:]


class TFLMMixin:
    """TFLM's Python ``Interpreter`` behind the runner's model API (mixed into the runner's ``_Model`` by
    :func:`adapter`, which sets ``_error`` and ``_stateful_ops``)."""

    _error, _stateful_ops = RuntimeError, frozenset()

    resize_costs = True  # TFLM cannot resize: the batch dimension is the model's

    def __init__(self, path, threads, xnnpack, runtime):
        if not path.lower().endswith(".tflite"):
            raise self._error("TensorFlow Lite Micro runs .tflite files only, not %s" % os.path.basename(path))
        try:
            import tflite_micro
            from tflite_micro.python.tflite_micro import runtime as tflm
            from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema
        except ImportError as exc:
            raise self._error("tflite-micro is not installed here (pip install tflite-micro): %s" % exc)
        self._tflm, self._schema = tflm, schema
        self.runtime, self.version = "tflite_micro", getattr(tflite_micro, "__version__", "unknown")
        # TFLM is single-threaded and has no delegates.
        self.path, self.threads, self.xnnpack = path, 1, None

    def _build(self, data, arena):
        """An interpreter with ``arena`` bytes (TFLM allocates in the constructor), and fd 2 meanwhile."""
        with CaptureFd() as log:
            try:
                interpreter = self._tflm.Interpreter.from_bytes(data, arena_size=arena)
            except Exception as exc:
                interpreter, failure = None, "%s: %s" % (type(exc).__name__, exc)
        return interpreter, (failure if interpreter is None else ""), log.text

    def load(self):
        with open(self.path, "rb") as handle:
            self.data = handle.read()
        model = self._schema.Model.GetRootAs(self.data, 0)
        outside = sum(1 for b in range(model.BuffersLength()) if model.Buffers(b).Offset() > 1)
        if outside:  # TFLM never reads Buffer.offset: it would run with empty weights, silently
            raise self._error("%d buffer(s) are stored after the flatbuffer (Buffer.offset), which TFLM ignores: "
                        "it would run with empty weights; inline them first" % outside)
        arena = max(FIRST_ARENA, 10 * len(self.data))
        for _ in range(3):  # too small an arena says "Failed to resize buffer. Requested: …": grow it
            self.interpreter, failure, log = self._build(self.data, arena)
            if self.interpreter is not None or "Requested" not in log:
                break
            arena *= 16
        if self.interpreter is None:
            missing = MISSING_OP.search(log)
            if missing:
                op = missing.group(1) or missing.group(2)
                raise self._error("TFLM has no kernel for op %s: MicroInterpreter::AllocateTensors() fails (%s)"
                            % (op, _tail(log, 2)))
            raise self._error("TFLM cannot allocate this model (%s): %s" % (failure, _tail(log) or "no message"))
        self.arena_given = arena
        self.inputs, self.outputs = self._tensors(model.Subgraphs(0))
        codes = [max(c.BuiltinCode(), c.DeprecatedBuiltinCode()) for c in
                 (model.OperatorCodes(i) for i in range(model.OperatorCodesLength()))]
        names = {v: k for k, v in vars(self._schema.BuiltinOperator).items() if not k.startswith("_")}
        self.stateful = bool({names.get(c) for c in codes} & set(self._stateful_ops))

    def _tensors(self, graph):
        np = __import__("numpy")
        sides = []
        for count, details, indices in ((graph.InputsLength(), self.interpreter.get_input_details, graph.Inputs),
                                        (graph.OutputsLength(), self.interpreter.get_output_details,
                                         graph.Outputs)):
            side = []
            for i in range(count):
                d, q = details(i), details(i).get("quantization_parameters") or {}
                scales = [float(v) for v in q.get("scales", ())]
                side.append({"name": (graph.Tensors(indices(i)).Name() or b"").decode("utf-8", "replace"),
                             "shape": [int(n) for n in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                             # TFLM reports scale 0 for float tensors: no quantization
                             "scale": scales if any(scales) else [],
                             "zero_point": [int(v) for v in q.get("zero_points", ())] if any(scales) else []})
            sides.append(side)
        return sides

    def set_input(self, prepared):
        self.interpreter.set_input(prepared, 0)

    def invoke(self):
        if self.stateful:
            self.interpreter.reset()
        self.interpreter.invoke()

    def _output(self):
        return self.interpreter.get_output(0)

    def profile(self, prepared, runs, folder, warmup=5):
        return {"available": False, "reason": "TFLM's Python interpreter has no per-op profiler "
                "(on a board: tflite::MicroProfiler)"}

    def _runs_in(self, arena):
        """Whether TFLM allocates and invokes this model in ``arena`` bytes (and TFLM's reason when not).

        Tried in a forked child where there is fork: at some too-small sizes TFLM crashes (SIGSEGV) instead
        of failing (measured: a 6→24→1 int8 MLP runs in 1711 bytes, fails in 1679 and crashes in 1695).
        """
        if not hasattr(os, "fork"):
            return self._runs_here(arena)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: try, write "1"/"0" and the reason, leave without Python's clean-up
            try:
                os.close(read)
                runs, reason = self._runs_here(arena)
                os.write(write, (("1" if runs else "0") + reason)[:4000].encode("utf-8", "replace"))
            finally:
                os._exit(0)
        os.close(write)
        chunks = []
        for block in iter(lambda: os.read(read, 4096), b""):
            chunks.append(block)
        os.close(read)
        status = os.waitpid(pid, 0)[1]
        if os.WIFSIGNALED(status):
            self.crashed_at.append(arena)
            return False, "TFLM crashed (signal %d) in %d bytes instead of failing" % (os.WTERMSIG(status), arena)
        text = b"".join(chunks).decode("utf-8", "replace")
        return text[:1] == "1", text[1:]

    def _runs_here(self, arena):
        check, failure, text = self._build(self.data, arena)
        if check is not None:
            try:
                check.set_input(self.prepare(_zeros(self.inputs[0])), 0)
                check.invoke()
                return True, ""
            except Exception as exc:
                failure = "%s: %s" % (type(exc).__name__, exc)
        return False, "%s %s" % (failure, _tail(text))

    def micro_report(self):
        """The arena TFLM needs: ``print_allocations()``'s total (fd 2), then the smallest arena that
        allocates and invokes, searched from there (``arena_bytes``; ``arena_reported_bytes`` is the total).

        The total is not always that smallest arena, either way (measured: equal on a Fashion-MNIST CNN,
        2672 reported vs 2696 needed on a 12×12 CNN, 3472 vs 3464 on a 28×28 one, 1424 vs 1704 on an MLP).
        """
        with CaptureFd() as log:
            self.interpreter.print_allocations()
        report = {"runtime": "tflite_micro %s" % self.version, "arena_given_bytes": self.arena_given,
                  "arena_source": "smallest arena that allocates and invokes, searched from print_allocations()' "
                                  "total (RecordingMicroAllocator, on fd 2)",
                  "allocation_log": [line.strip() for line in log.text.splitlines() if line.strip()][:20],
                  **parse_allocations(log.text)}
        total = report.get("arena_bytes")
        if not total:
            return report
        report["arena_reported_bytes"], self.crashed_at = total, []
        runs, failure = self._runs_in(total)
        if runs:  # the usual case: is it also the smallest?
            low, high = (total - 1, total) if not self._runs_in(total - 1)[0] else (0, total - 1)
        else:
            low, high = total, self.arena_given
        while high - low > 1:  # invariant: TFLM fails in `low` bytes and runs in `high`
            middle = (low + high) // 2
            low, high = (low, middle) if self._runs_in(middle)[0] else (middle, high)
        report["arena_bytes"], report["arena_checked"] = high, True
        report["arena_below_fails"] = self._runs_in(high - 1)[1] if high > 1 else ""
        report["arena_crashed_at"] = sorted(set(self.crashed_at))  # sizes where TFLM crashed instead of failing
        return report


def adapter(base, error, stateful_ops):
    """The runner's model class for TFLM: :class:`TFLMMixin` on the runner's own base class.

    Args:
        base: the runner's ``_Model`` (input quantization and output dequantization).
        error: the runner's ``RunnerError``.
        stateful_ops: op names whose state persists across invoke() (reset before each sample).
    """
    return type("TFLMModel", (TFLMMixin, base), {"_error": error, "_stateful_ops": frozenset(stateful_ops)})


def _zeros(tensor):
    """A float sample of the input's shape (the check's input; its values do not change the arena)."""
    np = __import__("numpy")
    return np.zeros([d if d > 0 else 1 for d in tensor["shape"]], np.float32)
