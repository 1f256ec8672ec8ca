"""A sequence task that ships inside a package: UCI Japanese Vowels from sktime's wheel.

sktime's wheel bundles a few UCR/UEA data sets as ``.ts`` files under
``sktime/datasets/data/`` (checked in sktime 1.2.0: ACSF1, ArrowHead, BasicMotions, GunPoint,
ItalyPowerDemand, JapaneseVowels, OSULeaf, PLAID, …; nothing is downloaded when they are
read). Japanese Vowels (Kudo et al. 1999) is the largest multivariate one with more than a
handful of samples per class: 9 speakers, 12 LPC cepstrum channels over 7–29 frames,
270 training and 370 test utterances. (BasicMotions, the accelerometer task, has 40 + 40:
too few for a mean ± std to say anything.)

Where the files come from, in order: an installed ``sktime``; a wheel in
``<edgeqd cache>/wheels``; ``pip download --no-deps sktime==1.2.0`` into that folder (the
registry, once). Only the ``.ts`` files are read — sktime itself is never imported.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

SKTIME_VERSION = "1.2.0"
_MEMBER = "sktime/datasets/data/JapaneseVowels/JapaneseVowels_{split}.ts"


def _wheel_folder() -> Path:
    from edgeqd.data import cache_dir

    return cache_dir() / "wheels"


def _read_member(split: str) -> str:
    """The text of JapaneseVowels_{split}.ts from an installed sktime or its wheel."""
    member = _MEMBER.format(split=split)
    spec = importlib.util.find_spec("sktime")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]).parent / member
        if path.is_file():
            return path.read_text()
    folder = _wheel_folder()
    wheels = sorted(folder.glob("sktime-*.whl"))
    if not wheels:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        f"sktime=={SKTIME_VERSION}", "-d", str(folder)], check=True, capture_output=True)
        wheels = sorted(folder.glob("sktime-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        return wheel.read(member).decode()


def parse_ts(text: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Samples (each T×C, lengths may differ) and class labels of a ``.ts`` file.

    Args:
        text: the file's text: ``@`` header lines, then one sample per line with the
            channels separated by ``:`` (values by ``,``) and the class label last.
    """
    samples, labels = [], []
    in_data = False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower() == "@data":
            in_data = True
            continue
        if not in_data:
            continue
        *channels, label = line.split(":")
        samples.append(np.array([[float(v) for v in ch.split(",")] for ch in channels], np.float32).T)
        labels.append(label)
    return samples, np.array(labels)


def japanese_vowels():
    """(x_train, y_train, x_test, y_test): channels standardised on the training split, then zero-padded
    at the end to the longest utterance (zero = the channel mean), labels 0..8."""
    train, y_train = parse_ts(_read_member("TRAIN"))
    test, y_test = parse_ts(_read_member("TEST"))
    classes = sorted(set(y_train), key=int)
    index = {c: i for i, c in enumerate(classes)}
    stacked = np.concatenate(train)
    mean, std = stacked.mean(axis=0), stacked.std(axis=0) + 1e-6
    length = max(len(s) for s in train + test)

    def pad(samples):
        out = np.zeros((len(samples), length, samples[0].shape[1]), np.float32)
        for i, s in enumerate(samples):
            out[i, :len(s)] = (s - mean) / std
        return out

    return (pad(train), np.array([index[c] for c in y_train]), pad(test), np.array([index[c] for c in y_test]),
            [f"speaker_{c}" for c in classes])
