"""The ``dfx`` command line: one module per command, each a thin layer over the library."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from dfx import distributed
from dfx._version import __version__
from dfx.cli import (
    audit,
    backbones,
    card,
    demo,
    evaluate,
    explain,
    export,
    import_official,
    predict,
    robustness,
    serve,
    split,
    train_base,
    train_baseline,
    train_fusion,
)
from dfx.cli.console import plain_text, stdout_reader_gone
from dfx.cli.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    end_quietly_on_broken_pipe,
    fail,
    usage_error_message,
)
from dfx.cli.flags import GlobalFlags, env_switch
from dfx.cli.framework import ClickException, plain_help_pages
from dfx.cli.launch import check_launch
from dfx.cli.options import readable_metavars


class DfxGroup(TyperGroup):
    """The ``dfx`` group: usage errors as one dfx-style line, broken pipes as exit 141."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if plain_text():  # help pages too: no colour, bold or italic under NO_COLOR
            plain_help_pages()
        readable_metavars(self)
        args = sys.argv[1:] if args is None else list(args)
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        if stdout_reader_gone():  # nobody will read the results: do no work
            end_quietly_on_broken_pipe()
            sys.exit(EXIT_BROKEN_PIPE)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as error:
            fail(usage_error_message(error, args), error.exit_code)
            sys.exit(error.exit_code)
        except typer.Abort:
            fail("interrupted.", EXIT_INTERRUPTED)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:  # while printing help: dfx --help | head -1
            sys.exit(end_quietly_on_broken_pipe().exit_code)
        code = code if isinstance(code, int) else 0
        if distributed.is_active():  # torchrun: skip the interpreter's teardown (its race)
            distributed.end_process(code)
        sys.exit(code)

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            readable_metavars(command)
        return command


app = typer.Typer(
    cls=DfxGroup,
    name="dfx",
    help="Detect AI-generated images: real, GAN-generated or diffusion-generated "
    "(DeepFeatureX Net, ICPR 2024).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DATA_PARALLEL_COMMANDS: set[str] = set()
"""Commands that run data-parallel under torchrun; the others refuse to be launched so."""


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"dfx {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    context: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars or notices.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """dfx: tell real, GAN-generated and diffusion-generated images apart."""
    # Per invocation: a --debug run must not leave tracebacks on for the next one in-process.
    GlobalFlags.debug = debug or env_switch("DFX_DEBUG")
    GlobalFlags.quiet = quiet
    check_launch(context.invoked_subcommand, DATA_PARALLEL_COMMANDS)


def _register(name: str, function, epilog: str | None, data_parallel: bool = False) -> None:
    """Add a command; ``data_parallel``: it runs data-parallel under torchrun."""
    app.command(name, epilog=epilog)(function)
    if data_parallel:
        DATA_PARALLEL_COMMANDS.add(name)


_register("demo", demo.demo_command, demo.EPILOG)
_register("split", split.split_command, split.EPILOG)
_register("audit", audit.audit_command, audit.EPILOG)
_register("train-base", train_base.train_base_command, train_base.EPILOG, data_parallel=True)
_register(
    "train-fusion", train_fusion.train_fusion_command, train_fusion.EPILOG, data_parallel=True
)
_register(
    "train-baseline",
    train_baseline.train_baseline_command,
    train_baseline.EPILOG,
    data_parallel=True,
)
_register("evaluate", evaluate.evaluate_command, evaluate.EPILOG, data_parallel=True)
_register(
    "jpeg-robustness",
    robustness.jpeg_robustness_command,
    robustness.JPEG_EPILOG,
    data_parallel=True,
)
_register("robustness", robustness.robustness_command, robustness.EPILOG, data_parallel=True)
_register("predict", predict.predict_command, predict.EPILOG)
_register("explain", explain.explain_command, explain.EPILOG)
_register("export", export.export_command, export.EPILOG)
_register("backbones", backbones.backbones_command, None)
_register("import-official", import_official.import_official_command, import_official.EPILOG)
_register("card", card.card_command, card.EPILOG)
_register("serve", serve.serve_command, serve.EPILOG)


def main() -> None:
    """Entry point of the ``dfx`` console script."""
    app()
