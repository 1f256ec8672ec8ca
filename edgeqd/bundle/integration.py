"""``INTEGRATION.md``: how an app loads this run's artifacts, with this model's numbers filled in.

Everything is taken from the real artifacts (through :func:`edgeqd.artifact_info.inspect_artifact`)
and the manifest: tensor names, shapes, dtypes, scale and zero point, the normalization
the training data used, the labels, and the operators TensorFlow Lite Micro must register.
"""

from __future__ import annotations

import math
from typing import Any

from edgeqd import __version__
from edgeqd.bundle.c_array import C_HEADER, micro_op_resolver_calls
from edgeqd.devices.runner import STATEFUL_OPS

INTEGRATION_FILE = "INTEGRATION.md"
LITERT_ANDROID = "com.google.ai.edge.litert:litert:1.4.1"  # the Interpreter API artifact (CPU)
ORT_ANDROID = "com.microsoft.onnxruntime:onnxruntime-android"


def _fmt(value: float) -> str:
    return f"{value:.9g}"


def _shape(shape: list[int]) -> str:
    return "[" + ", ".join("N" if d < 0 else str(d) for d in shape) + "]"


def _elements(shape: list[int]) -> int:
    return math.prod(d if d > 0 else 1 for d in shape)


def _kotlin_type(dtype: str) -> tuple[str, int]:
    return {"int8": ("Byte", 1), "uint8": ("Byte", 1), "float32": ("Float", 4), "int32": ("Int", 4),
            "int64": ("Long", 8)}.get(dtype, ("Float", 4))


def _ids(tensor: dict[str, Any]) -> bool:
    """Whether the input takes integers as they are (token ids, indices): integer and not quantized."""
    return tensor["dtype"].startswith(("int", "uint")) and not tensor["scale"]


def preprocessing_text(normalization: dict[str, float], tensor: dict[str, Any]) -> str:
    """One paragraph: raw input → what the tensor expects, with the numbers.

    Args:
        normalization: ``{"scale": s, "offset": o}`` (x = raw * s + o).
        tensor: the input tensor from ``inspect_artifact`` (dtype, scale, zero_point).

    >>> preprocessing_text({"scale": 1 / 255, "offset": 0.0},
    ...     {"dtype": "int8", "scale": [1 / 255], "zero_point": [-128]}).splitlines()[-1]
    '   Here the two scales match, so this is simply `q = raw + (-128)` (raw 0 → -128, raw 255 → 127).'
    """
    if _ids(tensor):
        return (f"1. Feed the token ids (indices) as {tensor['dtype']}, exactly as in training: no normalization, "
                "no quantization (the ids are never quantized; the embedding lookup reads them as they are).")
    s, o = float(normalization.get("scale", 1.0)), float(normalization.get("offset", 0.0))
    lines = [f"1. Normalize as in training: `x = raw * {_fmt(s)} + {_fmt(o)}`"
             + (" (raw pixels 0..255 → 0..1)." if abs(s - 1 / 255) < 1e-9 and o == 0 else ".")]
    if tensor["scale"]:
        scale, zero = tensor["scale"][0], tensor["zero_point"][0]
        lines.append(f"2. Quantize to {tensor['dtype']}: `q = clamp(round(x / {_fmt(scale)}) + ({zero}), -128, 127)`.")
        if abs(scale - s) <= 1e-6 * s and o == 0:
            lines.append(f"   Here the two scales match, so this is simply `q = raw + ({zero})` "
                         f"(raw 0 → {zero}, raw 255 → {255 + zero}).")
    else:
        lines.append(f"2. Feed `x` as {tensor['dtype']}.")
    return "\n".join(lines)


