"""Consoles, progress bars and the lists of problems that commands show on stderr.

Results go to standard output; progress, notices ("wrote ...") and warnings to standard
error, so ``dfx COMMAND > result`` keeps results alone. ``--quiet`` silences progress and
notices, not warnings or errors. ``NO_COLOR`` and non-terminals get plain text, without
colour or bold/italic escapes. A reader of stdout that goes away ends the command with
exit code 141 and no message (:class:`DfxConsole`, ``handle_errors``).
"""

from __future__ import annotations

import os
import sys
import time

from rich.console import Console
from rich.markup import escape

from dfx import distributed
from dfx.cli.flags import GlobalFlags
from dfx.cli.option_names import with_option_names


def plain_text() -> bool:
    """Whether ``NO_COLOR`` asks for text without colour or other styles (any non-empty value)."""
    return os.environ.get("NO_COLOR", "") != ""


class DfxConsole(Console):
    """A rich console whose broken pipe is left to ``handle_errors`` (exit 141, no message).

    Rich's own handling exits with code 1, which a shell reads as a failure.
    """

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


def make_console(to_stderr: bool = False) -> Console:
    """A console for stdout or stderr: plain under ``NO_COLOR``, silent off rank 0."""
    return DfxConsole(
        stderr=to_stderr,
        highlight=False,
        quiet=not distributed.is_main(),
        color_system=None if plain_text() else "auto",
    )


def stdout() -> Console:
    """Console for results (tables) on standard output; silent on ranks other than 0."""
    return make_console()


def stderr() -> Console:
    """Console for progress, notices and warnings on standard error; silent off rank 0."""
    return make_console(to_stderr=True)


