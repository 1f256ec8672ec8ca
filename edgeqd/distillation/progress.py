"""What a distillation run shows on stderr: a progress bar per epoch with every loss term,
and one summary line per epoch with the monitored validation figure."""

from __future__ import annotations

from typing import Optional, Sequence

import tf_keras as keras


class EpochProgress(keras.callbacks.Callback):
    """A rich progress bar per epoch with each loss term, and a summary line per epoch.

    Args:
        epochs: the most epochs of the run.
        steps: training steps per epoch.
        keeper: the run's :class:`~edgeqd.distillation.checkpoints.BestEpochKeeper`
            (its monitor and best epoch are shown).
        terms: the figures to show, in order (``loss``, ``ce``, ``kd`` …).
    """

    def __init__(self, epochs: int, steps: int, keeper, terms: Sequence[str]):
        super().__init__()
        from rich.console import Console

        self.console = Console(stderr=True)
        self.epochs, self.steps, self.keeper, self.terms = epochs, steps, keeper, tuple(terms)
        self.progress = None
        self.task = None

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if not self.console.is_terminal:
            return
        self.progress = Progress(TextColumn(f"epoch {epoch + 1}/{self.epochs}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[figures]}"),
                                 console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.steps, figures="")

    def _figures(self, logs: dict, prefix: str = "") -> str:
        shown = [f"{k} {float(logs[prefix + k]):.4f}" for k in self.terms if prefix + k in logs]
        return "  ".join(shown)

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, figures=self._figures(logs or {}))

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        logs = logs or {}
        monitor = self.keeper.monitor
        marker = "  [bold green]best[/]" if self.keeper.best_epoch == epoch + 1 else ""
        value = logs.get(monitor)
        self.console.print(f"epoch {epoch + 1}/{self.epochs}  {self._figures(logs)}  "
                           f"{monitor} {float(value):.4f}{marker}" if value is not None else
                           f"epoch {epoch + 1}/{self.epochs}  {self._figures(logs)}", highlight=False)
