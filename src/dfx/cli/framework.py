"""The command-line framework's internals that dfx relies on, in one place.

Typer 0.29 parses with a copy of click that it ships as ``typer._click``, and no longer
installs click itself; older Typers use click. Everything dfx needs from below Typer's
public API (the running context, the usage-error class, the colour system of help pages,
the help option) is reached here, with a fallback for the other layout, so that the rest
of the command line imports only Typer and this module.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def _vendored() -> tuple[ModuleType, ModuleType, ModuleType]:
    """Typer's click: its vendored copy (core, exceptions, globals), else click itself."""
    try:
        return tuple(
            importlib.import_module(f"typer._click.{part}")
            for part in ("core", "exceptions", "globals")
        )
    except ImportError:  # a Typer older than 0.29, which depends on click
        click = importlib.import_module("click")
        return click, click, click


_core, _exceptions, _globals = _vendored()

Context = _core.Context
"""A parsed command's context (its parameters, values and parent)."""

ClickException = _exceptions.ClickException
"""The base class of the framework's usage errors (bad option, missing argument)."""


def current_context() -> Context | None:
    """The running command's context, or None outside a command."""
    return _globals.get_current_context(silent=True)


def plain_help_pages() -> None:
    """Help pages without colour, bold or italic (``NO_COLOR``)."""
    from typer import rich_utils

    if hasattr(rich_utils, "COLOR_SYSTEM"):  # a module constant that Typer's help reads
        rich_utils.COLOR_SYSTEM = None
    else:  # a Typer that reads the environment itself
        import os

        os.environ.setdefault("NO_COLOR", "1")


def hide_help_option_metavar(command) -> None:
    """Show ``--help`` without a type beside it on ``command``'s help page."""
    framework_help = command.get_help_option

    def help_option(context):
        option = framework_help(context)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
