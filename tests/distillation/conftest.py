"""Fixtures shared by the distillation tests: the cached image teacher and Fashion-MNIST slices."""

import pytest

from distill_helpers import fashion_slices, image_teacher_path


@pytest.fixture(scope="module")
def teacher_path():
    return image_teacher_path()


@pytest.fixture(scope="module")
def student_data():
    return fashion_slices()[1]
