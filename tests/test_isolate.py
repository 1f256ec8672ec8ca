"""Stages in a child process: a native crash becomes an error naming the stage and the signal (issue 13).

The crashes are real: the child kills itself with SIGSEGV (what oneDNN's heap corruption and
TFLite's GRU calibrator do), or dies of an AVX-512 oneDNN training kernel where the CPU has one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from edgeqd import interrupts
from edgeqd.errors import DataError, NativeCrashError
from edgeqd.isolate import Worker, describe_exit


def double(x):
    return x * 2


def refuse(message):
    raise DataError(message)


def segfault():
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)  # never reached: the signal's default action ends the process


def count(n, progress):
    for i in range(n):
        progress(f"step {i}", i + 1, n)
    return n


def sleep(seconds):
    time.sleep(seconds)
    return os.getpid()


def test_results_exceptions_and_progress_come_back_from_one_child():
    seen = []
    with Worker(preload=()) as worker:
        assert np.array_equal(worker.call("doubling", double, np.arange(3)), [0, 2, 4])
        with pytest.raises(DataError, match="no labels"):
            worker.call("refusing", refuse, "no labels")
        assert worker.call("counting", count, 3, progress=lambda *a: seen.append(a)) == 3
        assert worker.starts == 1  # one child served every call, the exception included
    assert seen == [("step 0", 1, 3), ("step 1", 2, 3), ("step 2", 3, 3)]


def test_a_native_crash_names_the_stage_and_the_signal_and_the_next_call_restarts():
    with Worker(preload=()) as worker:
        with pytest.raises(NativeCrashError, match=r"^TFLite int8 calibration crashed in native code \(SIGSEGV\)"):
            worker.call("TFLite int8 calibration", segfault)
        assert not worker.alive
        assert worker.call("doubling", double, 21) == 42
        assert worker.starts == 2


def test_an_interrupt_while_the_child_runs_kills_it():
    worker = Worker(preload=())
    worker.start()
    child = worker._process
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    with interrupts.handled():
        timer.start()
        with pytest.raises(interrupts.Interrupted):
            worker.call("sleeping", sleep, 60)
    timer.join()
    assert child.poll() is not None and not worker.alive  # killed and reaped, not left running


def test_describe_exit_names_signals_and_statuses():
    assert describe_exit(-signal.SIGABRT) == "SIGABRT"
    assert "out of memory" in describe_exit(-signal.SIGKILL)
    assert describe_exit(1) == "exit status 1"


def test_faulthandler_reaches_the_real_stderr_while_native_logs_are_captured():
    code = ("import os, signal\n"
            "from edgeqd.cli.common import native_logs_captured\n"
            "with native_logs_captured():\n"
            "    os.write(2, b'captured native chatter\\n')\n"
            "    os.kill(os.getpid(), signal.SIGSEGV)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in done.stderr
    assert "captured native chatter" not in done.stderr  # the native log itself stays captured


AVX512 = "avx512f" in open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else False


def train_one_by_one_strided_conv():
    """fer's crashing layer alone: a 1x1 stride-2 conv, 8 → 16 channels, 60x60, trained (oneDNN bwd-weights)."""
    import tf_keras as keras

    inputs = keras.Input((60, 60, 8))
    x = keras.layers.Conv2D(16, 1, strides=2, padding="same", use_bias=False)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(7)(keras.layers.GlobalAveragePooling2D()(x)))
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((512, 60, 60, 8)).astype("f4"), rng.integers(0, 7, 512), batch_size=128,
              epochs=3, verbose=0)
    return "trained"


@pytest.mark.slow
@pytest.mark.skipif(not AVX512, reason="the oneDNN crash needs an AVX-512 CPU")
def test_onednn_avx512_crash_is_a_named_error_and_the_avx2_cap_avoids_it(monkeypatch):
    # The child inherits the environment when it starts: uncapped, oneDNN picks its AVX-512 kernel.
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    with Worker() as worker:
        with pytest.raises(NativeCrashError, match=r"QAT training crashed in native code \(SIG(SEGV|ABRT)\)"):
            worker.call("QAT training", train_one_by_one_strided_conv)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # edgeqd's default
    with Worker() as worker:
        assert worker.call("QAT training", train_one_by_one_strided_conv) == "trained"