def notice(message: str) -> None:
    """A one-line notice on stderr ("wrote FILE", a chosen setting); silenced by --quiet."""
    if not GlobalFlags.quiet:
        message = with_option_names(message)
        stderr().print(message, markup=False, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """A one-sentence warning on stderr, prefixed ``warning:``; shown under --quiet too."""
    stderr().print(f"[yellow]warning:[/yellow] {escape(with_option_names(message))}",
                   highlight=False, soft_wrap=True)  # fmt: skip


def report_written(paths) -> None:
    """Say on stderr which files a command wrote (silenced by --quiet)."""
    for path in paths:
        notice(f"wrote {path}")


def print_json(text: str) -> None:
    """Write JSON to stdout exactly, with no rich formatting (rank 0 only)."""
    print_text(text)


def print_text(text: str) -> None:
    """Write a line of results (JSON, CSV, tab-separated rows) to stdout as it is (rank 0)."""
    if not distributed.is_main():
        return
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def print_rows(table, lines) -> None:
    """Results as a rich table on a terminal, else as tab-separated lines (pipes, files).

    ``table`` and ``lines`` are callables that build the one needed: a rich renderable and
    the text of :func:`dfx.cli.tables.tsv`.
    """
    console = stdout()
    if console.is_terminal:
        console.print(table())
    else:
        print_text(lines())


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has already closed it (checked without writing).

    A command that would only write into a closed pipe stops before any work (exit 141).
    """
    import select

    try:
        descriptor = sys.stdout.fileno()
        poller = select.poll()
        poller.register(descriptor, 0)  # POLLERR and POLLHUP are always reported
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no real file (a test runner's buffer)
        return False


class RichProgress:
    """A :class:`dfx.progress.ProgressReporter` on stderr: bars on a terminal, else log lines.

    When stderr is a file or a pipe (a log, CI), tasks write plain lines instead of live
    bars: a task starts, every 10% of it (or 30 s), and ends; the epochs of training one
    line each. A task inside another (an epoch's batches) writes a line every 30 s only.
    """

    _kept = ("epochs",)

    def __init__(self, enabled: bool = True) -> None:
        from rich.progress import (  # here: commands that show no progress start faster
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = stderr()
        self.enabled = enabled and not GlobalFlags.quiet
        self.lines = not self.console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            disable=not self.enabled or self.lines,
        )
        self.tasks: dict[str, int] = {}
        self.logged: dict[str, _LoggedTask] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def start(self, task: str, total: int | None, description: str) -> None:
        self.finish(task)
        self.tasks[task] = self.progress.add_task(description, total=total, info="")
        if self.lines and self.enabled:
            logged = _LoggedTask(description, total, every_step=task in self._kept,
                                 nested=bool(self.logged))  # fmt: skip
            self.logged[task] = logged
            if not logged.nested:
                self._log(f"{description}: started" + (f", {total} steps" if total else ""))

    def advance(self, task: str, steps: int = 1, **fields: object) -> None:
        if task in self.tasks:
            info = "  ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
            self.progress.update(self.tasks[task], advance=steps, info=info)
            logged = self.logged.get(task)
            if logged is not None and logged.step(steps):
                self._log(logged.line(info))

    def finish(self, task: str) -> None:
        task_id = self.tasks.pop(task, None)
        logged = self.logged.pop(task, None)
        if logged is not None and not logged.nested and not logged.reported_last:
            self._log(logged.line(""))
        if task_id is not None and task not in self._kept:
            self.progress.remove_task(task_id)

    def notice(self, message: str) -> None:
        if not GlobalFlags.quiet:
            self.progress.console.print(with_option_names(message), markup=False, highlight=False)

    def _log(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


class _LoggedTask:
    """When a task shown as log lines is worth another line."""

    EVERY_SECONDS = 30.0

    def __init__(self, description: str, total: int | None, every_step: bool, nested: bool):
        self.description = description
        self.total = total
        self.every_step = every_step
        self.nested = nested
        self.done = 0
        self.started = self.last = time.monotonic()
        self.next_share = 0.1
        self.reported_last = False

    def step(self, steps: int) -> bool:
        self.done += steps
        now = time.monotonic()
        share = self.done / self.total if self.total else 0.0
        due = now - self.last >= self.EVERY_SECONDS
        if not self.nested:
            due = due or self.every_step or (bool(self.total) and share >= self.next_share)
        if due:
            self.last = now
            while self.total and share >= self.next_share:
                self.next_share += 0.1
        self.reported_last = due and bool(self.total) and self.done >= self.total
        return due

    def line(self, info: str) -> str:
        elapsed = time.monotonic() - self.started
        done = f"{self.done}/{self.total}" if self.total else str(self.done)
        left = ""
        if self.total and 0 < self.done < self.total:
            left = f", {_clock(elapsed * (self.total - self.done) / self.done)} left"
        text = f"{self.description}: {done}, {_clock(elapsed)} elapsed{left}"
        return f"{text}  {info}" if info else text


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def report_list(title: str, lines: list[str], shown: int = 5) -> None:
    """Name the first few items of a list of problems on stderr, under a title with the count."""
    if not lines:
        return
    console = stderr()
    console.print(f"[yellow]{title}[/yellow]")
    for line in lines[:shown]:
        # One item a line, never folded at the console's width: a path stays whole to copy
        # or grep, however long.
        console.print(f"  {line}", markup=False, soft_wrap=True)
    if len(lines) > shown:
        console.print(f"  ... and {len(lines) - shown} more", markup=False)


def report_failures(failures, what: str = "image") -> None:
    """Name the first few unreadable inputs on stderr, with their count."""
    report_list(
        f"skipped {len(failures)} unreadable {what}(s):",
        [f"{f.source}: {f.reason}" for f in failures],
    )


def report_warnings(lines: list[str]) -> None:
    """Name the first few inputs whose verdict carries a warning (an image far too small)."""
    report_list(f"warning: {len(lines)} verdict(s) to read with caution:", lines)


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
    if not manifest.fingerprinted:
        notice(
            "notice: this manifest has no size/hash columns (an older dfx "
            "wrote it), so changed files go unnoticed; re-run 'dfx split' to add them."
        )


def report_labelled_sets(labelled) -> None:
    """What reading labelled sets found: files that are not images, the manifest's checks."""
    if labelled.manifest is not None:
        report_manifest_checks(labelled.manifest)
    report_skipped(labelled.skipped)
