"""Hostile outputs (issue 10): ``--force`` never destroys the run's inputs or a folder it does
not own, file outputs are never put in a folder's place, and a full disk is one line.

Every case asserts the documented exit code, one ``error:`` line and no traceback, and
that the inputs are byte-identical afterwards (sha256 of every file before and after).
Signals and stale temporaries are in ``test_interrupts.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeqd.cli import cli
from edgeqd.errors import UsageError
from hostile_helpers import edgeqd_command, snapshot


@pytest.fixture()
def inputs(tmp_path, small_model_path, small_npz, monkeypatch) -> Path:
    """A folder S of inputs (model, teacher, data, a run folder, bench files, an image folder);
    the current folder is its parent and HOME is a private folder (a broken check must not
    be able to touch the real one)."""
    folder = tmp_path / "S"
    folder.mkdir()
    shutil.copy(small_model_path, folder / "m.keras")
    shutil.copy(small_model_path, folder / "t.keras")
    shutil.copy(small_npz, folder / "d.npz")
    (folder / "run").mkdir()
    (folder / "run" / "manifest.json").write_text(json.dumps({"artifacts": [], "data": {}}))
    (folder / "b.json").write_text(json.dumps({"command": "bench", "rows": []}))
    (folder / "a.tflite").write_bytes(b"not really a model")
    (folder / "benchmark_model").write_bytes(b"#!/bin/sh\n")
    (folder / "images" / "shirt").mkdir(parents=True)
    (folder / "images" / "shirt" / "0.png").write_bytes(b"png")
    (tmp_path / "L").symlink_to(folder, target_is_directory=True)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return folder


def run_cli(*args) -> "click.testing.Result":
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_error_line(result, code: int, *words: str) -> str:
    """Exit ``code``, exactly one ``error:`` line (returned), no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


OVERLAPS = {
    # name: (arguments, words the message must carry)
    "convert --out holds the model and data": (
        ["convert", "S/m.keras", "--data", "S/d.npz", "--out", "S", "--force"], ["holds the input"]),
    "convert --out is the model": (
        ["convert", "S/m.keras", "--data", "S/d.npz", "--out", "S/m.keras", "--force"], ["is the input"]),
    "convert --out is the data": (
        ["convert", "S/m.keras", "--data", "S/d.npz", "--out", "S/d.npz", "--force"], ["is the input"]),
    "convert --out inside the image folder": (
        ["convert", "S/m.keras", "--data", "S/images", "--out", "S/images/out", "--force"], ["inside the input"]),
    "convert --out is a symlink to the inputs' folder": (
        ["convert", "S/m.keras", "--data", "S/d.npz", "--out", "L", "--force"], ["holds the input"]),
    "convert --out through .. to the inputs' folder": (
        ["convert", "S/m.keras", "--data", "S/d.npz", "--out", "S/run/..", "--force"], ["holds the input"]),
    "convert --distill-from holds the teacher": (
        ["convert", "--distill-from", "S/t.keras", "--data", "fashion-mnist", "--out", "S", "--force"],
        ["holds the input"]),
    "convert --student path is the output": (
        ["convert", "--distill-from", "S/t.keras", "--student", "S/m.keras", "--data", "S/d.npz",
         "--out", "S/m.keras", "--force"], ["is the input"]),
    "quantize --out holds the model": (
        ["quantize", "S/m.keras", "--data", "S/d.npz", "--mode", "ptq", "--out", "S", "--force"],
        ["holds the input"]),
    "quantize --out is the teacher": (
        ["quantize", "S/m.keras", "--data", "S/d.npz", "--teacher", "S/t.keras", "--out", "S/t.keras", "--force"],
        ["is the input"]),
    "distill --out is the teacher": (
        ["distill", "--teacher", "S/t.keras", "--data", "S/d.npz", "--out", "S/t.keras", "--force"],
        ["is the input"]),
    "distill --out is the student model": (
        ["distill", "--teacher", "S/t.keras", "--student", "S/m.keras", "--data", "S/d.npz",
         "--out", "S/m.keras", "--force"], ["is the input"]),
    "report -o is a run's manifest": (
        ["report", "S/run", "-o", "S/run/manifest.json", "--force"], ["is the input"]),
    "report -o is the bench file": (
        ["report", "S/b.json", "-o", "S/b.json", "--force"], ["is the input"]),
    "report -o holds the run": (
        ["report", "S/run", "-o", "S", "--force"], ["holds the input"]),
    "bench --json is the artifact": (
        ["bench", "S/a.tflite", "--device", "local", "--json", "S/a.tflite", "--force"], ["is the input"]),
    "bench --json is the benchmark binary": (
        ["bench", "S/a.tflite", "--device", "local", "--benchmark-binary", "S/benchmark_model",
         "--json", "S/benchmark_model", "--force"], ["is the input"]),
}


@pytest.mark.parametrize("case", sorted(OVERLAPS))
def test_output_overlapping_an_input_is_refused(inputs, case):
    args, words = OVERLAPS[case]
    before = snapshot(inputs.parent)
    result = run_cli(*args)
    assert_one_error_line(result, 2, *words)
    assert snapshot(inputs.parent) == before