def postprocessing_text(tensor: dict[str, Any], labels: list[str], output_kind: str) -> str:
    """One paragraph: output tensor → class and probability (or regression values), with the numbers.

    Args:
        tensor: the output tensor from ``inspect_artifact``.
        labels: class names in output order (output names for regression).
        output_kind: "logits", "probabilities" or "regression".

    >>> "argmax" in postprocessing_text({"dtype": "float32", "scale": [], "zero_point": []}, ["a"], "logits")
    True
    """
    lines = []
    if tensor["scale"]:
        scale, zero = tensor["scale"][0], tensor["zero_point"][0]
        lines.append(f"1. Dequantize: `y = (q - ({zero})) * {_fmt(scale)}`." + (
            "" if output_kind == "regression" else " The scale is positive, so the argmax of `q` is already the "
            "predicted class."))
    else:
        lines.append("1. The output is float already.")
    if output_kind == "regression":
        lines.append(f"2. `y` holds the predicted values (regression), {len(labels)} per sample, in the units of the "
                     "training targets; `labels.txt` names them. No argmax, no softmax.")
        return "\n".join(lines)
    lines.append(f"2. The class is `argmax(y)`; its name is line `argmax + 1` of `labels.txt` ({len(labels)} lines"
                 + (f": {', '.join(labels[:4])}{', …' if len(labels) > 4 else ''}" if labels else "") + ").")
    if output_kind == "logits":
        lines.append("3. `y` holds logits: `softmax(y)` gives probabilities (subtract `max(y)` before `exp`).")
    else:
        lines.append("3. `y` holds probabilities already (the model ends in its activation): do not apply a "
                     "softmax again.")
    return "\n".join(lines)


def _kotlin_result(output_kind: str) -> tuple[str, str]:
    """The Kotlin function's return type and its last lines for each kind of output."""
    if output_kind == "regression":
        return "FloatArray", "        return y  // the predicted values, named by labels.txt"
    best = "        val best = y.indices.maxBy { y[it] }\n"
    if output_kind == "probabilities":
        return "Pair<String, Float>", best + "        return labels[best] to y[best]  // probabilities already"
    return "Pair<String, Float>", best + ("        val max = y[best]\n"
                                          "        val sum = y.sumOf { exp((it - max).toDouble()) }  // softmax of logits\n"
                                          "        return labels[best] to (1.0 / sum).toFloat()")


def _kotlin(file: str, inp: dict, out: dict, normalization: dict, classes: int, output_kind: str = "logits") -> str:
    in_type, in_bytes = _kotlin_type(inp["dtype"])
    out_type, _ = _kotlin_type(out["dtype"])
    n_in = _elements(inp["shape"])
    s, o = _fmt(float(normalization.get("scale", 1.0))), _fmt(float(normalization.get("offset", 0.0)))
    if _ids(inp):  # token ids go in as they are
        put = f"            input.put{in_type}(p{'.toLong()' if in_type == 'Long' else ''})"
    elif inp["scale"]:
        put = (f"            val q = Math.round((p * {s}f + {o}f) / {_fmt(inp['scale'][0])}f) + ({inp['zero_point'][0]})\n"
               "            input.put(q.coerceIn(-128, 127).toByte())")
    else:
        put = f"            input.putFloat(p * {s}f + {o}f)"
    what = "token ids" if _ids(inp) else "raw values (0..255)" if len(inp["shape"]) == 4 else "raw values"
    returns, result = _kotlin_result(output_kind)
    if out["scale"]:
        output_decl = f"        val output = Array(1) {{ ByteArray({classes}) }}"
        dequant = (f"        val y = FloatArray({classes}) {{ (output[0][it] - ({out['zero_point'][0]})) * "
                   f"{_fmt(out['scale'][0])}f }}")
    else:
        output_decl = f"        val output = Array(1) {{ FloatArray({classes}) }}"
        dequant = "        val y = output[0]"
    return f"""```kotlin
// app/build.gradle.kts
dependencies {{ implementation("{LITERT_ANDROID}") }}
android {{ androidResources {{ noCompress += "tflite" }} }}  // memory-map the model from assets
```

Copy `{file}` and `labels.txt` into `app/src/main/assets/`.

```kotlin
import android.content.Context
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel
import kotlin.math.exp
import org.tensorflow.lite.Interpreter

class Classifier(context: Context) {{
    private val labels = context.assets.open("labels.txt").bufferedReader().readLines()
    private val interpreter: Interpreter

    init {{
        val fd = context.assets.openFd("{file}")
        val model = FileInputStream(fd.fileDescriptor).channel
            .map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
        interpreter = Interpreter(model, Interpreter.Options().setNumThreads(2))
    }}

    /** [pixels]: {n_in} {what} in {_shape(inp['shape'][1:])} row-major order. */
    fun classify(pixels: IntArray): {returns} {{
        require(pixels.size == {n_in}) {{ "expected {n_in} values, got ${{pixels.size}}" }}
        // input "{inp['name']}": {inp['dtype']} {_shape(inp['shape'])}
        val input = ByteBuffer.allocateDirect({n_in * in_bytes}).order(ByteOrder.nativeOrder())
        for (p in pixels) {{
{put}
        }}
        input.rewind()
        // output "{out['name']}": {out['dtype']} {_shape(out['shape'])}
{output_decl}
        interpreter.run(input, output)
{dequant}
{result}
    }}

    fun close() = interpreter.close()
}}
```"""


