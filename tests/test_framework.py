"""The shim over the parser's internals (dfx.cli.framework): Typer's vendored click, or
click itself for a Typer that still uses it."""

from __future__ import annotations

import importlib
import os
import sys
import types

import typer
from typer.testing import CliRunner

from dfx.cli import framework


def test_current_context_is_the_running_commands():
    app = typer.Typer()
    seen = {}

    @app.command()
    def hello(name: str = "x") -> None:
        context = framework.current_context()
        seen["context"] = context
        seen["name"] = context.info_name if context else None

    @app.command()
    def other() -> None:  # two commands, so that the command is named on the line
        pass

    result = CliRunner().invoke(app, ["hello", "--name", "y"])
    assert result.exit_code == 0, result.output
    assert isinstance(seen["context"], framework.Context)
    assert seen["name"] == "hello" and seen["context"].params == {"name": "y"}
    assert framework.current_context() is None  # outside a command


def test_usage_errors_are_the_shims_click_exception():
    app = typer.Typer()

    @app.command()
    def only(count: int) -> None:
        pass

    command = typer.main.get_command(app)
    try:
        command.main(["not-a-number"], standalone_mode=False)
    except framework.ClickException as error:
        assert "count" in error.format_message()
    else:
        raise AssertionError("a bad value must raise the framework's usage error")


def test_without_typers_copy_the_shim_falls_back_to_click(monkeypatch):
    fake = types.ModuleType("click")

    class Context:  # the three names dfx needs from click
        pass

    class ClickException(Exception):
        pass

    fake.Context, fake.ClickException = Context, ClickException
    fake.get_current_context = lambda silent=False: "the fake's context"
    for part in ("core", "exceptions", "globals"):
        monkeypatch.setitem(sys.modules, f"typer._click.{part}", None)  # import fails
    monkeypatch.setitem(sys.modules, "click", fake)
    try:
        reloaded = importlib.reload(framework)
        assert reloaded.Context is Context and reloaded.ClickException is ClickException
        assert reloaded.current_context() == "the fake's context"
    finally:
        monkeypatch.undo()
        importlib.reload(framework)
    assert framework.Context.__module__.startswith("typer._click")


def test_plain_help_pages_turn_off_typers_colours(monkeypatch):
    from typer import rich_utils

    monkeypatch.setattr(rich_utils, "COLOR_SYSTEM", "auto")
    framework.plain_help_pages()
    assert rich_utils.COLOR_SYSTEM is None


def test_plain_help_pages_fall_back_to_no_color_without_the_constant(monkeypatch):
    from typer import rich_utils

    monkeypatch.delattr(rich_utils, "COLOR_SYSTEM")
    monkeypatch.delenv("NO_COLOR", raising=False)
    framework.plain_help_pages()
    assert os.environ["NO_COLOR"] == "1"


def test_the_help_option_shows_no_metavar():
    app = typer.Typer()

    @app.command()
    def only(flag: bool = False) -> None:
        pass

    command = typer.main.get_command(app)
    framework.hide_help_option_metavar(command)
    context = command.make_context("only", [], resilient_parsing=True)
    assert command.get_help_option(context).metavar == ""
