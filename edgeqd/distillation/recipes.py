"""Distillation recipes: named presets of loss, augmentation and schedule (``--recipe``).

A :class:`Recipe` is validated data, registered by name in :data:`RECIPES`. The fields of
:class:`~edgeqd.settings.DistillSettings` that default to None (``loss``, ``augment``,
``mixup``, ``cutmix``, ``epochs``, ``schedule``, ``warmup_epochs``, ``patience``) take the
recipe's value; a value the user gives overrides it. :func:`resolve` does that for one run,
with the augmentation that suits the data kind (images, sequences, flat vectors: told
apart by the rank of one sample), and the distillation report records the result.

The recipes, from what the literature found to work:

- ``classic`` (the default): Hinton et al. 2015 as edgeqd did before recipes: (1 − α)·CE +
  α·T²·KL, no augmentation, constant learning rate, early stopping. It stays the default:
  on both tasks of ``benchmarks/distill.py`` it was at least as good as the others at a short
  budget, and it is what earlier versions did (no change in time or behaviour).
- ``consistent``: "consistent teaching" (Beyer et al. 2022, "Knowledge
  distillation: A good teacher is patient and consistent"): teacher and student see the
  same augmented view in every step — the teacher labels exactly what the student sees, so
  augmentation never teaches the student a target that does not fit its input — and the
  learning rate follows a cosine decay after a short warm-up. Same epoch budget as classic.
- ``patient``: consistent, for three times the epochs (Beyer et al.: function matching keeps
  improving long after plain training has converged) and with more patience.
- ``dkd``: consistent with decoupled KD (Zhao et al. CVPR 2022) instead of KL·T².

>>> RECIPES["patient"].epochs, RECIPES["classic"].augment
(60, False)
>>> resolve(DistillSettings(recipe="classic", mixup=0.2), (28, 28, 1)).augmentation.mixup
0.2
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Optional, Sequence

from edgeqd.errors import UsageError
from edgeqd.settings import DISTILL_LOSSES, DISTILL_RECIPES, LR_SCHEDULES, DistillSettings


class DataKind(str, Enum):
    """What one sample is, told from its rank: augmentation depends on it."""

    IMAGE = "image"  # H×W×C
    SEQUENCE = "sequence"  # T×C (sensor channels over time)
    VECTOR = "vector"  # flat features
    OTHER = "other"

    @classmethod
    def of(cls, sample_shape: Sequence[Optional[int]]) -> "DataKind":
        """The kind of samples of ``sample_shape`` (no batch dimension).

        Args:
            sample_shape: shape of one sample.

        >>> DataKind.of((28, 28, 1)), DataKind.of((128, 6)), DataKind.of((20,))
        (<DataKind.IMAGE: 'image'>, <DataKind.SEQUENCE: 'sequence'>, <DataKind.VECTOR: 'vector'>)
        """
        return {3: cls.IMAGE, 2: cls.SEQUENCE, 1: cls.VECTOR}.get(len(tuple(sample_shape)), cls.OTHER)


@dataclass(frozen=True)
class Augmentation:
    """One consistent view per batch, fed to teacher and student alike (all zeros: none).

    Attributes:
        crop: images: zero-pad this many pixels on each side, then crop back at a random offset.
        flip: images: mirror left-right with probability 0.5.
        mixup: concentration a of mixup's λ ~ Beta(a, a) (0 = off); labels mix with the inputs.
        cutmix: images: concentration of CutMix's λ (0 = off); with mixup too, each batch uses one.
        jitter: sequences: add Gaussian noise of this many standard deviations (per channel).
        scaling: sequences: multiply each channel of a sample by N(1, scaling²).
    """

    crop: int = 0
    flip: bool = False
    mixup: float = 0.0
    cutmix: float = 0.0
    jitter: float = 0.0
    scaling: float = 0.0

    @property
    def active(self) -> bool:
        """Whether the view differs from the input at all."""
        return any((self.crop, self.flip, self.mixup, self.cutmix, self.jitter, self.scaling))


def image_crop(sample_shape: Sequence[Optional[int]]) -> int:
    """Padding of random crops: 1/8 of the shorter side (4 pixels at 32, 3 at 28), at least 1.

    Args:
        sample_shape: (H, W, C) of one image.

    >>> image_crop((28, 28, 1)), image_crop((224, 224, 3))
    (3, 28)
    """
    sides = [d for d in tuple(sample_shape)[:2] if d]
    return max(1, min(sides) // 8) if sides else 0


# The views a recipe with ``augment`` uses, per data kind. Images: crops (shift invariance
# nearly every image task has) and mixup (Beyer et al.'s function matching: mixed images are
# where teacher and student disagree most, so they carry the most signal); flips only on
# request. Sequences: jitter and per-channel scaling (Um et al. 2017, wearable sensors).
# Flat vectors: nothing (a feature's meaning depends on its scale).
VIEWS: dict[DataKind, Callable[[Sequence[Optional[int]]], Augmentation]] = {
    DataKind.IMAGE: lambda shape: Augmentation(crop=image_crop(shape), mixup=0.2),
    DataKind.SEQUENCE: lambda shape: Augmentation(jitter=0.03, scaling=0.1),
    DataKind.VECTOR: lambda shape: Augmentation(),
    DataKind.OTHER: lambda shape: Augmentation(),
}


@dataclass(frozen=True)
class Recipe:
    """A named preset; :func:`resolve` fills in a run's settings from it.

    Attributes:
        name: the ``--recipe`` value.
        description: one line for help and documents.
        loss: the teacher term, ``"kl"`` or ``"dkd"``.
        augment: whether teacher and student see the data kind's augmented view (:data:`VIEWS`).
        epochs: most epochs.
        schedule: ``"constant"`` or ``"cosine"`` (decay to 0 after a linear warm-up).
        warmup_epochs: epochs of warm-up before the cosine decay (at most a fifth of the epochs
            when ``--epochs`` shortens the run).
        patience: epochs without a better validation figure before stopping (0 = never).
    """

    name: str
    description: str
    loss: str = "kl"
    augment: bool = False
    epochs: int = 20
    schedule: str = "constant"
    warmup_epochs: int = 0
    patience: int = 5

    def __post_init__(self) -> None:
        if self.loss not in DISTILL_LOSSES or self.schedule not in LR_SCHEDULES:
            raise ValueError(f"recipe {self.name!r}: loss {self.loss!r} or schedule {self.schedule!r} unknown")
        if self.epochs < 1 or self.warmup_epochs < 0 or self.patience < 0:
            raise ValueError(f"recipe {self.name!r}: epochs >= 1, warmup_epochs >= 0 and patience >= 0")


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to :data:`RECIPES` under its name (it must be one of the settings' choices).

    Args:
        recipe: the preset.
    """
    if recipe.name in RECIPES or recipe.name not in DISTILL_RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is registered twice or missing from settings.DISTILL_RECIPES")
    RECIPES[recipe.name] = recipe
    return recipe