def _cpp(file: str, inp: dict, out: dict, normalization: dict, classes: int, output_kind: str = "logits") -> str:
    n_in = _elements(inp["shape"])
    s, o = _fmt(float(normalization.get("scale", 1.0))), _fmt(float(normalization.get("offset", 0.0)))
    raw = "std::vector<uint8_t> raw({n}, 0);  // your image: {shape}, values 0..255" if len(inp["shape"]) == 4 \
        else "std::vector<float> raw({n}, 0);  // your raw features: {shape}"
    if _ids(inp):  # token ids go in as they are
        ctype = {"int64": "int64_t"}.get(inp["dtype"], "int32_t")
        fill, raw = "    input[i] = raw[i];", f"std::vector<{ctype}> raw({{n}}, 0);  // your token ids: {{shape}}"
    elif inp["scale"]:
        ctype = "int8_t"
        fill = (f"    const float x = raw[i] * {s}f + {o}f;\n"
                f"    const long q = std::lround(x / {_fmt(inp['scale'][0])}f) + ({inp['zero_point'][0]});\n"
                "    input[i] = static_cast<int8_t>(std::clamp(q, -128L, 127L));")
    else:
        ctype = "float"
        fill = f"    input[i] = raw[i] * {s}f + {o}f;"
    if out["scale"]:
        octype = "int8_t"
        deq = f"(output[c] - ({out['zero_point'][0]})) * {_fmt(out['scale'][0])}f"
    else:
        octype, deq = "float", "output[c]"
    raw = raw.format(n=n_in, shape=_shape(inp["shape"][1:]))
    if output_kind == "regression":
        result = (f"  for (int c = 0; c < {classes}; ++c) std::printf(\"%s%.6g\", c ? \" \" : \"\", {deq});\n"
                  "  std::printf(\"\\n\");  // the predicted values, named by labels.txt")
    else:
        result = (f"  int best = 0;\n  float best_value = -INFINITY;\n  for (int c = 0; c < {classes}; ++c) {{\n"
                  f"    const float y = {deq};\n    if (y > best_value) {{ best_value = y; best = c; }}\n  }}\n"
                  "  std::printf(\"class %d (%.3f)\\n\", best, best_value);  // name: line best+1 of labels.txt"
                  + ("; a probability" if output_kind == "probabilities" else "; a logit (softmax for a probability)"))
    return f"""```cpp
// classify.cc — LiteRT (TensorFlow Lite) C++ API
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>
#include "tensorflow/lite/interpreter.h"
#include "tensorflow/lite/kernels/register.h"
#include "tensorflow/lite/model.h"

int main() {{
  auto model = tflite::FlatBufferModel::BuildFromFile("{file}");
  if (!model) return 1;
  tflite::ops::builtin::BuiltinOpResolver resolver;
  std::unique_ptr<tflite::Interpreter> interpreter;
  tflite::InterpreterBuilder(*model, resolver)(&interpreter);
  interpreter->SetNumThreads(4);  // Raspberry Pi 4/5: 4 cores
  if (interpreter->AllocateTensors() != kTfLiteOk) return 1;

  {raw}
  // input "{inp['name']}": {inp['dtype']} {_shape(inp['shape'])}
  {ctype}* input = interpreter->typed_input_tensor<{ctype}>(0);
  for (int i = 0; i < {n_in}; ++i) {{
{fill}
  }}
  if (interpreter->Invoke() != kTfLiteOk) return 1;
  // output "{out['name']}": {out['dtype']} {_shape(out['shape'])}
  const {octype}* output = interpreter->typed_output_tensor<{octype}>(0);
{result}
}}
```

Build against LiteRT's C++ library (`libtensorflow-lite.a` from the `tensorflow/lite` CMake project,
built natively on the Pi or cross-compiled for aarch64/armv7):

```sh
g++ -O2 -std=c++17 classify.cc -I<tensorflow-src> -I<flatbuffers-include> \\
    -L<build> -ltensorflow-lite -lpthread -ldl -o classify
```

Without C++: `pip install ai-edge-litert` on the Pi (64-bit Raspberry Pi OS) and use
`ai_edge_litert.interpreter.Interpreter(model_path="{file}")` with the same pre/post-processing."""


