"""The ``dfx`` command line: one module per command, each a thin layer over the library."""

from __future__ import annotations

from typing import Annotated

import typer

from dfx import __version__
from dfx.cli import (
    backbones,
    demo,
    evaluate,
    export,
    import_official,
    predict,
    robustness,
    split,
    train_base,
    train_baseline,
    train_fusion,
)
from dfx.cli.flags import GlobalFlags
from dfx.cli.launch import check_launch

app = typer.Typer(
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
    GlobalFlags.debug = GlobalFlags.debug or debug
    GlobalFlags.quiet = quiet
    check_launch(context.invoked_subcommand, DATA_PARALLEL_COMMANDS)


def _register(name: str, function, epilog: str | None, data_parallel: bool = False) -> None:
    """Add a command; ``data_parallel``: it runs data-parallel under torchrun."""
    app.command(name, epilog=epilog)(function)
    if data_parallel:
        DATA_PARALLEL_COMMANDS.add(name)


_register("demo", demo.demo_command, demo.EPILOG)
_register("split", split.split_command, split.EPILOG)
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
_register("export", export.export_command, export.EPILOG)
_register("backbones", backbones.backbones_command, None)
_register("import-official", import_official.import_official_command, import_official.EPILOG)


def main() -> None:
    """Entry point of the ``dfx`` console script."""
    app()