@pytest.mark.parametrize("out, words", [
    (".", ["is the current folder"]), ("./", ["is the current folder"]), ("sub/..", ["is the current folder"]),
    ("..", ["ancestor of the current folder"]), ("/", ["filesystem root"]), ("~", ["your home folder"]),
])
def test_output_replacing_cwd_root_or_home_is_refused(inputs, monkeypatch, out, words):
    """Today's ``--out .`` was a ValueError traceback leaving a complete output in ``../..tmp-XXXX``."""
    here = inputs.parent / "a" / "b"  # so that ".." is still inside this test's own folder
    (here / "sub").mkdir(parents=True)
    monkeypatch.chdir(here)
    out = os.environ["HOME"] if out == "~" else out
    before = snapshot(inputs.parent)
    result = run_cli("convert", inputs / "m.keras", "--data", inputs / "d.npz", "--out", out, "--force")
    assert_one_error_line(result, 2, *words)
    assert snapshot(inputs.parent) == before


def test_report_beside_a_runs_manifest_is_allowed(converted, tmp_path):
    """``-o RUN/report.html`` (the documented place) adds a file and destroys nothing."""
    run = tmp_path / "run"
    shutil.copytree(converted.out, run)
    before = snapshot(run)
    result = run_cli("report", run, "-o", run / "report.html")
    assert result.exit_code == 0, result.output
    after = snapshot(run)
    assert after.pop("report.html")
    assert after == before


def test_python_api_refuses_overlaps_too(inputs):
    """The library entry points check, not only the CLI."""
    from edgeqd.distillation import distill
    from edgeqd.pipeline import convert
    from edgeqd.quantization import quantize
    from edgeqd.reporting import write_report

    before = snapshot(inputs.parent)
    calls = [lambda: convert(inputs / "m.keras", str(inputs / "d.npz"), inputs, force=True),
             lambda: quantize(inputs / "m.keras", str(inputs / "d.npz"), inputs, force=True),
             lambda: distill(inputs / "t.keras", str(inputs / "d.npz"), out=inputs / "t.keras", force=True),
             lambda: write_report([inputs / "run"], inputs / "run" / "manifest.json", force=True),
             lambda: convert(inputs / "m.keras", str(inputs / "d.npz"), ".", force=True)]
    for call in calls:
        with pytest.raises(UsageError):
            call()
    assert snapshot(inputs.parent) == before


@pytest.mark.parametrize("command", ["report", "bench", "distill"])
def test_file_output_onto_a_folder_is_refused_before_any_work(inputs, command):
    target = inputs.parent / "target.keras"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    option = {"report": ["report", "S/run", "-o"], "bench": ["bench", "S/a.tflite", "--device", "local", "--json"],
              "distill": ["distill", "--teacher", "S/t.keras", "--data", "S/d.npz", "--epochs", "1", "--out"]}[command]
    before = snapshot(inputs.parent)
    result = run_cli(*option, target, "--force")
    assert_one_error_line(result, 2, "is a folder")
    assert snapshot(inputs.parent) == before  # the folder, its file, and no .target.keras.* beside it


def test_force_onto_a_symlinked_out_leaves_no_old_link(converted, tmp_path):
    """The symlink is replaced by the new output; what it pointed to is left alone (issue 10, item 14)."""
    from edgeqd.atomic import atomic_dir

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(converted.out, elsewhere)
    before = snapshot(elsewhere)
    link = tmp_path / "linkout"
    link.symlink_to(elsewhere, target_is_directory=True)
    with atomic_dir(link, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert not link.is_symlink() and (link / "new.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "linkout"]
    assert snapshot(elsewhere) == before


# ---------------------------------------------------------------- a full disk

@pytest.fixture()
def tiny_disk(tmp_path):
    """A mounted tmpfs of a given size in KiB (needs root): ``tiny_disk(64)``."""
    mounts = []

    def mount(kib: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs to fill the disk needs root")
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()[:200]}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def run_subprocess(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*edgeqd_command(), *map(str, args)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def assert_disk_full(done: subprocess.CompletedProcess, disk: Path) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(disk) in errors[0] and "no space left" in errors[0], done.stderr[-3000:]
    assert list(disk.iterdir()) == []  # nothing left: no output, no temporary, no checkpoint


@pytest.mark.slow
def test_convert_on_a_full_disk(inputs, tiny_disk):
    disk = tiny_disk(64)
    before = snapshot(inputs)
    done = run_subprocess("convert", inputs / "m.keras", "--data", inputs / "d.npz", "--out", disk / "out",
                          "--eval-samples", 50, "--calibration-samples", 20)
    assert_disk_full(done, disk)
    # convert captures TensorFlow's C++ log: it is not replayed for a full disk, the error line is all.
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert snapshot(inputs) == before


@pytest.mark.slow
@pytest.mark.parametrize("kib", [16, 64])  # 16: the first epoch's checkpoint fails; 64: saving the student
def test_distill_on_a_full_disk(inputs, tiny_disk, kib):
    disk = tiny_disk(kib)
    before = snapshot(inputs)
    done = run_subprocess("distill", "--teacher", inputs / "t.keras", "--data", inputs / "d.npz", "--epochs", 1,
                          "--quiet", "--out", disk / "student.keras")
    assert_disk_full(done, disk)
    assert snapshot(inputs) == before


@pytest.mark.parametrize("markdown", [False, True])
def test_report_on_a_full_disk(converted, tiny_disk, markdown):
    disk = tiny_disk(16)  # the HTML report of one run is ~45 KB; its Markdown plot ~30 KB
    before = snapshot(converted.out)
    result = run_cli("report", converted.out, "-o", disk / ("r.md" if markdown else "r.html"),
                     *(["--markdown"] if markdown else []))
    assert_one_error_line(result, 2, str(disk), "no space left")
    assert list(disk.iterdir()) == []
    assert snapshot(converted.out) == before
