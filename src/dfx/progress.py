"""Progress reporting without printing: the library calls a reporter, the CLI renders it."""

from __future__ import annotations

from typing import Protocol


class ProgressReporter(Protocol):
    """What long-running library functions call to report progress and notices."""

    def start(self, task: str, total: int | None, description: str) -> None:
        """A task named ``task`` begins; ``total`` steps are expected (None: unknown)."""

    def advance(self, task: str, steps: int = 1, **fields: object) -> None:
        """``steps`` more steps of ``task`` are done; ``fields`` are live figures (loss, acc)."""

    def finish(self, task: str) -> None:
        """``task`` is complete."""

    def notice(self, message: str) -> None:
        """A one-line message for the user (a skipped file, a chosen setting)."""


class NullProgress:
    """A reporter that ignores everything: the default for library calls."""

    def start(self, task: str, total: int | None, description: str) -> None:
        pass

    def advance(self, task: str, steps: int = 1, **fields: object) -> None:
        pass

    def finish(self, task: str) -> None:
        pass

    def notice(self, message: str) -> None:
        pass


def or_null(progress: ProgressReporter | None) -> ProgressReporter:
    """Return ``progress`` or a reporter that ignores everything."""
    return progress if progress is not None else NullProgress()
