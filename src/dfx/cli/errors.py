"""Exit codes and the translation of errors into one sentence on stderr.

Nothing here imports torch, so ``dfx --help`` starts fast.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
import traceback

import typer

from dfx import distributed
from dfx.cli.console import DfxConsole, plain_text
from dfx.cli.flags import GlobalFlags
from dfx.cli.framework import Context, current_context
from dfx.cli.option_names import with_option_names

EXIT_INPUT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool that SIGPIPE ended


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one sentence to stderr and return the Exit to raise.

    Under torchrun every process prints its own errors, naming its rank, as they may
    differ; an interruption, which reaches every process at once, is told by rank 0 only.
    """
    if code == EXIT_INTERRUPTED and not distributed.is_main():
        return typer.Exit(code)
    where = f"rank {distributed.launched_rank()}: " if distributed.is_launched() else ""
    from rich.markup import escape

    DfxConsole(stderr=True, highlight=False, color_system=None if plain_text() else "auto").print(
        f"[bold red]error:[/bold red] {escape(where + with_option_names(message))}",
        markup=True,
        soft_wrap=True,
    )
    return typer.Exit(code)


def end_quietly_on_broken_pipe() -> typer.Exit:
    """The reader of stdout went away (``dfx ... | head``): exit 141 without a message.

    stdout is pointed at /dev/null first, so Python's own flush at exit does not fail again.
    """
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # no real file (a test runner's buffer)
        pass
    return typer.Exit(EXIT_BROKEN_PIPE)


def exit_if_failures(failures) -> None:
    """Exit 1 when the run finished but some inputs could not be read."""
    if failures:
        raise typer.Exit(EXIT_INPUT_FAILED)


def handle_errors(command):
    """Turn user errors into one sentence and exit 2; tracebacks only with --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from dfx.errors import DfxError, TrainingInterrupted

        try:
            result = command(*args, **kwargs)
        except typer.Exit as done:
            if done.exit_code in (0, EXIT_INPUT_FAILED):  # every process ends so together
                distributed.finish()
            raise
        except typer.Abort:
            raise
        except TrainingInterrupted as interrupt:
            context = current_context()
            raise fail(interrupted_message(interrupt, context), EXIT_INTERRUPTED) from None
        except DfxError as error:
            if GlobalFlags.debug:
                traceback.print_exc()
            raise fail(str(error)) from None
        except KeyboardInterrupt:
            raise fail("interrupted.", EXIT_INTERRUPTED) from None
        except BrokenPipeError:  # the reader of stdout went away (dfx predict ... | head)
            raise end_quietly_on_broken_pipe() from None
        except OSError as error:  # the file system said no: a full disk, a read-only folder
            if GlobalFlags.debug:
                traceback.print_exc()
            reason = error.strerror or str(error)
            if error.filename:
                raise fail(f"cannot use {error.filename}: {reason}.") from None
            raise fail(f"{reason}.") from None
        except Exception as error:  # a bug: say so in one line, traceback with --debug
            if GlobalFlags.debug:
                traceback.print_exc()
            if type(error).__name__ == "OutOfMemoryError":  # torch's, CUDA or other devices
                raise fail(
                    "the device ran out of memory; use a smaller --batch-size "
                    "(or --precision bf16/fp16 on a GPU)."
                ) from None
            raise fail(
                f"internal error {type(error).__name__}: {error} (run with --debug for details).",
                EXIT_INTERNAL,
            ) from None
        distributed.finish()
        return result

    return wrapper


def interrupted_message(interrupt, context: Context | None = None) -> str:
    """What Ctrl-C during training saved, and the exact command that resumes."""
    if interrupt.state_path is None:
        return (
            f"interrupted during the first epoch of {interrupt.label}; "
            "no epoch was completed, so there is nothing to resume."
        )
    if interrupt.epoch == 0:  # between models, or early in one that follows finished ones
        saved = f"the finished work is saved in {interrupt.state_path}"
    else:
        saved = f"the state after epoch {interrupt.epoch} is saved in {interrupt.state_path}"
    return (
        f"interrupted; {interrupt.label}: {saved}; "
        f"resume with: {current_command(context, '--resume')}"
    )


def current_command(context: Context | None, *extra: str) -> str:
    """The running command line as the user could type it again, plus ``extra`` options.

    Rebuilt from the parsed parameters (what differs from the defaults) when a command's
    context is given, else taken from ``sys.argv``.
    """
    # Under torchrun the user re-runs the same launch line; show what follows its "-m".
    program = "torchrun [same options] -m dfx" if distributed.is_active() else "dfx"
    if context is None:
        words = [w for w in sys.argv[1:] if w not in extra]
        return " ".join([program, shlex.join([*words, *extra])])
    parts = [context.info_name or ""]
    for parameter in context.command.params:
        value = context.params.get(parameter.name)
        if parameter.param_type_name == "argument":
            parts += [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        elif value is not None and value != parameter.default and parameter.opts[0] not in extra:
            parts += _option_words(parameter, value)
    return " ".join([program, shlex.join([*parts, *extra])])


def _option_words(option, value) -> list[str]:
    if option.is_flag:
        if value:
            return [option.opts[0]]
        return [option.secondary_opts[0]] if option.secondary_opts else []
    values = value if isinstance(value, (list, tuple)) else [value]
    return [option.opts[0], *(str(v) for v in values)]


GLOBAL_OPTIONS = ("--debug", "--quiet", "-q", "--version")
"""Options of ``dfx`` itself, which go before the command."""


FORMAT_FLAGS = ("--json", "--csv")
"""Flags that pick an output format and never take a value (the file is ``-o FILE``)."""


def usage_error_message(error, args: list[str] | None = None) -> str:
    """One dfx-style sentence for a command-line usage error of the framework (click).

    A global option given after the command is named as such, with where it goes; a file
    name after ``--json`` (which took an optional FILE before 0.2.0) is pointed to ``-o FILE``.
    """
    context = getattr(error, "ctx", None)
    command = context.command_path if context is not None else "dfx"
    name = getattr(error, "option_name", None)
    if name in GLOBAL_OPTIONS and context is not None and context.parent is not None:
        program = context.parent.command_path
        return (
            f"{name} is an option of dfx itself: put it before the command, "
            f"as in '{program} {name} {context.info_name} ...'."
        )
    message = " ".join(error.format_message().split()).rstrip(".")
    if name == "-m" and context is not None and any("-M" in p.opts for p in context.command.params):
        message += "; -m is the manifest: the model is -M or --model"
    message += _format_flag_hint(message, args or [])
    help_hint = f" (see '{command} --help')" if context is not None else ""
    return f"{message}{help_hint}."


def _format_flag_hint(message: str, args: list[str]) -> str:
    if "unexpected extra argument" not in message.lower():
        return ""
    for flag in FORMAT_FLAGS:
        for position, word in enumerate(args[:-1]):
            if word == flag and f"({args[position + 1]}" in message:
                return f"; {flag} is a flag and takes no value: write the results with -o FILE"
    return ""