def _micro_cannot(problems: list[str]) -> str:
    """The TFLM section of a model TFLM cannot run: why, instead of a snippet that fails on the board."""
    return ("**TensorFlow Lite Micro cannot run this model**, so there is no firmware snippet: it would fail in "
            "`MicroInterpreter::AllocateTensors()` on the board.\n\n" + "\n".join(f"- {p}" for p in problems)
            + "\n\nReplace the layers named above with ones TFLM has (`edgeqd inspect --target tflm` lists them "
            "per op), or run the model with LiteRT on a board with an OS.")


def _arena_text(micro: dict, arena: int) -> str:
    """The comment above the arena in the TFLM snippet: measured, or an estimate."""
    if micro.get("arena_size"):
        return (f"// kTensorArenaSize ({micro['arena_size']:,} bytes, from model_data.h): TFLM needs "
                f"{micro['arena_bytes']:,} bytes\n// for this model on the host; + {micro['arena_margin']:.0%} "
                "for CMSIS-NN scratch buffers, rounded to 16.\n")
    return (f"// Upper bound: every activation tensor of this model at once ({arena:,} bytes). Call\n"
            "// interpreter.arena_used_bytes() after AllocateTensors() and shrink to what it reports.\n"
            f"enum {{ kTensorArenaSize = {arena} }};\n")


