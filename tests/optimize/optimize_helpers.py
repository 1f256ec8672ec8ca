"""Small real inputs for the optimize tests: the Conv1D sequence teacher and a tiny labelled .npz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from distill_helpers import sequence_teacher_path, sine_sequences

# The smallest search that still trains: 1 epoch, PTQ, one recipe, mlp/conv1d at small widths.
TINY = ["--epochs", "1", "--qat-epochs", "0", "--precisions", "int8", "--widths", "0.25,0.5", "--depths", "1", "--recipes", "classic",
        "--bench-runs", "3"]


def write_npz(folder: Path, train: int = 300, held_out: int = 120) -> Path:
    """A labelled sine-sequence .npz (64×2 samples, 3 classes) with its own held-out split."""
    x, y = sine_sequences(train, seed=5)
    x_val, y_val = sine_sequences(held_out, seed=6)
    path = folder / "sequences.npz"
    np.savez(path, x=x, y=y, x_val=x_val, y_val=y_val)
    return path


def teacher() -> Path:
    """The trained Conv1D teacher (built once per session)."""
    return sequence_teacher_path()


def candidates(out: Path) -> dict:
    """The content of ``out/candidates.json``."""
    return json.loads((out / "candidates.json").read_text())