# Cosine runs keep more patience: the rate is still high in the first half, where the
# validation figure wanders; the best epoch is kept either way.
register_recipe(Recipe("classic", "Hinton KD: (1 − α)·CE + α·T²·KL, no augmentation, constant rate."))
register_recipe(Recipe("consistent", "Consistent teaching: the same augmented view for teacher and student, "
                       "cosine decay.", augment=True, schedule="cosine", warmup_epochs=1, patience=10))
register_recipe(Recipe("patient", "Consistent teaching for 3× the epochs (patient).", augment=True, epochs=60,
                       schedule="cosine", warmup_epochs=2, patience=20))
register_recipe(Recipe("dkd", "Consistent teaching with decoupled KD (TCKD + NCKD) instead of KL·T².", loss="dkd",
                       augment=True, schedule="cosine", warmup_epochs=1, patience=10))


@dataclass(frozen=True)
class ResolvedRecipe:
    """A run's recipe with every value decided (what the report records).

    Attributes:
        recipe: the preset's name.
        data_kind: what one sample is.
        loss: ``"kl"`` or ``"dkd"``.
        augmentation: the view teacher and student see.
        epochs: most epochs.
        schedule: ``"constant"`` or ``"cosine"``.
        warmup_epochs: warm-up epochs (cosine only).
        patience: early-stopping patience, 0 = never stop early.
        overrides: the settings the user gave that replaced the recipe's values.
        notes: remarks (e.g. an augmentation the data kind does not take).
    """

    recipe: str
    data_kind: DataKind
    loss: str
    augmentation: Augmentation
    epochs: int
    schedule: str
    warmup_epochs: int
    patience: int
    overrides: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        out = dataclasses.asdict(self)
        out.update(data_kind=self.data_kind.value, overrides=list(self.overrides), notes=list(self.notes))
        return out