def _micro(inp: dict, out: dict, micro: dict, arena: int, size: int, normalization: dict,
           output_kind: str = "logits") -> str:
    if not micro["runnable"]:
        return _micro_cannot(micro["problems"])
    calls = micro["resolver_calls"]
    registrations = "\n".join(f"  resolver.{c};" for c in calls)
    n_in = _elements(inp["shape"])
    s, o = float(normalization.get("scale", 1.0)), float(normalization.get("offset", 0.0))
    signature, raw = "int classify(", "const uint8_t* raw /* {n_in} values, 0..255 */"
    if _ids(inp):  # token ids go in as they are
        quantize = f"    input->data.{'i64' if inp['dtype'] == 'int64' else 'i32'}[i] = raw[i];"
        raw = f"const {'int64_t' if inp['dtype'] == 'int64' else 'int32_t'}* raw /* {{n_in}} token ids */"
    elif inp["scale"] and abs(inp["scale"][0] - s) <= 1e-6 * s and o == 0:
        quantize = ("    // the input scale equals the normalization scale: q = raw + zero point\n"
                    "    input->data.int8[i] = static_cast<int8_t>(raw[i] + EDGEQD_INPUT_ZERO_POINT);")
    else:
        quantize = (f"    const long q = lroundf((raw[i] * {_fmt(s)}f + {_fmt(o)}f) / EDGEQD_INPUT_SCALE) "
                    "+ EDGEQD_INPUT_ZERO_POINT;\n"
                    "    input->data.int8[i] = static_cast<int8_t>(q < -128 ? -128 : (q > 127 ? 127 : q));")
    result = ("  int best = 0;\n  for (int c = 1; c < EDGEQD_OUTPUT_ELEMENTS; ++c) {\n"
              "    if (output->data.int8[c] > output->data.int8[best]) best = c;\n  }\n"
              "  return best;  // line best+1 of labels.txt")
    if output_kind == "regression":
        signature, raw = "int predict(", raw + ", float* values /* EDGEQD_OUTPUT_ELEMENTS */"
        result = ("  for (int c = 0; c < EDGEQD_OUTPUT_ELEMENTS; ++c) {\n    values[c] = (output->data.int8[c] - "
                  "EDGEQD_OUTPUT_ZERO_POINT) * EDGEQD_OUTPUT_SCALE;  // regression values\n  }\n  return 0;")
    raw = raw.format(n_in=n_in)
    return f"""`model_data.h` / `model_data.cc` hold the int8 model ({size:,} bytes) as a 16-byte aligned
array `g_model_data` (length `g_model_data_len`) plus its I/O numbers as macros
(`EDGEQD_INPUT_SCALE`, `EDGEQD_INPUT_ZERO_POINT`, `EDGEQD_OUTPUT_SCALE`, …). Add both files to your
firmware next to TensorFlow Lite Micro:

```cpp
#include "model_data.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

{_arena_text(micro, arena)}alignas(16) static uint8_t tensor_arena[kTensorArenaSize];

{signature}{raw}) {{
  const tflite::Model* model = tflite::GetModel(g_model_data);
  static tflite::MicroMutableOpResolver<{max(len(calls), 1)}> resolver;  // the ops this model uses
{registrations}
  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, kTensorArenaSize);
  if (interpreter.AllocateTensors() != kTfLiteOk) return -1;
  TfLiteTensor* input = interpreter.input(0);
  for (int i = 0; i < EDGEQD_INPUT_ELEMENTS; ++i) {{
{quantize}
  }}
  if (interpreter.Invoke() != kTfLiteOk) return -1;
  TfLiteTensor* output = interpreter.output(0);
{result}
}}
```"""


