"""The settings of one search (``edgeqd optimize``): budgets, the search space, the trial budget.

A frozen dataclass in the style of :mod:`edgeqd.settings`: each field declared once with its
option, help and bounds, checked when built (exit 2 for a bad value).

>>> OptimizeSettings(max_size_kb=16, trials=4).max_size_kb
16
>>> OptimizeSettings(widths=(0.5, -1))
Traceback (most recent call last):
edgeqd.errors.UsageError: --widths takes positive numbers like 0.25,0.5,1 (got (0.5, -1))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional

from edgeqd.errors import UsageError
from edgeqd.settings import DISTILL_RECIPES, Settings, setting

SAMPLERS = ("tpe", "nsga2", "random")
# Precision name → the converter that writes it (looked up in the registry at run time: a
# precision whose converter is not registered in this install is not searched).
PRECISION_FORMATS = {"int8": "tflite-int8", "w4a8": "tflite-w4a8", "mixed": "tflite-mixed"}
# A mixed candidate's bits are chosen after training (--precision auto): before training only a lower bound
# of its size is known, its all-int4 twin's; the mixed search's own budget against the student's float model.
MIXED_LOWER_BOUND_FORMAT = "tflite-w4a8"
MIXED_DEFAULT_DROP = 1.0


def _positive_numbers(value: tuple) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
               for v in value)


@dataclass(frozen=True)
class OptimizeSettings(Settings):
    """One search: budgets (constraints), the space of candidates, and how many to train.

    Budgets left unset are not constraints; the three objectives (accuracy drop, size,
    latency) are minimised either way (latency only when a real device measures it).
    """

    section: ClassVar[str] = "optimize"
    max_size_kb: Optional[float] = setting(None, "--max-size-kb", "Budget: the shipped .tflite is at most this many "
                                           "KB (1 KB = 1024 bytes).", above=0.0, kind=float, metavar="KB")
    max_latency_ms: Optional[float] = setting(None, "--max-latency-ms", "Budget: median latency at 1 thread on "
                                              "--device is at most this (a real device only).", above=0.0,
                                              kind=float, metavar="MS")
    max_drop: Optional[float] = setting(None, "--max-drop", "Budget: at most this many accuracy points below the "
                                        "teacher on held-out data.", minimum=0.0, kind=float, metavar="PTS")
    trials: int = setting(8, "--trials", "Candidates to train (ones pruned before training cost seconds and do not "
                          "count; at most 5×N are proposed). Counted over the whole study, all workers.", minimum=1)
    families: tuple = setting((), "--family", "Search only these built-in student families (repeatable) "
                              "[default: every family that fits the data].", metavar="NAME")
    widths: tuple = setting((0.25, 0.5, 1.0, 1.5), "--widths", "Width multipliers searched.", metavar="LIST")
    depths: tuple = setting((0.5, 1.0), "--depths", "Depth multipliers searched.", metavar="LIST")
    precisions: tuple = setting((), "--precisions", "Precisions searched: int8, w4a8, mixed (per-layer int4/int8 "
                                "chosen after training) [default: each one whose converter is installed].",
                                metavar="LIST")
    recipes: tuple = setting(("classic", "consistent"), "--recipes", "Distillation recipes searched.",
                             metavar="LIST")
    epochs: int = setting(5, "--epochs", "Distillation epochs per candidate (early stopping may end sooner).",
                          minimum=1)
    qat_epochs: int = setting(1, "--qat-epochs", "QAT epochs (with the teacher) after distilling an int8 candidate "
                              "whose layers TFMOT can quantize; the better of QAT and PTQ ships; 0 = PTQ only.",
                              minimum=0)
    train_samples: Optional[int] = setting(None, "--train-samples", "Distil each candidate on N (seeded) training "
                                           "samples only.", minimum=1, kind=int, metavar="N")
    test_fraction: float = setting(0.5, "--test-fraction", "Share of the held-out split the search never sees: the "
                                   "chosen candidate's reported drop is measured there.", above=0.0, maximum=0.9)
    sampler: str = setting("tpe", "--sampler", "Optuna sampler (budgets as constraints): tpe, nsga2, or random "
                           "(a baseline).", choices=SAMPLERS)
    study_name: str = setting("edgeqd-optimize", "--study-name", "Name of the Optuna study in the storage.")
    bench_runs: int = setting(30, "--bench-runs", "Timed runs per latency measurement.", minimum=1)
    seed: int = setting(0, "--seed", "Seed of data splits, samplers, weights and training.")

    def check(self) -> None:
        for name, option in (("widths", "--widths"), ("depths", "--depths")):
            value = getattr(self, name)
            if not value or not _positive_numbers(value):
                raise UsageError(f"{option} takes positive numbers like 0.25,0.5,1 (got {value!r})")
            object.__setattr__(self, name, tuple(dict.fromkeys(float(v) for v in value)))
        unknown = [p for p in self.precisions if p not in PRECISION_FORMATS]
        if unknown:
            raise UsageError(f"--precisions {','.join(unknown)}: choose from {', '.join(PRECISION_FORMATS)}")
        bad = [r for r in self.recipes if r not in DISTILL_RECIPES]
        if bad or not self.recipes:
            raise UsageError(f"--recipes {','.join(bad) or '(none)'}: choose from {', '.join(DISTILL_RECIPES)}")
        if not str(self.study_name).strip():
            raise UsageError("--study-name must not be empty")

    def budgets(self) -> dict:
        """The budgets that are set, by objective: ``{"drop_pts": 1.0, "size_kb": 16.0}``."""
        pairs = {"drop_pts": self.max_drop, "size_kb": self.max_size_kb, "latency_ms": self.max_latency_ms}
        return {k: float(v) for k, v in pairs.items() if v is not None}
