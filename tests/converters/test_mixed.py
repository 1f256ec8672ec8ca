"""The tflite-mixed / onnx-mixed row note (the search itself: tests/quantization/test_mixed_precision.py)."""

from __future__ import annotations

from edgeqd.converters.mixed import _note

_SEARCH = {"drop_pts": 0.5, "se_pts": 0.2, "target_pts": 0.67, "max_drop_pts": 1.0, "z": 1.64, "met": True}


def _plan(bits: list[int]) -> dict:
    return {"search": dict(_SEARCH), "layers": [{"layer": f"l{i}", "bits": b} for i, b in enumerate(bits)]}


def test_note_names_a_few_int8_layers_and_counts_the_rest():
    note = _note(_plan([8] * 10 + [4]))
    assert note.startswith("1 of 11 weighted layers int4, int8: l0, l1, l2, l3, l4, l5, … (4 more); search drop 0.5")
    assert "l6" not in note


def test_note_says_all_when_every_layer_is_int8():
    plan = _plan([8] * 23)
    plan["search"]["met"] = False
    note = _note(plan)
    assert note.startswith("0 of 23 weighted layers int4, int8: all; ") and "this is the int8 model" in note


def test_note_with_every_layer_int4():
    assert _note(_plan([4, 4])).startswith("2 of 2 weighted layers int4, int8: none; ")