def _onnx(file: str, inp: dict, out: dict, normalization: dict, output_kind: str = "logits") -> str:
    s, o = _fmt(float(normalization.get("scale", 1.0))), _fmt(float(normalization.get("offset", 0.0)))
    shape = [1 if d < 0 else d for d in inp["shape"]]
    ctype = {"int32": "int32_t", "int64": "int64_t"}.get(inp["dtype"], "float") if _ids(inp) else "float"
    if _ids(inp):
        feed = (f"x = np.zeros({tuple(shape)}, np.{inp['dtype']})".ljust(50) + "# your token ids, as they are")
        cfill = "// your token ids"
    else:
        feed = (f"raw = np.zeros({tuple(shape)}, np.float32)".ljust(50)
                + ("# your batch, values 0..255\n" if len(shape) == 4 else "# your batch of raw features\n")
                + f"x = raw * {s} + {o}".ljust(50) + f"# input \"{inp['name']}\": {inp['dtype']} {_shape(inp['shape'])}")
        cfill = f"// raw * {s} + {o}"
    show = "y[0]" if output_kind == "regression" else "labels[int(y[0].argmax())]"
    return f"""Python (`pip install onnxruntime`):

```python
import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("{file}", providers=["CPUExecutionProvider"])
labels = open("labels.txt").read().splitlines()
{feed}
(y,) = session.run(["{out['name']}"], {{"{inp['name']}": x.astype(np.{inp['dtype']})}})
print({show})  # output "{out['name']}": {out['dtype']} {_shape(out['shape'])}, {output_kind}
```

C++ (`onnxruntime_cxx_api.h`):

```cpp
Ort::Env env;
Ort::Session session(env, "{file}", Ort::SessionOptions{{}});
std::vector<int64_t> shape = {{{', '.join(str(d) for d in shape)}}};
std::vector<{ctype}> x({_elements(shape)});  {cfill}
auto memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
auto tensor = Ort::Value::CreateTensor<{ctype}>(memory, x.data(), x.size(), shape.data(), shape.size());
const char* in_names[] = {{"{inp['name']}"}};
const char* out_names[] = {{"{out['name']}"}};
auto outputs = session.Run(Ort::RunOptions{{nullptr}}, in_names, &tensor, 1, out_names, 1);
const float* y = outputs[0].GetTensorData<float>();
```

Android: `implementation("{ORT_ANDROID}:<version>")` and `OrtEnvironment.getEnvironment().createSession(bytes)`
with the same input name, shape and normalization."""


