"""Mutations for the bounded fuzz loops (issue 10), shared by the inspect and the npz fuzz tests.

Mutations: flipped bytes, truncation, inserted and deleted runs, and 32-bit words set to
extremes (the offsets and lengths flatbuffers, protobuf and zip headers are built from);
a share of them aims at the file's tail, where a ``.tflite`` keeps its packed labels zip.
"""

from __future__ import annotations

import random

ITERATIONS = 200
SECONDS = 10  # each loop must stay well inside this on the 2-core CI machines


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One random mutation of ``data`` and a short description of it."""
    b = bytearray(data)
    if rng.random() < 0.3 and len(b) > 64:  # the tail: a .tflite's labels zip, a zip's central directory
        cut = len(b) - min(len(b) // 2, 400)
        tail, what = mutate(bytes(b[cut:]), rng)
        return bytes(b[:cut]) + tail, f"tail {cut}: {what}"
    kind = rng.randrange(5)
    if kind == 0:
        positions = [rng.randrange(len(b)) for _ in range(rng.randint(1, 8))]
        for pos in positions:
            b[pos] = rng.randrange(256)
        return bytes(b), f"bytes set at {positions}"
    if kind == 1:
        keep = rng.randrange(len(b))
        return bytes(b[:keep]), f"truncated to {keep}"
    if kind == 2:
        pos = rng.randrange(len(b) + 1)
        b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        return bytes(b), f"inserted at {pos}"
    if kind == 3:
        pos, n = rng.randrange(len(b)), rng.randint(1, 64)
        del b[pos:pos + n]
        return bytes(b), f"deleted {n} at {pos}"
    pos = rng.randrange(max(len(b) - 4, 1))
    word = rng.choice([b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\x00\x00\x00\x00",
                       rng.randrange(1 << 32).to_bytes(4, "little")])
    b[pos:pos + 4] = word
    return bytes(b), f"word {word.hex()} at {pos}"
