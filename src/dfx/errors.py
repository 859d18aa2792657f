"""Errors that the command line turns into one sentence on stderr and exit code 2."""

from __future__ import annotations


def first_few(names: list[str], shown: int = 3) -> str:
    """The first ``shown`` names, comma-separated, with "..." when there are more."""
    return ", ".join(names[:shown]) + (" ..." if len(names) > shown else "")


class DfxError(Exception):
    """A problem with the user's input or configuration, stated as one sentence."""


class ImageReadError(Exception):
    """One image could not be read; the run reports it and goes on without it."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a training run; the state of its last completed epoch is on disk."""

    def __init__(self, label: str, epoch: int, state_path=None) -> None:
        super().__init__(label)
        self.label = label
        """What was being trained."""
        self.epoch = epoch
        """Last completed epoch (0: none)."""
        self.state_path = state_path
        """The resume-state file holding that epoch (None: nothing to resume from)."""