def integration_markdown(manifest: dict[str, Any], described: dict[str, dict], bundle_files: list[str]) -> str:
    """The text of ``INTEGRATION.md`` for one ``edgeqd convert`` output folder.

    Args:
        manifest: the run's manifest.
        described: ``inspect_artifact`` answers keyed by format name ("tflite-int8", …).
        bundle_files: the files written beside the artifacts so far (labels, C array).

    >>> integration_markdown(manifest, described, ["labels.txt"]).startswith("# Integration")  # doctest: +SKIP
    True
    """
    data = manifest.get("data", {})
    labels = list(data.get("class_names") or [])
    normalization = data.get("normalization") or {"scale": 1.0, "offset": 0.0}
    model_name = manifest.get("input_model", {}).get("name", "model")
    artifacts = {a["format"]: a for a in manifest.get("artifacts", []) if a.get("status") == "ok"}
    regression = data.get("task") == "regression"
    lines = [f"# Integration: {model_name}", "",
             f"Generated by edgeqd {__version__} from the artifacts in this folder "
             f"(data: {data.get('name', '?')}, {len(labels)} "
             f"{'outputs, regression' if regression else 'classes'}). Every number below is read from the files.",
             "", f"| file | format | size | input → output | {'MAE' if regression else 'top-1'} | sha256 |",
             "|---|---|---|---|---|---|"]
    for name, artifact in artifacts.items():
        info = described.get(name, {})
        io = " → ".join(", ".join(f"{t['dtype']} {_shape(t['shape'])}" for t in info.get(k, [])) for k in ("inputs", "outputs"))
        figure = (artifact.get("evaluation") or {}).get("mae" if regression else "accuracy")
        shown = "" if figure is None else f"{figure:.4g}" if regression else f"{figure:.2%}"
        lines.append(f"| `{artifact['file']}` | {info.get('quantization', artifact.get('dtype', ''))} | "
                     f"{artifact['bytes']:,} B | {io} | {shown} | "
                     f"`{artifact['sha256'][:12]}…` |")
    for extra in bundle_files:
        lines.append(f"| `{extra}` | bundle | | | | |")
    lines.append("")

    main = next((n for n in ("tflite-int8", "tflite-fp32") if n in described), None)
    if main is None:
        main = next((n for n, info in described.items() if info.get("format") == "tflite"), None)
    onnx_name = next((n for n in ("onnx-int8", "onnx-fp32") if n in described), None)
    if main is None and onnx_name is None:
        lines.append("No artifact converted successfully: nothing to integrate (see manifest.json `problems`).")
        return "\n".join(lines) + "\n"

    reference = described[main or onnx_name]
    inp, out = reference["inputs"][0], reference["outputs"][0]
    classes = _elements(out["shape"][1:]) if len(out["shape"]) > 1 else _elements(out["shape"])
    output = manifest.get("output") or {}
    output_kind = output.get("kind", "logits")
    task = "regression" if output_kind == "regression" else \
        "image classification" if len(data.get("input_shape", [])) == 3 else "classification"
    activation = f", {output['activation']}" if output.get("activation") else ""
    lines += ["## The model's contract", "",
              f"Task: {task}. "
              f"Numbers below are for `{artifacts[main or onnx_name]['file']}`.", "",
              f"- input `{inp['name']}`: {inp['dtype']} {_shape(inp['shape'])}"
              + (f", scale {_fmt(inp['scale'][0])}, zero point {inp['zero_point'][0]}" if inp["scale"] else ""),
              f"- output `{out['name']}`: {out['dtype']} {_shape(out['shape'])}"
              + (f", scale {_fmt(out['scale'][0])}, zero point {out['zero_point'][0]}" if out["scale"] else "")
              + f" ({output_kind}{activation})", "",
              "Pre-processing:", "", preprocessing_text(normalization, inp), "",
              "Post-processing:", "", postprocessing_text(out, labels, output_kind), "",
              "The `.tflite` files carry the same facts as TFLite Metadata (`TFLITE_METADATA`: normalization "
              "mean/std, image properties, labels.txt packed inside as the output's associated file) and as JSON "
              "(metadata entry `edgeqd`); the `.onnx` files carry them in `metadata_props`. "
              "Run `edgeqd inspect <file>` to see them.", ""]
    stateful = sorted({row["type"] for info in described.values() for row in info.get("operators", [])}
                      & STATEFUL_OPS)
    if stateful:
        lines += [f"**State between calls.** The `.tflite` runs {', '.join(stateful)}, whose state lives in "
                  "variable tensors that persist across invocations. Each input here is an independent "
                  "sequence (the Keras layer is stateless), so reset them before every inference: "
                  "`interpreter.resetVariableTensors()` (Kotlin/Java), `interpreter->ResetVariableTensors()` "
                  "(C++), `interpreter.reset_all_variables()` (Python), `interpreter.Reset()` (TFLite Micro). "
                  "edgeqd's evaluation and `edgeqd bench` do the same.", ""]

    if main is not None:
        file = artifacts[main]["file"]
        lines += ["## Android (Kotlin, LiteRT)", "", _kotlin(file, inp, out, normalization, classes, output_kind), "",
                  "## Linux / Raspberry Pi (C++, LiteRT)", "", _cpp(file, inp, out, normalization, classes, output_kind), ""]
    micro = described.get("tflite-int8")
    if micro is not None and C_HEADER in bundle_files:
        ops = [row["type"] for row in micro["operators"]]
        arena = micro.get("activations", {}).get("bytes", 0)
        arena = int(math.ceil(max(arena, 1024) / 1024.0) * 1024)
        facts = micro.get("tflm") or {"runnable": True, "problems": [], "resolver_calls": micro_op_resolver_calls(ops)}
        lines += ["## Microcontrollers (TensorFlow Lite Micro)", "",
                  _micro(micro["inputs"][0], micro["outputs"][0], facts, arena, artifacts["tflite-int8"]["bytes"],
                         normalization, output_kind), ""]
    if onnx_name is not None:
        info = described[onnx_name]
        lines += ["## ONNX Runtime", "", f"`{artifacts[onnx_name]['file']}` ({info['quantization']}) takes "
                  f"{info['inputs'][0]['dtype']} input: " + ("the token ids as they are." if _ids(info["inputs"][0]) else
                                                           "normalize, do not quantize (the graph does it)."), "",
                  _onnx(artifacts[onnx_name]["file"], info["inputs"][0], info["outputs"][0], normalization, output_kind), ""]
    return "\n".join(lines)
