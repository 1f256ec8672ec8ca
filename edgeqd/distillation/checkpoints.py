"""Early stopping, the best epoch's weights, and the checkpoint folder that lets an
interrupted run go on (``--resume``).

The folder sits beside the output (:func:`checkpoint_folder`) and holds ``state.json``
(the commit point: history, best figure, patience counter, the current tag), the last
epoch's TensorFlow checkpoint (student, projections, optimizer) and the best weights.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional, Union

import numpy as np
import tensorflow as tf
import tf_keras as keras

from edgeqd.errors import UsageError


def checkpoint_folder(out: Union[str, Path]) -> Path:
    """Where a run writing ``out`` keeps its checkpoints: a hidden folder beside it.

    Args:
        out: the student's output path.

    >>> checkpoint_folder("models/student.keras").name
    '.student.keras.checkpoint'
    """
    out = Path(out)
    return out.with_name(f".{out.name}.checkpoint")


class BestEpochKeeper(keras.callbacks.Callback):
    """Early stopping on the monitored validation figure, best weights kept, history, checkpoints.

    Args:
        student: the model whose weights are kept.
        monitor: the figure to maximise (``val_accuracy`` or ``val_agreement``).
        patience: epochs without a better figure before stopping; None never stops early.
        checkpoints: where each epoch is checkpointed, or None.
        state: the state a resumed run starts from (``state.json``), or None.
    """

    def __init__(self, student, monitor: str, patience: Optional[int], checkpoints: Optional["Checkpoints"],
                 state: Optional[dict] = None):
        super().__init__()
        self.student = student
        self.monitor = monitor
        self.patience = patience
        self.checkpoints = checkpoints
        state = state or {}
        self.history: list[dict] = list(state.get("history", []))
        self.best = float(state.get("best", -math.inf))
        self.best_epoch = int(state.get("best_epoch", 0))
        self.wait = int(state.get("wait", 0))
        self.epochs_done = int(state.get("epochs_done", 0))
        self.best_weights: Optional[list] = None
        self.stopped_early = False

    @property
    def patience_spent(self) -> bool:
        """Whether early stopping has already ended the run (e.g. before it was interrupted)."""
        return self.patience is not None and self.wait >= self.patience

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        logs = logs or {}
        row = {"epoch": epoch + 1, **{k: round(float(v), 6) for k, v in logs.items()}}
        self.history.append(row)
        value = logs.get(self.monitor)
        if value is not None and float(value) > self.best:
            self.best, self.best_epoch, self.wait = float(value), epoch + 1, 0
            self.best_weights = [w.copy() for w in self.student.get_weights()]
        else:
            self.wait += 1
        self.epochs_done = epoch + 1
        if self.checkpoints is not None:
            self.checkpoints.save(self)
        if self.patience_spent:
            self.model.stop_training = True
            self.stopped_early = True

    def state(self) -> dict:
        """What ``state.json`` records of the run so far."""
        return {"history": self.history, "best": self.best, "best_epoch": self.best_epoch,
                "wait": self.wait, "epochs_done": self.epochs_done}


class Checkpoints:
    """The run's checkpoint folder beside the output.

    Args:
        folder: the folder (see :func:`checkpoint_folder`).
        distiller: the :class:`~edgeqd.distillation.distiller.Distiller` being trained.
        chief: whether this process keeps what it writes (the others write and throw away).
        settings: the run's settings, recorded in ``state.json``.
    """

    def __init__(self, folder: Path, distiller, chief: bool, settings: dict):
        self.folder = folder
        self.distiller = distiller
        self.chief = chief
        self.settings = settings

    def _checkpoint(self):
        return tf.train.Checkpoint(student=self.distiller.student, projections=self.distiller.projections,
                                   optimizer=self.distiller.optimizer)

    def exists(self) -> bool:
        """Whether a committed checkpoint is there."""
        return (self.folder / "state.json").is_file()

    def save(self, keeper: BestEpochKeeper) -> None:
        """Checkpoint the epoch; on a full disk drop the partial epoch and raise NoRoomError (exit 2).

        Args:
            keeper: the run's keeper (its state and best weights are saved).
        """
        from edgeqd.atomic import no_room, no_room_error

        try:
            self._save(keeper)
        except Exception as exc:
            full = no_room(exc)
            if full is None:
                raise
            committed = json.loads((self.folder / "state.json").read_text()).get("tag") if self.exists() else None
            for partial in [*self.folder.glob("epoch-*"), *self.folder.glob(".state.json.tmp-*")]:
                if partial.name != committed:
                    shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink()
            raise no_room_error(full, self.folder.parent) from None

    def _save(self, keeper: BestEpochKeeper) -> None:
        # Every worker writes (saving may run collective ops); only the chief keeps what it wrote.
        # (scratch names carry the PID so that a later run removes those of a killed one)
        folder = self.folder if self.chief else Path(tempfile.mkdtemp(prefix=f"edgeqd-work-{os.getpid()}-ckpt-"))
        folder.mkdir(parents=True, exist_ok=True)
        tag = f"epoch-{keeper.epochs_done:04d}-{time.monotonic_ns()}"
        self._checkpoint().write(str(folder / tag / "ckpt"))
        if keeper.best_weights is not None:
            np.savez(folder / f"{tag}/best.npz", *keeper.best_weights)
        elif (folder / "state.json").is_file():  # best unchanged: carry it over
            previous = json.loads((folder / "state.json").read_text()).get("tag")
            if previous and (folder / previous / "best.npz").is_file():
                shutil.copy2(folder / previous / "best.npz", folder / tag / "best.npz")
        state = {"tag": tag, **keeper.state(), "settings": self.settings}
        tmp = folder / f".state.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(state, indent=2, default=str))
        os.replace(tmp, folder / "state.json")  # the commit point: older tags are garbage from here on
        for old in folder.glob("epoch-*"):
            if old.name != tag:
                shutil.rmtree(old, ignore_errors=True)
        if not self.chief:
            shutil.rmtree(folder, ignore_errors=True)

    def restore(self) -> tuple[dict, Optional[list]]:
        """Load the last epoch into the distiller; return (state, best weights or None).

        Raises:
            UsageError: the checkpoint was written for another student or teacher.
        """
        state = json.loads((self.folder / "state.json").read_text())
        status = self._checkpoint().read(str(self.folder / state["tag"] / "ckpt"))
        try:
            status.assert_existing_objects_matched()
        except AssertionError as exc:
            raise UsageError(f"the checkpoint in {self.folder} does not match this student/teacher "
                             f"({str(exc).splitlines()[0][:200]}); remove the folder or drop --resume") from None
        best = None
        best_file = self.folder / state["tag"] / "best.npz"
        if best_file.is_file():
            with np.load(best_file) as archive:
                best = [archive[f"arr_{i}"] for i in range(len(archive.files))]
        return state, best

    def remove(self) -> None:
        """Delete the folder (the chief only)."""
        if self.chief:
            shutil.rmtree(self.folder, ignore_errors=True)
