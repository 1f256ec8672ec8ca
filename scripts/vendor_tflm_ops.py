#!/usr/bin/env python3
"""Regenerate ``edgeqd/_vendor/tflm_ops.json`` from a TensorFlow Lite Micro git checkout.

edgeqd never parses TFLM's C++ headers at run time: this script reads them once, at a
named commit, and writes the table the code reads (``edgeqd.artifact_info.tflm``):

- ``methods``: TFLite op → the ``MicroMutableOpResolver::Add…()`` method that registers it,
  from ``tensorflow/lite/micro/micro_mutable_op_resolver.h`` (``AddBuiltin(BuiltinOperator_X``
  or ``AddCustom("name"``; ``AddEthosU`` registers the custom op "ethos-u" through a function);
- ``python_wheel``: the methods the ``tflite-micro`` Python wheel's resolver calls
  (``python/tflite_micro/python_ops_resolver.cc``), i.e. what edgeqd's ``tflm`` device can run;
- ``cmsis_nn``: the ops with an optimized CMSIS-NN kernel for Arm Cortex-M
  (``tensorflow/lite/micro/kernels/cmsis_nn/*.cc``, their ``Register_X()`` functions); every
  other op runs TFLM's portable reference kernel on a Cortex-M;
- ``int4_filter_ops``: the kernels that accept INT4 filters (``kTfLiteInt4`` in the kernel source).

Usage::

    python scripts/vendor_tflm_ops.py /path/to/tflite-micro [COMMIT] > edgeqd/_vendor/tflm_ops.json
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

HEADER = "tensorflow/lite/micro/micro_mutable_op_resolver.h"
PYTHON_RESOLVER = "python/tflite_micro/python_ops_resolver.cc"
CMSIS_NN = "tensorflow/lite/micro/kernels/cmsis_nn/"
KERNELS = "tensorflow/lite/micro/kernels/"
INT4_KERNELS = {"conv.cc": "CONV_2D", "depthwise_conv.cc": "DEPTHWISE_CONV_2D",
                "fully_connected.cc": "FULLY_CONNECTED"}


def _git(checkout: str, *args: str) -> str:
    return subprocess.run(["git", "-C", checkout, *args], check=True, capture_output=True, text=True).stdout


def methods(header: str) -> dict[str, str]:
    """{"FULLY_CONNECTED": "AddFullyConnected", "CUSTOM:TFLM_DECODE": "AddDecode", ...}"""
    found = {}
    for match in re.finditer(r"TfLiteStatus (Add\w+)\([^{]*\{(.*?)\n  \}", header, re.S):
        name, body = match.group(1), match.group(2)
        builtin = re.search(r"AddBuiltin\(\s*BuiltinOperator_(\w+)", body)
        custom = re.search(r'AddCustom\(\s*"([^"]+)"', body)
        if builtin:
            found[builtin.group(1)] = name
        elif custom:
            found["CUSTOM:" + custom.group(1)] = name
        elif "GetString_ETHOSU" in body:
            found["CUSTOM:ethos-u"] = name  # kernels/ethos_u/ethosu.cc: GetString_ETHOSU() returns "ethos-u"
    return found


def main(argv: list[str]) -> int:
    checkout, commit = argv[0], (argv[1] if len(argv) > 1 else "HEAD")
    sha, date = _git(checkout, "log", "-1", "--format=%H %cs", commit).split()
    table = methods(_git(checkout, "show", f"{sha}:{HEADER}"))
    wheel = sorted(set(re.findall(r"(Add\w+)\(\);", _git(checkout, "show", f"{sha}:{PYTHON_RESOLVER}"))))
    cmsis = set()
    for path in _git(checkout, "ls-tree", "--name-only", sha, CMSIS_NN).split():
        if path.endswith(".cc"):
            source = _git(checkout, "show", f"{sha}:{path}")
            cmsis |= {op for op in re.findall(r"TFLMRegistration Register_([A-Z0-9_]+)\(", source)
                      if op in table and not op.endswith(("_INT8", "_INT16", "_INT4"))}
    int4 = sorted(op for file, op in INT4_KERNELS.items()
                  if "kTfLiteInt4" in _git(checkout, "show", f"{sha}:{KERNELS}{file}"))
    json.dump({"source": "https://github.com/tensorflow/tflite-micro", "commit": sha, "date": date,
               "files": [HEADER, PYTHON_RESOLVER, CMSIS_NN + "*.cc", *(KERNELS + f for f in INT4_KERNELS)],
               "methods": dict(sorted(table.items())), "python_wheel": wheel, "cmsis_nn": sorted(cmsis),
               "int4_filter_ops": int4}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
