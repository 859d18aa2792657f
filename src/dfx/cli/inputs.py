"""The image inputs of predict and explain: PATH arguments, folders and stdin, one rule.

Files passed over in folders (not images) are named on stderr. When the arguments hold
no image file at all (an empty folder, empty stdin, only missing paths) there is nothing
to run: a usage error, exit 2, one sentence, before the model loads. Otherwise a missing
path or an empty folder among images is reported in its place and the exit code is 1.
"""

from __future__ import annotations

from pathlib import Path

from dfx.cli.console import report_skipped
from dfx.cli.errors import fail
from dfx.cli.options import read_stdin_paths


def gather_inputs(paths: list[str], verb: str) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files to ``verb`` (predict, explain) and (argument, reason) for those naming none."""
    from dfx.data.discovery import expand_inputs

    arguments = read_stdin_paths(paths)
    skipped: dict[str, str] = {}
    inputs, problems = expand_inputs(arguments, skipped)
    report_skipped(skipped)
    if inputs:
        return inputs, problems
    if not arguments:
        raise fail(f"no images to {verb}: standard input gave no paths.")
    (first, reason), more = problems[0], len(problems) - 1
    others = f" (and {more} more argument(s) naming no image)" if more else ""
    raise fail(f"no images to {verb}: {first}: {reason}{others}.")
