"""Fetching the model a --model reference names, with a download bar on stderr."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from dfx.cli.console import stderr
from dfx.cli.flags import GlobalFlags
from dfx.cli.option_names import with_option_names


class DownloadBar:
    """A :class:`dfx.progress.ProgressReporter` that draws downloads in bytes on stderr."""

    def __init__(self) -> None:
        self.console = stderr()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=GlobalFlags.quiet,
            transient=True,
        )
        self.tasks: dict[str, int] = {}

    def start(self, task: str, total: int | None, description: str) -> None:
        self.finish(task)
        self.progress.start()
        self.tasks[task] = self.progress.add_task(description, total=total)

    def advance(self, task: str, steps: int = 1, **fields: object) -> None:
        if task in self.tasks:
            self.progress.update(self.tasks[task], advance=steps)

    def finish(self, task: str) -> None:
        task_id = self.tasks.pop(task, None)
        if task_id is not None:
            self.progress.remove_task(task_id)
        if not self.tasks:
            self.progress.stop()

    def notice(self, message: str) -> None:
        if not GlobalFlags.quiet:
            self.console.print(with_option_names(message), markup=False, highlight=False)


def check_model(model: str, sha256: str | None = None) -> None:
    """A --model reference and --sha256 checked for form, and a local file for being one,
    without a download or torch: mistakes fail at once."""
    from dfx.checkpoint import check_model_path
    from dfx.model_source import parse_reference

    if parse_reference(model, sha256).kind == "path":
        check_model_path(model)


def fetch_model(model: str, sha256: str | None = None) -> str:
    """The local file of a --model reference, downloaded into the cache if need be."""
    from dfx.model_source import resolve_model

    return str(resolve_model(model, sha256, progress=DownloadBar()))
