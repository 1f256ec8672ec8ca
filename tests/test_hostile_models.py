"""Hostile model files: a model must never run code without --unsafe-deserialization.

Every hostile file here is a real tf_keras model whose Lambda layer creates a marker file when its
code runs; its stored configuration is then re-encoded or re-nested the way an attacker would
(spaces around the colon, ``\\u004cambda`` escapes, nested models, wrappers, module-qualified
class names, metadata moved into ``saved_model.pb``). For each: the CLI exits 3 with one
``error:`` line and no traceback, the marker does not exist, and the input is byte-identical.
``--unsafe-deserialization`` on the same files does create the marker, which shows each
rewritten file is a working exploit and not merely a broken file.
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner

from edgeqd.cli import cli
from edgeqd.errors import ModelError
from edgeqd.models.safety import find_code_layers, is_pure_tf_function
from edgeqd.models import file_sha256, load_model, model_signature

FORMATS = ("h5", "keras", "savedmodel")


# --- building real models and rewriting what they store -------------------------------------------

def _pwn_function(marker: Path):
    """A Lambda body that leaves ``marker`` behind when it runs (the path travels as a default argument)."""
    return lambda x, marker=str(marker): (open(marker, "w").close(), x)[1]


def _build(kind: str, marker: Path):
    """A tiny real tf_keras model whose Lambda layer ``pwn`` creates ``marker`` when called."""
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(0)
    pwn = layers.Lambda(_pwn_function(marker), name="pwn")
    if kind == "nested":  # a Lambda inside a Sequential inside a Functional
        inner = keras.Sequential([keras.Input((4,)), pwn], name="inner")
        inputs = keras.Input((4,))
        return keras.Model(inputs, layers.Dense(3, name="logits")(inner(inputs)))
    if kind == "time_distributed":
        inputs = keras.Input((2, 4))
        x = layers.Flatten()(layers.TimeDistributed(pwn, name="td")(inputs))
        return keras.Model(inputs, layers.Dense(3, name="logits")(x))
    if kind == "bidirectional":  # a clean RNN; the Lambda is planted into backward_layer afterwards
        inputs = keras.Input((2, 4))
        x = layers.Bidirectional(layers.SimpleRNN(2), name="bi")(inputs)
        return keras.Model(inputs, layers.Dense(3, name="logits")(x))
    inputs = keras.Input((4,))
    return keras.Model(inputs, layers.Dense(3, name="logits")(pwn(inputs)))


def _save(model, folder: Path, fmt: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / {"h5": "m.h5", "keras": "m.keras", "savedmodel": "saved_model"}[fmt]
    model.save(path)
    return path


def _rewrite_h5(path: Path, change: Callable[[str], str]) -> None:
    import h5py

    with h5py.File(path, "r+") as handle:
        text = handle.attrs["model_config"]
        handle.attrs["model_config"] = change(text.decode() if isinstance(text, bytes) else text)


def _rewrite_keras(path: Path, change: Callable[[str], str]) -> None:
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    entries["config.json"] = change(entries["config.json"].decode()).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def _metadata(path: Path):
    from tf_keras.protobuf import saved_metadata_pb2

    metadata = saved_metadata_pb2.SavedMetadata()
    metadata.ParseFromString((path / "keras_metadata.pb").read_bytes())
    return metadata


def _rewrite_savedmodel(path: Path, change: Callable[[str], str]) -> None:
    metadata = _metadata(path)
    for node in metadata.nodes:
        node.metadata = change(node.metadata)
    (path / "keras_metadata.pb").write_bytes(metadata.SerializeToString())


REWRITERS = {"h5": _rewrite_h5, "keras": _rewrite_keras, "savedmodel": _rewrite_savedmodel}


def _move_metadata_into_saved_model_pb(path: Path) -> None:
    """Store the Keras metadata the pre-TF-2.5 way (inside saved_model.pb) and delete keras_metadata.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    nodes = saved_model.meta_graphs[0].object_graph_def.nodes
    for node in _metadata(path).nodes:
        nodes[node.node_id].user_object.metadata = node.metadata
    (path / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    (path / "keras_metadata.pb").unlink()


def _map_dicts(value: Any, change: Callable[[dict], dict]) -> Any:
    """``value`` with ``change`` applied to every dict, innermost first."""
    if isinstance(value, dict):
        return change({key: _map_dicts(item, change) for key, item in value.items()})
    if isinstance(value, list):
        return [_map_dicts(item, change) for item in value]
    return value


def _spaces(text: str) -> str:
    """Re-serialize with ``"key" : value``: the separator the old regex did not expect."""
    return json.dumps(json.loads(text), separators=(", ", " : "))


def _unicode(text: str) -> str:
    """Spell every ``Lambda`` string as ``\\u004cambda``: the same JSON, other bytes."""
    return text.replace('"Lambda"', '"\\u004cambda"')


def _qualified(text: str) -> str:
    return _spaces(text).replace('"Lambda"', '"keras.layers.Lambda"')


def _plant_in_backward_layer(lambda_layer: dict) -> Callable[[str], str]:
    """Replace the Bidirectional layer's backward_layer with the Lambda layer's config."""
    def plant(node: dict) -> dict:
        if node.get("class_name") == "Bidirectional":
            node["config"]["backward_layer"] = lambda_layer
        return node

    return lambda text: json.dumps(_map_dicts(json.loads(text), plant))


# name: (model kind, config rewrite, whether Keras can still load the result and run the Lambda)
VARIANTS = {
    "spaces": ("plain", lambda _: _spaces, True),
    "unicode-escape": ("plain", lambda _: _unicode, True),
    "nested-sequential": ("nested", lambda _: lambda text: _unicode(_spaces(text)), True),
    "time-distributed": ("time_distributed", lambda _: _unicode, True),
    "bidirectional-backward-layer": ("bidirectional", _plant_in_backward_layer, False),
    "module-qualified": ("plain", lambda _: _qualified, False),
    # a layer name that would forge a second line in the error message
    "newline-in-name": ("plain", lambda _: lambda text: text.replace('"pwn"', '"pwn\\nerror: all fine"'), False),
}


@pytest.fixture(scope="module")
def marker(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("marker") / "lambda-ran"


@pytest.fixture(autouse=True)
def _no_marker_before(marker):
    marker.unlink(missing_ok=True)  # building and saving a Lambda model runs it once; tests start clean
    yield


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, marker) -> dict[tuple[str, str], Path]:
    """Every (format, variant) hostile file, plus the genuine Lambda models as (format, "genuine")."""
    root = tmp_path_factory.mktemp("hostile")
    files: dict[tuple[str, str], Path] = {}
    models = {kind: _build(kind, marker) for kind in ("plain", "nested", "time_distributed", "bidirectional")}
    lambda_layer = json.loads(models["plain"].to_json())["config"]["layers"][1]
    for fmt in FORMATS:
        files[(fmt, "genuine")] = _save(models["plain"], root / f"{fmt}-genuine", fmt)
        for variant, (kind, rewrite, _) in VARIANTS.items():
            path = _save(models[kind], root / f"{fmt}-{variant}", fmt)
            REWRITERS[fmt](path, rewrite(lambda_layer))
            files[(fmt, variant)] = path
    legacy = _save(models["plain"], root / "legacy-savedmodel", "savedmodel")
    _rewrite_savedmodel(legacy, _unicode)
    _move_metadata_into_saved_model_pb(legacy)
    files[("savedmodel", "legacy-metadata-in-saved_model.pb")] = legacy
    marker.unlink(missing_ok=True)
    return files


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """64 four-feature samples in three classes: enough for every command to get past its data checks."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "d.npz"
    np.savez(path, x=rng.normal(size=(64, 4)).astype(np.float32), y=rng.integers(0, 3, 64),
             x_val=rng.normal(size=(32, 4)).astype(np.float32), y_val=rng.integers(0, 3, 32))
    return path


@pytest.fixture(scope="module")
def benign(tmp_path_factory) -> Path:
    """A clean tiny classifier on the same four features (a teacher or student beside a hostile file)."""
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, name="logits")])
    path = tmp_path_factory.mktemp("benign") / "benign.keras"
    model.save(path)
    return path


def _refused(args: list, inputs: list[Path], marker: Path, names: str = "pwn") -> str:
    """Run the CLI; assert exit 3, one ``error:`` line naming ``names``, no traceback, marker absent, inputs intact."""
    digests = {path: file_sha256(path) for path in inputs}
    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    assert re.search(rf"{names}.*--unsafe-deserialization", errors[0]), errors[0]
    assert not marker.exists(), "the Lambda's code ran"
    assert {path: file_sha256(path) for path in inputs} == digests
    return errors[0]


# --- the CLI refuses every hostile file, in every command ----------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", ["genuine", *VARIANTS])
def test_convert_refuses_every_encoding(fmt, variant, hostile, data, marker, tmp_path):
    path = hostile[(fmt, variant)]
    error = _refused(["convert", path, "--data", data, "--out", tmp_path / "out"], [path, data], marker)
    assert "(Lambda)" in error
    assert not (tmp_path / "out").exists()


def test_convert_refuses_metadata_hidden_in_saved_model_pb(hostile, data, marker, tmp_path):
    # Without keras_metadata.pb, tf_keras reads the pre-TF-2.5 metadata inside saved_model.pb.
    path = hostile[("savedmodel", "legacy-metadata-in-saved_model.pb")]
    assert not (path / "keras_metadata.pb").exists()
    _refused(["convert", path, "--data", data, "--out", tmp_path / "out"], [path, data], marker)
    load_model(path, unsafe_deserialization=True)  # tf_keras does read it from there: the Lambda runs
    assert marker.exists()


def test_distill_refuses_a_hostile_teacher_and_student(hostile, benign, data, marker, tmp_path):
    teacher = hostile[("h5", "spaces")]
    _refused(["distill", "--teacher", teacher, "--data", data, "--out", tmp_path / "s.keras"],
             [teacher, data], marker)
    student = hostile[("keras", "nested-sequential")]
    _refused(["distill", "--teacher", benign, "--student", student, "--data", data, "--out", tmp_path / "s.keras",
              "--epochs", 1], [student, benign, data], marker)
    _refused(["convert", "--distill-from", hostile[("savedmodel", "unicode-escape")], "--data", data,
              "--out", tmp_path / "out"], [hostile[("savedmodel", "unicode-escape")], data], marker)
    assert not (tmp_path / "s.keras").exists() and not (tmp_path / "out").exists()


def test_quantize_refuses_a_hostile_model_and_teacher(hostile, benign, data, marker, tmp_path):
    model = hostile[("savedmodel", "time-distributed")]
    _refused(["quantize", model, "--data", data, "--out", tmp_path / "q"], [model, data], marker)
    teacher = hostile[("h5", "unicode-escape")]
    _refused(["quantize", benign, "--teacher", teacher, "--data", data, "--out", tmp_path / "q", "--epochs", 1],
             [benign, teacher, data], marker)
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", ["genuine", *[name for name, (_, _, loads) in VARIANTS.items() if loads]])
def test_the_hostile_files_are_real_exploits(fmt, variant, hostile, marker):
    """--unsafe-deserialization loads them and the Lambda runs: the files above are not merely broken."""
    model = load_model(hostile[(fmt, variant)], unsafe_deserialization=True)
    assert marker.exists()
    assert model_signature(model)[1] == 3


def test_convert_with_unsafe_deserialization_runs_a_trusted_lambda_model(hostile, data, marker, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [str(arg) for arg in (
        "convert", hostile[("h5", "genuine")], "--data", data, "--out", out, "--formats", "tflite-fp32",
        "--calibration-samples", 32, "--unsafe-deserialization", "--json")])
    assert result.exit_code == 0, result.output
    assert marker.exists() and (out / "manifest.json").exists()


# --- TF op layers: pure math loads, anything else is refused --------------------------------------

def _op_model():
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = tf.nn.relu(inputs + 1.0)
    x = tf.reshape(tf.compat.v1.transpose(x[:, :, None], [0, 2, 1]), (-1, 4))
    return keras.Model(inputs, keras.layers.Dense(3)(tf.math.multiply(x, 2.0)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_models_with_tf_math_ops_still_load(fmt, tmp_path):
    model = _op_model()
    functions = {layer.get_config().get("function") for layer in model.layers} - {None}
    assert {"__operators__.add", "nn.relu", "__operators__.getitem", "reshape", "math.multiply"} <= functions
    path = _save(model, tmp_path, fmt)
    loaded = load_model(path)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))  # same graph: exact


def _swap_function(new_function: str, **call_kwargs):
    """Make the model's tf.nn.relu layer call ``new_function`` (with extra call arguments)."""
    def swap(node: dict) -> dict:
        if node.get("function") == "nn.relu":
            node["function"] = new_function
        inner = node.get("config")
        if isinstance(inner, dict) and inner.get("function") == new_function and "inbound_nodes" in node:
            for call in node["inbound_nodes"]:
                call[-1].update(call_kwargs)
        return node

    return lambda text: json.dumps(_map_dicts(json.loads(text), swap))


@pytest.mark.parametrize("function", ["io.write_file", "compat.v1.Print", "raw_ops.WriteFile", "py_function",
                                      "load_op_library", "print", "io.gfile.remove", "debugging.Assert"])
def test_tf_op_layers_calling_anything_but_math_are_refused(function, tmp_path):
    path = _save(_op_model(), tmp_path, "h5")
    _rewrite_h5(path, _swap_function(function))
    # (tf_keras numbers op layers per process: tf.nn.relu, tf.nn.relu_1, ...)
    with pytest.raises(ModelError, match=rf"tf\.nn\.relu(_\d+)? \(TFOpLambda calling tf\.{re.escape(function)}, "):
        load_model(path)


def test_a_swapped_tf_op_really_runs_when_allowed(tmp_path, capfd):
    """compat.v1.Print in place of relu prints when the model runs: the rule blocks a live op."""
    path = _save(_op_model(), tmp_path, "keras")
    _rewrite_keras(path, _swap_function("compat.v1.Print", data=["EDGEQD-OP-RAN"]))
    with pytest.raises(ModelError, match="compat.v1.Print"):
        load_model(path)
    load_model(path, unsafe_deserialization=True).predict(np.zeros((1, 4), np.float32), verbose=0)
    assert "EDGEQD-OP-RAN" in capfd.readouterr().err


@pytest.mark.parametrize("symbol,pure", [
    ("__operators__.add", True), ("nn.relu", True), ("compat.v1.transpose", True), ("reshape", True),
    ("math.special.bessel_i0", True), ("image.resize", True),
    ("io.write_file", False), ("compat.v1.py_func", False), ("numpy_function", False), ("raw_ops.Add", False),
    ("nn.RNNCellResidualWrapper", False), ("summary.scalar", False), ("data.Dataset", False),
    ("saved_model.save", False), ("tf.nn.relu", False), ("math.__dict__", False), (None, False), (["nn.relu"], False),
])
def test_tf_function_allowlist(symbol, pure):
    assert is_pure_tf_function(symbol) is pure


# --- configs that cannot be decoded or hold no model ----------------------------------------------

def _undecodable(kind: str, tmp_path: Path) -> Path:
    import tf_keras as keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    if kind == "h5-not-json":
        path = _save(model, tmp_path, "h5")
        _rewrite_h5(path, lambda text: text[: len(text) // 2])
    elif kind == "h5-duplicate-class-name":  # json keeps the last key; a different reader might keep the first
        path = _save(model, tmp_path, "h5")
        _rewrite_h5(path, lambda text: text.replace('"class_name": "Dense"',
                                                    '"class_name": "Dense", "class_name": "Dense"'))
    elif kind == "h5-weights-only":
        path = tmp_path / "w.h5"
        model.save_weights(path)
    elif kind == "keras-not-json":
        path = _save(model, tmp_path, "keras")
        _rewrite_keras(path, lambda text: "\xff" + text)
    elif kind == "keras-two-configs":
        path = _save(model, tmp_path, "keras")
        with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("config.json", "{}")
    elif kind == "keras-not-a-zip":
        path = tmp_path / "m.keras"
        path.write_bytes(b"PK\x03\x04 not really")
    else:  # savedmodel-garbage-metadata
        path = _save(model, tmp_path, "savedmodel")
        _rewrite_savedmodel(path, lambda text: text + "}}")
    return path


@pytest.mark.parametrize("kind,message", [
    ("h5-not-json", "cannot be decoded"), ("h5-duplicate-class-name", "duplicate key.*class_name"),
    ("h5-weights-only", "holds no model configuration"), ("keras-not-json", "cannot be decoded"),
    ("keras-two-configs", "2 config.json entries"), ("keras-not-a-zip", "not a .keras zip archive"),
    ("savedmodel-garbage-metadata", "cannot be decoded"),
])
def test_undecodable_configs_are_refused(kind, message, tmp_path, data):
    path = _undecodable(kind, tmp_path)
    digest = file_sha256(path)
    with pytest.raises(ModelError, match=message):
        load_model(path)
    if kind == "h5-not-json":  # and once through the CLI: exit 3, one line
        result = CliRunner().invoke(cli, ["convert", str(path), "--data", str(data), "--out", str(tmp_path / "o")])
        assert result.exit_code == 3 and "Traceback" not in result.output, result.output
        assert [line for line in result.output.splitlines() if line.startswith("error: ")] == [
            line for line in result.output.splitlines() if "cannot be decoded" in line]
    assert file_sha256(path) == digest


# --- other ways a config runs code ----------------------------------------------------------------

def test_a_module_named_in_the_config_is_not_imported(tmp_path, monkeypatch, marker):
    """tf_keras' .keras loader imports the ``module`` of a class it cannot find: refuse modules outside Keras."""
    import tf_keras as keras

    module_name = f"edgeqd_hostile_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module_name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _save(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="victim"), tmp_path, "keras")
    _rewrite_keras(path, lambda text: json.dumps({**json.loads(text), "module": module_name, "class_name": "Evil"}))
    with pytest.raises(ModelError, match=rf"victim \(Evil from module '{module_name}', which would be imported\)"):
        load_model(path)
    assert not marker.exists() and module_name not in sys.modules
    with pytest.raises(ModelError, match="Could not locate class 'Evil'"):  # but the import already ran
        load_model(path, unsafe_deserialization=True)
    assert marker.exists()
    monkeypatch.delitem(sys.modules, module_name)


def test_walker_on_hand_written_configs():
    def layer(class_name, name, **config):
        return {"class_name": class_name, "config": {"name": name, **config}}

    # an unknown container two levels deep cannot hide a Lambda
    assert find_code_layers(layer("FancyWrapper", "w", parts=[{"deep": layer("Lambda", "hidden")}])) == [
        "hidden (Lambda)"]
    assert find_code_layers(layer("Lambda", "a\nb\x1b[2J")) == ["a?b?[2J (Lambda)"]
    assert find_code_layers(layer("lambda", "lower")) == []  # another class: Keras would not find it
    assert find_code_layers({"class_name": "Dense", "registered_name": "my_pkg>Lambda", "config": {"name": "d"}}) == [
        "d (Lambda)"]
    assert find_code_layers(layer("Dense", "d", activation={"class_name": "__lambda__", "config": {}})) == [
        "d (Python bytecode)"]
    assert find_code_layers(layer("Dense", "d", activation={"module": "builtins", "class_name": "function",
                                                            "config": "exec"})) == ["d (Python builtin 'exec')"]
    assert find_code_layers(layer("Dense", "d", activation={"module": "builtins", "class_name": "function",
                                                            "config": "my_act"})) == []  # Keras fails on it, no code
    assert find_code_layers(layer("RNN", "r", cell=layer("ResidualWrapper", "c", residual_fn_type="lambda"))) == [
        "c (Python bytecode in 'residual_fn')"]
    assert find_code_layers(layer("ClassMethod", "ok", cls_symbol="RaggedTensor", method_name="from_row_splits")) == []
    assert find_code_layers(layer("ClassMethod", "bad", cls_symbol="io.gfile.GFile", method_name="write")) != []
    assert find_code_layers(layer("InstanceMethod", "ok", attr_name="with_values")) == []
    assert find_code_layers(layer("InstanceProperty", "bad", attr_name="__class__")) != []
    # compile-only keys are skipped at the top (edgeqd loads with compile=False), not deeper down
    loss = {"module": "my_losses", "class_name": "function", "config": "focal"}
    assert find_code_layers({**layer("Functional", "m"), "compile_config": {"loss": loss}}) == []
    assert find_code_layers(layer("Functional", "m", inner={"compile_config": {"loss": loss}})) != []
    # deep nesting is walked without recursion
    deep: Any = layer("Lambda", "bottom")
    for _ in range(5000):
        deep = [deep]
    assert find_code_layers(deep) == ["bottom (Lambda)"]


def test_keras3_files_are_walked_too(tmp_path):
    """A Keras 3 ``.keras`` file (module/class_name/registered_name layout) gets the same walk."""
    import keras as keras3

    inputs = keras3.Input((4,))
    inner = keras3.Sequential([keras3.Input((4,)), keras3.layers.Lambda(lambda x: x * 2, name="double")], name="inner")
    model = keras3.Model(inputs, keras3.layers.Dense(3, name="logits")(inner(inputs)))
    path = tmp_path / "k3.keras"
    model.save(path)
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    assert config["module"].startswith("keras") and "registered_name" in config
    assert find_code_layers(config) == ["double (Lambda)"]
    with pytest.raises(ModelError, match=r"double \(Lambda\)"):
        load_model(path)
    clean = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(3, activation="relu")])
    clean.save(tmp_path / "clean.keras")
    assert find_code_layers(json.loads(zipfile.ZipFile(tmp_path / "clean.keras").read("config.json"))) == []
