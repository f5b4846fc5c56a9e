"""Terminal rendering of training progress: a rich progress bar plus char-rnn style samples."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    """Consumes trainer events and draws them."""

    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            TextColumn("step {task.fields[step]} loss {task.fields[loss]} val {task.fields[val]}"),
            TextColumn("{task.fields[rate]} chars/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> TrainProgress:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.task is not None:
            self.bar.__exit__(et, e, tb)

    def _start_bar(self) -> None:
        # Started on the trainer's first event, so input errors print without an empty bar.
        self.bar.__enter__()
        self.task = self.bar.add_task("train", total=1.0, step=0, loss="-", val="-", rate="-")

    def on_event(self, event: dict[str, Any]) -> None:
        """Update the bar; print evaluations with their sample."""
        kind = event.get("event")
        if kind == "start":
            self._start_bar()
            self.console.print(
                f"{event['params']:,} parameters, vocab {event['vocab']}, "
                f"{event['train_chars']:,} train / {event['val_chars']:,} val chars"
                + (f", resumed at step {event['resumed_at_step']}" if event["resumed_at_step"] else "")
                + (f", new characters: {''.join(event['added_chars'])!r}" if event["added_chars"] else "")
            )
        if kind in ("step", "eval") and self.task is not None:
            fields = {"step": event["step"], "loss": f"{event['train_loss']:.3f}", "rate": f"{event['chars_per_s']:,}"}
            if kind == "eval":
                fields["val"] = f"{event['val_loss']:.3f}"
            self.bar.update(self.task, completed=event["progress"], **fields)
        if kind == "eval":
            self.console.print(f"[dim]step {event['step']} val {event['val_loss']:.4f}[/dim]\n{event['sample']}\n")

    def summary(self, result: dict[str, Any]) -> None:
        """Print the final figures."""
        losses = result["losses"]
        self.console.print(
            f"[bold]done[/bold]: {result['steps']} steps in {result['seconds']} s, {result['chars_per_s']:,} chars/s; "
            f"val block {losses['val_block']} ({losses['val_block_bpc']} bpc), "
            f"stateful {losses.get('val_stateful')} ({losses.get('val_stateful_bpc')} bpc) → {result['out']}"
        )
