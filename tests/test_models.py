"""Model loading is safe by default; saving is atomic.

Hostile, re-encoded and nested code-carrying configurations are in test_hostile_models.py.
"""

from __future__ import annotations

import pytest

from edgeqd.errors import ModelError, UsageError
from edgeqd.models import file_sha256, load_model, model_signature, save_model


def _lambda_model():
    import tf_keras as keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2, name="double"),
                             keras.layers.Dense(3)])


@pytest.mark.parametrize("filename", ["m.keras", "m.h5", "saved_model_dir"])
def test_lambda_layers_are_refused_unless_the_user_opts_in(filename, tmp_path):
    path = tmp_path / filename
    _lambda_model().save(path)
    with pytest.raises(ModelError, match=r"code that would run on load: double \(Lambda\); .*--unsafe-deserialization"):
        load_model(path)
    model = load_model(path, unsafe_deserialization=True)
    assert model_signature(model) == ((4,), 3)


def test_unknown_suffix_and_folder_without_saved_model(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(ModelError, match="unknown model format '.pt'"):
        load_model(tmp_path / "m.pt")
    with pytest.raises(ModelError, match="without saved_model.pb"):
        load_model(tmp_path)


def test_corrupt_h5_is_a_model_error(tmp_path):
    path = tmp_path / "m.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(ModelError, match="corrupt or unreadable"):
        load_model(path)


def test_multi_output_models_are_refused_with_their_counts():
    import tf_keras as keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(3)(inputs)])
    with pytest.raises(ModelError, match="1 inputs and 2 outputs"):
        model_signature(model)


def test_save_is_atomic_and_respects_force(tmp_path):
    import tf_keras as keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    path = save_model(model, tmp_path / "m.keras")
    digest = file_sha256(path)
    with pytest.raises(UsageError, match="--force"):
        save_model(model, path)
    assert file_sha256(path) == digest
    save_model(model, path, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]  # no temporary files left


def test_folder_digest_covers_names_and_contents(tmp_path):
    (tmp_path / "a").write_text("1")
    first = file_sha256(tmp_path)
    (tmp_path / "a").rename(tmp_path / "b")
    assert file_sha256(tmp_path) != first
