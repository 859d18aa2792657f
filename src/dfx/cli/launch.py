"""The torchrun launch policy: data-parallel commands join the process group, others refuse."""

from __future__ import annotations

from collections.abc import Collection

import typer

from dfx import distributed
from dfx.cli.errors import EXIT_USAGE, fail
from dfx.cli.flags import GlobalFlags


def check_launch(command: str | None, data_parallel: Collection[str]) -> None:
    """Under torchrun: refuse commands outside ``data_parallel``; quiet all but rank 0."""
    from dfx.errors import DfxError

    try:
        distributed.check_launcher_variables()
    except DfxError as error:
        raise fail(str(error)) from None
    if not distributed.is_launched():
        return
    if command in data_parallel:
        distributed.activate(leave_at_exit=False)  # handle_errors leaves the group
    elif command is not None:
        if distributed.launched_rank() != 0:  # every process would say the same
            raise typer.Exit(EXIT_USAGE)
        raise fail(
            f"'dfx {command}' does not run data-parallel; run it without torchrun "
            f"(torchrun runs: {', '.join(sorted(data_parallel))})."
        )
    if not distributed.is_main():
        GlobalFlags.quiet = True
