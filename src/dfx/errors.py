"""Errors that the command line turns into one sentence on stderr and exit code 2."""

from __future__ import annotations


class DfxError(Exception):
    """A problem with the user's input or configuration, stated as one sentence."""


class ImageReadError(Exception):
    """One image could not be read; the run reports it and goes on without it."""
