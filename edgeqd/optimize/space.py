"""The search space: student family × width × depth × precision × distillation recipe.

Optuna suggests each candidate (:func:`suggest`); the space is the same in every process of
a study (workers and ``--resume`` rebuild it from the same settings), as Optuna needs.
A user's own student file is one more value of ``family`` (``"file"``), enqueued first so
it is always tried; width and depth do not apply to it.

>>> Candidate("cnn", 0.5, 1.0, "int8", "classic").label
'cnn w0.5 d1 int8 classic'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

from edgeqd.errors import UsageError
from edgeqd.optimize.settings import MIXED_LOWER_BOUND_FORMAT, PRECISION_FORMATS, OptimizeSettings

FILE_FAMILY = "file"
# Families whose layers TFMOT can quantize-aware-train (conv1d: TFMOT rejects Conv1D).
QAT_FAMILIES = ("cnn", "mobilenet", "mlp")


@dataclass(frozen=True)
class Candidate:
    """One point of the space.

    Attributes:
        family: a built-in student family, or ``"file"`` for the user's ``--student`` file.
        width: width multiplier (None for a file).
        depth: depth multiplier (None for a file).
        precision: ``int8``, ``w4a8`` or ``mixed``.
        recipe: the distillation recipe.
    """

    family: str
    width: Optional[float]
    depth: Optional[float]
    precision: str
    recipe: str

    @property
    def format(self) -> str:
        """The converter that writes this candidate's artifact (``tflite-int8``)."""
        return PRECISION_FORMATS[self.precision]

    @property
    def untrained_format(self) -> str:
        """The converter whose untrained artifact is measured before training: the candidate's own, except
        for ``mixed``, whose bits the search picks after training (its all-int4 twin: a lower bound of its size)."""
        return MIXED_LOWER_BOUND_FORMAT if self.precision == "mixed" else self.format

    @property
    def label(self) -> str:
        """A short name for tables and plots."""
        size = "" if self.family == FILE_FAMILY else f" w{self.width:g} d{self.depth:g}"
        return f"{self.family}{size} {self.precision} {self.recipe}"

    def to_dict(self) -> dict[str, Any]:
        """The candidate as JSON-ready data."""
        return {**asdict(self), "format": self.format, "label": self.label}


@dataclass(frozen=True)
class Space:
    """The values each dimension may take.

    Attributes:
        families: built-in families that fit the data (and ``"file"`` with ``--student``).
        widths: width multipliers.
        depths: depth multipliers.
        precisions: precisions whose converter is registered.
        recipes: distillation recipes.
    """

    families: tuple
    widths: tuple
    depths: tuple
    precisions: tuple
    recipes: tuple

    def size(self) -> int:
        """How many distinct candidates the space holds."""
        built_in = len([f for f in self.families if f != FILE_FAMILY])
        files = len(self.families) - built_in
        return (built_in * len(self.widths) * len(self.depths) + files) * len(self.precisions) * len(self.recipes)


def available_precisions(wanted: Sequence[str]) -> tuple:
    """The precisions to search: ``wanted``, or every one whose converter is registered.

    Args:
        wanted: precisions asked for (empty = every registered one).

    Raises:
        UsageError: a precision was asked for whose converter this install lacks.

    >>> "int8" in available_precisions(())
    True
    """
    from edgeqd.converters import CONVERTERS

    if not wanted:
        return tuple(p for p, fmt in PRECISION_FORMATS.items() if fmt in CONVERTERS)
    missing = [p for p in wanted if PRECISION_FORMATS[p] not in CONVERTERS]
    if missing:
        raise UsageError(f"--precisions {','.join(missing)}: no converter {PRECISION_FORMATS[missing[0]]} is "
                         f"registered in this install (see `edgeqd formats`)")
    return tuple(dict.fromkeys(wanted))


def build_space(settings: OptimizeSettings, input_shape: Sequence[int], student_file: Optional[str]) -> Space:
    """The space for data of ``input_shape``.

    Args:
        settings: the search settings.
        input_shape: shape of one sample.
        student_file: the user's student file (a fixed candidate), or None.

    Raises:
        UsageError: a ``--family`` is unknown or does not fit the data, or none fits.
    """
    from edgeqd.distillation.students import STUDENTS

    fitting = [name for name, family in sorted(STUDENTS.items()) if family.fits(input_shape)]
    families = list(settings.families) or fitting
    wrong = [f for f in families if f not in fitting]
    if wrong:
        raise UsageError(f"--family {','.join(wrong)}: not a built-in family for samples of shape "
                         f"{tuple(input_shape)}; families that fit: {', '.join(fitting) or 'none'}")
    if student_file is not None:
        families.append(FILE_FAMILY)
    if not families:
        raise UsageError(f"no built-in student family fits samples of shape {tuple(input_shape)}: give --student FILE")
    return Space(tuple(families), settings.widths, settings.depths, available_precisions(settings.precisions),
                 settings.recipes)


def suggest(trial, space: Space) -> Candidate:
    """Ask Optuna's ``trial`` for one candidate (width and depth only for built-in families).

    Args:
        trial: an ``optuna.Trial``.
        space: the space.
    """
    family = trial.suggest_categorical("family", list(space.families))
    width = depth = None
    if family != FILE_FAMILY:
        width = float(trial.suggest_categorical("width", list(space.widths)))
        depth = float(trial.suggest_categorical("depth", list(space.depths)))
    precision = trial.suggest_categorical("precision", list(space.precisions))
    recipe = trial.suggest_categorical("recipe", list(space.recipes))
    return Candidate(family, width, depth, precision, recipe)


def from_params(params: dict) -> Candidate:
    """The candidate a finished trial's ``params`` describe.

    Args:
        params: ``FrozenTrial.params``.

    >>> from_params({"family": "mlp", "width": 0.5, "depth": 1.0, "precision": "int8", "recipe": "dkd"}).label
    'mlp w0.5 d1 int8 dkd'
    """
    return Candidate(params["family"], params.get("width"), params.get("depth"), params["precision"],
                     params["recipe"])
