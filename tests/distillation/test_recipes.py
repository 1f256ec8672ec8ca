"""The ``--recipe`` registry: names in step with the settings, per-data-kind defaults, overrides,
the report, and the command line (an unknown recipe is exit 2 naming the choices)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgeqd  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from distill_helpers import fashion_slices, image_teacher_path
from edgeqd.cli import cli
from edgeqd.data import find_fashion_mnist
from edgeqd.distillation.recipes import RECIPES, Augmentation, DataKind, Recipe, register_recipe, resolve
from edgeqd.errors import UsageError
from edgeqd.settings import DISTILL_RECIPES, DistillSettings

needs_fashion = pytest.mark.skipif(find_fashion_mnist() is None,
                                   reason="Fashion-MNIST not installed: run `make data`")


def test_every_settings_choice_is_a_registered_recipe_and_back():
    assert set(RECIPES) == set(DISTILL_RECIPES)
    assert DistillSettings().recipe in RECIPES
    for recipe in RECIPES.values():
        assert resolve(DistillSettings(recipe=recipe.name), (28, 28, 1)).recipe == recipe.name


def test_recipes_are_frozen_validated_data():
    recipe = RECIPES["patient"]
    with pytest.raises(Exception):  # dataclasses.FrozenInstanceError
        recipe.epochs = 1
    with pytest.raises(ValueError, match="loss 'l2'"):
        Recipe("broken", "bad loss", loss="l2")
    with pytest.raises(ValueError, match="registered twice"):
        register_recipe(Recipe("classic", "again"))
    with pytest.raises(ValueError, match="missing from settings.DISTILL_RECIPES"):
        register_recipe(Recipe("unlisted", "not a settings choice"))


def test_unknown_recipe_is_a_usage_error_naming_the_choices():
    with pytest.raises(UsageError) as error:
        DistillSettings(recipe="fast")
    assert str(error.value) == "--recipe 'fast': choose one of " + ", ".join(DISTILL_RECIPES)


@pytest.mark.parametrize("shape, kind", [((28, 28, 1), DataKind.IMAGE), ((32, 32, 3), DataKind.IMAGE),
                                         ((128, 6), DataKind.SEQUENCE), ((20,), DataKind.VECTOR),
                                         ((2, 3, 4, 5), DataKind.OTHER)])
def test_data_kind_comes_from_the_sample_rank(shape, kind):
    assert DataKind.of(shape) is kind


def test_per_data_kind_defaults_of_the_consistent_recipe():
    settings = DistillSettings(recipe="consistent")
    image = resolve(settings, (28, 28, 1)).augmentation
    assert image == Augmentation(crop=3, mixup=0.2)  # crops of 1/8 the side, mixup; no flip unless asked
    assert resolve(settings, (32, 32, 3)).augmentation.crop == 4
    sequence = resolve(settings, (128, 6)).augmentation
    assert sequence == Augmentation(jitter=0.03, scaling=0.1)  # sensor views, no crops or mixup
    vector = resolve(settings, (20,)).augmentation
    assert not vector.active  # a flat feature's meaning depends on its scale: nothing
    classic = resolve(DistillSettings(recipe="classic"), (28, 28, 1))
    assert not classic.augmentation.active and classic.schedule == "constant" and classic.loss == "kl"
    assert (classic.epochs, classic.patience) == (20, 5)  # edgeqd's behaviour before recipes


def test_each_recipe_sets_what_it_says():
    assert resolve(DistillSettings(recipe="dkd"), (28, 28, 1)).loss == "dkd"
    patient = resolve(DistillSettings(recipe="patient"), (28, 28, 1))
    consistent = resolve(DistillSettings(recipe="consistent"), (28, 28, 1))
    assert patient.epochs == 3 * consistent.epochs and patient.schedule == consistent.schedule == "cosine"
    assert patient.augmentation == consistent.augmentation


def test_a_short_run_warms_up_for_at_most_a_fifth_of_its_epochs():
    assert resolve(DistillSettings(recipe="patient"), (28, 28, 1)).warmup_epochs == 2
    assert resolve(DistillSettings(recipe="patient", epochs=5), (28, 28, 1)).warmup_epochs == 1
    assert resolve(DistillSettings(recipe="consistent", epochs=3), (28, 28, 1)).warmup_epochs == 0
    assert resolve(DistillSettings(recipe="consistent", epochs=3, warmup_epochs=2), (28, 28, 1)).warmup_epochs == 2


def test_individual_settings_override_the_recipe():
    settings = DistillSettings(recipe="patient", epochs=7, schedule="constant", loss="dkd", augment="off",
                               mixup=0.5, patience=0, warmup_epochs=0)
    resolved = resolve(settings, (28, 28, 1))
    assert (resolved.epochs, resolved.schedule, resolved.loss, resolved.patience) == (7, "constant", "dkd", 0)
    assert resolved.augmentation == Augmentation(mixup=0.5)  # --augment off drops crops; --mixup stays
    assert set(resolved.overrides) == {"epochs", "schedule", "loss", "augment", "mixup", "patience",
                                       "warmup_epochs"}
    on = resolve(DistillSettings(recipe="classic", augment="on", flip=True, cutmix=1.0), (28, 28, 1))
    assert on.augmentation == Augmentation(crop=3, flip=True, mixup=0.2, cutmix=1.0)


def test_image_only_views_on_sequences_are_off_with_a_note():
    resolved = resolve(DistillSettings(flip=True, cutmix=1.0), (64, 3))
    assert not resolved.augmentation.flip and resolved.augmentation.cutmix == 0.0
    assert any("--flip applies to images" in note for note in resolved.notes)
    assert any("--cutmix applies to images" in note for note in resolved.notes)


@pytest.mark.parametrize("field, value, words", [
    ("schedule", "linear", "--schedule 'linear': choose one of constant, cosine"),
    ("loss", "mse", "--loss 'mse': choose one of kl, dkd"),
    ("mixup", -1.0, "--mixup must be a finite number >= 0, got -1.0"),
    ("augment", "yes", "--augment 'yes': choose one of on, off"),
])
def test_bad_recipe_settings_are_usage_errors(field, value, words):
    with pytest.raises(UsageError) as error:
        DistillSettings(**{field: value})
    assert str(error.value) == words


# --------------------------------------------------------------------------- the command line

def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    data = fashion_slices()[1]
    path = tmp_path_factory.mktemp("data") / "slice.npz"
    np.savez(path, x=data.x_train[:256], y=data.y_train[:256], x_val=data.x_eval[:128], y_val=data.y_eval[:128])
    return path


def test_cli_unknown_recipe_exits_2_naming_the_choices(tmp_path):
    result = _run("distill", "--teacher", "t.keras", "--data", "d.npz", "--out", tmp_path / "s.keras",
                  "--recipe", "fast")
    assert result.exit_code == 2
    for name in DISTILL_RECIPES:
        assert name in result.output
    assert "Traceback" not in result.output


def test_cli_help_lists_the_recipes_and_the_overrides():
    result = _run("distill", "--help")
    assert result.exit_code == 0
    for option in ("--recipe", "--loss", "--augment", "--mixup", "--cutmix", "--flip", "--schedule",
                   "--warmup-epochs", "--tckd-weight", "--nckd-weight"):
        assert option in result.output


@needs_fashion
def test_cli_recipe_and_its_resolved_settings_reach_the_report(npz, tmp_path):
    out = tmp_path / "student.keras"
    result = _run("distill", "--teacher", image_teacher_path(), "--data", npz, "--student", "mlp", "--out", out,
                  "--recipe", "dkd", "--epochs", 1, "--mixup", 0, "--batch-size", 64, "--quiet", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "student.distill.json").read_text())["settings"]
    assert report["recipe"] == "dkd" and report["loss"] == "dkd" and report["schedule"] == "cosine"
    assert report["nckd_weight"] == 2.0 and report["epochs"] == 1
    resolved = report["resolved_recipe"]
    assert resolved["data_kind"] == "image" and resolved["augmentation"]["crop"] == 3
    assert resolved["augmentation"]["mixup"] == 0.0 and set(resolved["overrides"]) == {"epochs", "mixup"}
    assert json.loads(result.output)["settings"]["recipe"] == "dkd"
