"""Consoles, progress bars and the lists of problems that commands show on stderr.

Results go to standard output; progress, notices and warnings to standard error.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dfx import distributed
from dfx.cli.flags import GlobalFlags


def stdout() -> Console:
    """Console for results (tables) on standard output; silent on ranks other than 0."""
    return Console(highlight=False, quiet=not distributed.is_main())


def stderr() -> Console:
    """Console for progress, notices and warnings on standard error; silent off rank 0."""
    return Console(stderr=True, highlight=False, quiet=not distributed.is_main())


def print_json(text: str) -> None:
    """Write JSON to stdout exactly, with no rich formatting (rank 0 only)."""
    if not distributed.is_main():
        return
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class RichProgress:
    """A :class:`dfx.progress.ProgressReporter` that draws rich progress bars on stderr."""

    _kept = ("epochs",)

    def __init__(self, enabled: bool = True) -> None:
        self.console = stderr()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            disable=not enabled or GlobalFlags.quiet,
        )
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def start(self, task: str, total: int | None, description: str) -> None:
        self.finish(task)
        self.tasks[task] = self.progress.add_task(description, total=total, info="")

    def advance(self, task: str, steps: int = 1, **fields: object) -> None:
        if task in self.tasks:
            info = "  ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
            self.progress.update(self.tasks[task], advance=steps, info=info)

    def finish(self, task: str) -> None:
        task_id = self.tasks.pop(task, None)
        if task_id is not None and task not in self._kept:
            self.progress.remove_task(task_id)

    def notice(self, message: str) -> None:
        if not GlobalFlags.quiet:
            self.progress.console.print(message, markup=False, highlight=False)


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def report_list(title: str, lines: list[str], shown: int = 5) -> None:
    """Name the first few items of a list of problems on stderr, under a title with the count."""
    if not lines:
        return
    console = stderr()
    console.print(f"[yellow]{title}[/yellow]")
    for line in lines[:shown]:
        console.print(f"  {line}", markup=False)
    if len(lines) > shown:
        console.print(f"  ... and {len(lines) - shown} more", markup=False)


def report_failures(failures, what: str = "image") -> None:
    """Name the first few unreadable inputs on stderr, with their count."""
    report_list(
        f"skipped {len(failures)} unreadable {what}(s):",
        [f"{f.source}: {f.reason}" for f in failures],
    )


def report_skipped(reasons: dict[str, str]) -> None:
    """Name the first few files passed over because they are not images, and why."""
    lines = [f"{name}: {reason}" for name, reason in reasons.items()]
    report_list(f"skipped {len(lines)} non-image file(s):", lines)


def report_manifest_checks(manifest) -> None:
    """Say which rows --allow-changed left out, and when a manifest cannot be checked."""
    report_list(
        f"left out {len(manifest.dropped)} manifest file(s) that changed or vanished:",
        [f"{name}: {reason}" for name, reason in manifest.dropped],
    )
    if not manifest.fingerprinted and not GlobalFlags.quiet:
        stderr().print(
            "[yellow]notice:[/yellow] this manifest has no size/hash columns (an older dfx "
            "wrote it), so changed files go unnoticed; re-run 'dfx split' to add them."
        )


def report_labelled_sets(labelled) -> None:
    """What reading labelled sets found: files that are not images, the manifest's checks."""
    if labelled.manifest is not None:
        report_manifest_checks(labelled.manifest)
    report_skipped(labelled.skipped)
