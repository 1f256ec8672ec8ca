"""Built-in student families, sized from the data (and the teacher).

A family is a function ``build(input_shape, num_classes, width, depth) -> keras.Model``
registered where it is defined with ``@register_student("name")``. Every family
outputs logits (no final softmax) and uses only layers that TensorFlow Model
Optimization can quantize, in the order it folds: ``Conv → BatchNormalization →
ReLU``, never ``Conv2D(activation=…)`` before a batch norm. The exception is
``conv1d``: TFMOT rejects ``Conv1D``, so a ``conv1d`` student goes through
post-training quantization, not QAT.

``width`` multiplies the number of channels / units, ``depth`` the number of
blocks. With ``width=None`` :func:`build_student` picks the width that brings the
student to about 1/15 of the teacher's parameters (within the 1/10 – 1/20 band
when the family can reach it).

>>> from edgeqd.distillation.students import STUDENTS
>>> sorted(STUDENTS)
['cnn', 'conv1d', 'mlp', 'mobilenet']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from edgeqd.errors import DistillationError, UsageError

# A built-in student aims at this fraction of the teacher's parameters: the middle
# (geometrically) of the 1/10 – 1/20 band the issue asks for.
TARGET_FRACTION = 1 / 15
FRACTION_BAND = (1 / 20, 1 / 10)
# Widths tried when sizing a student to its teacher: a geometric ladder, so the
# parameter count (≈ quadratic in width) moves in small steps.
# Batch-norm statistics move 10% per step (PyTorch's default) instead of Keras' 1%: students
# are often trained for a few hundred steps, and at 1% their moving statistics would still be
# far from the data's when the best epoch is picked.
_BN_MOMENTUM = 0.9
_WIDTH_LADDER = tuple(round(0.125 * 1.15 ** i, 4) for i in range(40))  # 0.125 … ~29


@dataclass(frozen=True)
class StudentFamily:
    """One registered student family.

    Attributes:
        name: the ``--student`` value.
        build: ``build(input_shape, num_classes, width, depth) -> keras.Model``.
        input_rank: rank of one sample the family accepts (3 = H×W×C images,
            2 = T×C sequences), or None for any rank.
        description: one line for ``--list-students``.
    """

    name: str
    build: Callable
    input_rank: Optional[int]
    description: str

    def fits(self, input_shape: Sequence[Optional[int]]) -> bool:
        """Whether samples of ``input_shape`` (no batch dimension) suit this family.

        Args:
            input_shape: shape of one sample.
        """
        return self.input_rank is None or len(tuple(input_shape)) == self.input_rank


STUDENTS: dict[str, StudentFamily] = {}


def register_student(name: str, input_rank: Optional[int], description: str) -> Callable:
    """Register a student family under ``name`` (used as ``--student name``).

    Args:
        name: the family's name.
        input_rank: rank of one sample it accepts, or None for any.
        description: one line shown by ``--list-students``.

    >>> @register_student("tiny-doc", None, "doctest family")
    ... def _tiny(input_shape, num_classes, width, depth): ...
    >>> "tiny-doc" in STUDENTS
    True
    >>> del STUDENTS["tiny-doc"]
    """

    def decorator(build: Callable) -> Callable:
        if name in STUDENTS:
            raise ValueError(f"student family {name!r} is registered twice")
        STUDENTS[name] = StudentFamily(name, build, input_rank, description)
        return build

    return decorator


def _channels(base: int, width: float) -> int:
    # Multiples of 4 keep channel counts friendly to int8 kernels (XNNPACK, NNAPI).
    return max(4, int(round(base * width / 4.0)) * 4)


def _blocks(base: int, depth: float) -> int:
    return max(1, int(round(base * depth)))


@register_student("cnn", input_rank=3,
                  description="plain CNN: [Conv3x3 → BN → ReLU]×k + max-pool stages, global pool, dense logits")
def build_cnn(input_shape, num_classes: int, width: float = 1.0, depth: float = 1.0):
    """A plain CNN for images (H×W×C).

    Two stages by default (``depth`` scales it), each ``Conv 3×3 → BN → ReLU``
    twice and a 2×2 max-pool, then global average pooling and a dense layer.

    Args:
        input_shape: (height, width, channels).
        num_classes: number of output logits.
        width: channel multiplier (1.0 = 16 then 32 filters).
        depth: stage multiplier (1.0 = 2 stages).

    >>> build_cnn((28, 28, 1), 10).output_shape
    (None, 10)
    """
    import tf_keras as keras
    from tf_keras import layers

    inputs = keras.Input(tuple(input_shape), name="input")
    x = inputs
    stages = _blocks(2, depth)
    for stage in range(stages):
        filters = _channels(16 * 2 ** stage, width)
        for block in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{stage + 1}_{block + 1}")(x)
            x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"bn{stage + 1}_{block + 1}")(x)
            x = layers.ReLU(name=f"relu{stage + 1}_{block + 1}")(x)
        # Pool while the feature map is still larger than 4×4; beyond that it only loses detail.
        if min(x.shape[1], x.shape[2]) >= 8:
            x = layers.MaxPooling2D(name=f"pool{stage + 1}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="student_cnn")


@register_student("mobilenet", input_rank=3,
                  description="MobileNet-style: depthwise-separable blocks, BN, ReLU6, width multiplier")
def build_mobilenet(input_shape, num_classes: int, width: float = 1.0, depth: float = 1.0):
    """A small MobileNet (v1-style) for images: depthwise-separable convolutions.

    Stem ``Conv 3×3 → BN → ReLU6``, then blocks of ``DepthwiseConv 3×3 → BN → ReLU6 →
    Conv 1×1 → BN → ReLU6``; stride 2 where the channel count doubles; global
    average pooling and dense logits. Inputs of 64 pixels or more get a stride-2 stem.

    Args:
        input_shape: (height, width, channels).
        num_classes: number of output logits.
        width: the MobileNet width multiplier α (channels × α).
        depth: block multiplier (1.0 = 4 separable blocks).

    >>> build_mobilenet((28, 28, 1), 10, width=0.5).output_shape
    (None, 10)
    """
    import tf_keras as keras
    from tf_keras import layers

    inputs = keras.Input(tuple(input_shape), name="input")
    stem_stride = 2 if min(input_shape[0], input_shape[1]) >= 64 else 1
    x = layers.Conv2D(_channels(16, width), 3, strides=stem_stride, padding="same", use_bias=False,
                      name="stem_conv")(inputs)
    x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    # (pointwise filters, stride) per block, MobileNet v1's pattern scaled down.
    plan = [(32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1)]
    n_blocks = min(len(plan), _blocks(4, depth))
    for i, (filters, stride) in enumerate(plan[:n_blocks], start=1):
        if stride == 2 and min(x.shape[1], x.shape[2]) < 4:
            stride = 1  # small inputs: stop downsampling before the map vanishes
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"block{i}_dw")(x)
        x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"block{i}_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"block{i}_dw_relu")(x)
        x = layers.Conv2D(_channels(filters, width), 1, use_bias=False, name=f"block{i}_pw")(x)
        x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"block{i}_pw_bn")(x)
        x = layers.ReLU(6.0, name=f"block{i}_pw_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="student_mobilenet")


@register_student("conv1d", input_rank=2,
                  description="1-D CNN for sequences (T×C): [Conv1D → BN → ReLU] + pooling, global pool, logits")
def build_conv1d(input_shape, num_classes: int, width: float = 1.0, depth: float = 1.0):
    """A 1-D CNN for sequences (time steps × channels), e.g. sensor windows or audio features.

    Note: TFMOT's QAT rejects ``Conv1D``; quantize this student with post-training
    quantization.

    Args:
        input_shape: (time steps, channels).
        num_classes: number of output logits.
        width: channel multiplier (1.0 = 16, 32, 64 filters).
        depth: block multiplier (1.0 = 3 blocks).

    >>> build_conv1d((64, 3), 5).output_shape
    (None, 5)
    """
    import tf_keras as keras
    from tf_keras import layers

    inputs = keras.Input(tuple(input_shape), name="input")
    x = inputs
    for i in range(_blocks(3, depth)):
        x = layers.Conv1D(_channels(16 * 2 ** min(i, 2), width), 5, padding="same", use_bias=False,
                          name=f"conv{i + 1}")(x)
        x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"bn{i + 1}")(x)
        x = layers.ReLU(name=f"relu{i + 1}")(x)
        if x.shape[1] is not None and x.shape[1] >= 8:
            x = layers.MaxPooling1D(name=f"pool{i + 1}")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="student_conv1d")


@register_student("mlp", input_rank=None,
                  description="multilayer perceptron for flat features (any input is flattened)")
def build_mlp(input_shape, num_classes: int, width: float = 1.0, depth: float = 1.0):
    """A multilayer perceptron: flatten, ``[Dense → BN → ReLU]×k``, dense logits.

    Args:
        input_shape: shape of one sample (flattened first).
        num_classes: number of output logits.
        width: unit multiplier (1.0 = 128 units per hidden layer).
        depth: hidden-layer multiplier (1.0 = 2 layers).

    >>> build_mlp((20,), 3).output_shape
    (None, 3)
    """
    import tf_keras as keras
    from tf_keras import layers

    inputs = keras.Input(tuple(input_shape), name="input")
    x = layers.Flatten(name="flatten")(inputs) if len(tuple(input_shape)) > 1 else inputs
    for i in range(_blocks(2, depth)):
        x = layers.Dense(_channels(128, width), use_bias=False, name=f"dense{i + 1}")(x)
        x = layers.BatchNormalization(momentum=_BN_MOMENTUM, name=f"bn{i + 1}")(x)
        x = layers.ReLU(name=f"relu{i + 1}")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="student_mlp")


def _family(name: str, input_shape: Sequence[Optional[int]]) -> StudentFamily:
    if name not in STUDENTS:
        raise UsageError(f"unknown student {name!r}: give a Keras model path or one of "
                         f"{', '.join(sorted(STUDENTS))}")
    family = STUDENTS[name]
    if not family.fits(input_shape):
        fitting = [n for n, f in sorted(STUDENTS.items()) if f.fits(input_shape)]
        raise DistillationError(
            f"student {name!r} takes samples of rank {family.input_rank} but the data has samples of "
            f"shape {tuple(input_shape)} (rank {len(tuple(input_shape))}); families that fit: {', '.join(fitting)}")
    return family


def count_student_params(name: str, input_shape: Sequence[int], num_classes: int,
                         width: float = 1.0, depth: float = 1.0) -> int:
    """Parameter count of a built-in student, without keeping the model.

    Args:
        name: the family.
        input_shape: shape of one sample.
        num_classes: number of output logits.
        width: channel multiplier.
        depth: block multiplier.

    >>> count_student_params("mlp", (20,), 3, width=0.25)
    2019
    """
    model = _family(name, input_shape).build(tuple(input_shape), num_classes, width, depth)
    return int(model.count_params())


def size_to_teacher(name: str, input_shape: Sequence[int], num_classes: int, teacher_params: int,
                    depth: float = 1.0) -> float:
    """The width multiplier that brings a family closest to ``TARGET_FRACTION`` of the teacher.

    Parameters grow monotonically with width, so a bisection over a geometric
    ladder of widths finds it in a handful of builds.

    Args:
        name: the family.
        input_shape: shape of one sample.
        num_classes: number of output logits.
        teacher_params: the teacher's parameter count.
        depth: block multiplier, kept fixed.

    >>> size_to_teacher("mlp", (20,), 3, teacher_params=150_000)
    0.6688
    """
    target = teacher_params * TARGET_FRACTION
    lo, hi = 0, len(_WIDTH_LADDER) - 1
    counts: dict[int, int] = {}

    def params(i: int) -> int:
        if i not in counts:
            counts[i] = count_student_params(name, input_shape, num_classes, _WIDTH_LADDER[i], depth)
        return counts[i]

    while lo < hi:  # first rung with params >= target
        mid = (lo + hi) // 2
        if params(mid) < target:
            lo = mid + 1
        else:
            hi = mid
    candidates = [i for i in (lo - 1, lo) if 0 <= i < len(_WIDTH_LADDER)]
    # Closest in ratio, not in absolute count: 1/12 and 1/18 are equally far from 1/15.
    import math

    best = min(candidates, key=lambda i: abs(math.log(params(i) / target)))
    return _WIDTH_LADDER[best]


def check_size(width: Optional[float], depth: float) -> None:
    """Raise :class:`UsageError` for a width or depth multiplier that is not a finite number > 0.

    They are option values (``--width``, ``--depth``), so a bad one is a usage error (exit 2);
    ``inf`` would try to build an endless model, NaN would slip through ``width <= 0``.

    Args:
        width: channel multiplier, or None (sized to the teacher).
        depth: block multiplier.

    >>> check_size(float("nan"), 1.0)
    Traceback (most recent call last):
    edgeqd.errors.UsageError: --width must be a finite number > 0, got nan
    """
    if width is not None and not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        raise UsageError(f"--width must be a finite number > 0, got {width}")
    if not (isinstance(depth, (int, float)) and math.isfinite(depth) and depth > 0):
        raise UsageError(f"--depth must be a finite number > 0, got {depth}")


def build_student(name: str, input_shape: Sequence[int], num_classes: int, width: Optional[float] = None,
                  depth: float = 1.0, teacher_params: Optional[int] = None):
    """Build a built-in student, sized to the teacher when ``width`` is not given.

    Args:
        name: the family (``cnn``, ``mobilenet``, ``conv1d``, ``mlp``).
        input_shape: shape of one sample (no batch dimension).
        num_classes: number of output logits.
        width: channel multiplier; None = sized to ~1/15 of ``teacher_params``
            (or 1.0 without a teacher).
        depth: block multiplier.
        teacher_params: the teacher's parameter count, for sizing.

    Returns:
        An uncompiled ``tf_keras`` model that outputs logits.

    >>> build_student("cnn", (28, 28, 1), 10, width=0.5).count_params() < 20_000
    True
    """
    check_size(width, depth)
    family = _family(name, input_shape)
    if width is None:
        width = size_to_teacher(name, input_shape, num_classes, teacher_params, depth) if teacher_params else 1.0
    return family.build(tuple(input_shape), num_classes, width, depth)


def list_students(input_shape: Sequence[int], num_classes: int, teacher_params: Optional[int] = None,
                  width: Optional[float] = None, depth: float = 1.0) -> list[dict]:
    """One row per family: whether it fits the data, its width and parameter count.

    Args:
        input_shape: shape of one sample.
        num_classes: number of output logits.
        teacher_params: the teacher's parameter count (sizes each family to it).
        width: a fixed width multiplier instead of sizing.
        depth: block multiplier.

    >>> [r["family"] for r in list_students((28, 28, 1), 10)]
    ['cnn', 'conv1d', 'mlp', 'mobilenet']
    """
    rows = []
    for name, family in sorted(STUDENTS.items()):
        row = {"family": name, "description": family.description, "fits": family.fits(input_shape),
               "width": None, "params": None, "fraction_of_teacher": None}
        if row["fits"]:
            chosen = width
            if chosen is None:
                chosen = size_to_teacher(name, input_shape, num_classes, teacher_params, depth) \
                    if teacher_params else 1.0
            row["width"] = chosen
            row["params"] = count_student_params(name, input_shape, num_classes, chosen, depth)
            if teacher_params:
                row["fraction_of_teacher"] = row["params"] / teacher_params
        rows.append(row)
    return rows