def _augmentation(recipe: Recipe, settings: DistillSettings, kind: DataKind,
                  sample_shape: Sequence[Optional[int]]) -> tuple[Augmentation, list[str]]:
    """The view: the data kind's (when the recipe or --augment says so) with --mixup/--cutmix/--flip on top."""
    augment = recipe.augment if settings.augment is None else settings.augment == "on"
    view = VIEWS[kind](sample_shape) if augment else Augmentation()
    notes = []
    if settings.mixup is not None:
        view = dataclasses.replace(view, mixup=float(settings.mixup))
    image = kind is DataKind.IMAGE
    if settings.cutmix is not None:
        if settings.cutmix and not image:
            notes.append(f"--cutmix applies to images; the data is {kind.value} samples, so it is off")
        view = dataclasses.replace(view, cutmix=float(settings.cutmix) if image else 0.0)
    if settings.flip:
        if not image:
            notes.append(f"--flip applies to images; the data is {kind.value} samples, so it is off")
        view = dataclasses.replace(view, flip=image)
    return view, notes


def resolve(settings: DistillSettings, sample_shape: Sequence[Optional[int]]) -> ResolvedRecipe:
    """The run's recipe: ``settings.recipe``'s values, overridden by the settings the user gave.

    Args:
        settings: the run's settings.
        sample_shape: shape of one sample (no batch dimension): decides the data kind.

    Raises:
        UsageError: an unknown recipe name (exit 2), naming the choices.

    >>> r = resolve(DistillSettings(recipe="patient", epochs=5), (100, 6))
    >>> r.data_kind.value, r.epochs, r.augmentation.jitter, r.overrides
    ('sequence', 5, 0.03, ('epochs',))
    """
    if settings.recipe not in RECIPES:
        raise UsageError(f"--recipe {settings.recipe!r}: choose one of {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[settings.recipe]
    kind = DataKind.of(sample_shape)
    given = {name: getattr(settings, name) for name in ("loss", "epochs", "schedule", "warmup_epochs", "patience")}
    overrides = [name for name in ("loss", "augment", "mixup", "cutmix", "epochs", "schedule", "warmup_epochs",
                                   "patience") if getattr(settings, name) is not None]
    values = {name: (getattr(recipe, name) if value is None else value) for name, value in given.items()}
    if settings.warmup_epochs is None:
        # The recipe's warm-up is for its own budget: a short run (--epochs 3) warms up for at
        # most a fifth of its epochs, so that it spends its few steps at the full rate.
        values["warmup_epochs"] = min(recipe.warmup_epochs, values["epochs"] // 5)
    view, notes = _augmentation(recipe, settings, kind, sample_shape)
    if settings.flip:
        overrides.append("flip")
    return ResolvedRecipe(recipe=recipe.name, data_kind=kind, augmentation=view, overrides=tuple(overrides),
                          notes=tuple(notes), **values)
