"""The ``dfx`` command line: one module per command, each a thin layer over the library."""

from __future__ import annotations

from typing import Annotated

import typer

from dfx import __version__
from dfx.cli import (
    backbones,
    demo,
    evaluate,
    explain,
    import_official,
    predict,
    robustness,
    split,
    train_base,
    train_baseline,
    train_fusion,
)
from dfx.cli.common import Settings, check_launch

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
    Settings.debug = Settings.debug or debug
    Settings.quiet = quiet
    check_launch(context.invoked_subcommand)


def _register(module, name: str, function) -> None:
    app.command(name, epilog=getattr(module, "EPILOG", None))(function)


_register(demo, "demo", demo.demo_command)
_register(split, "split", split.split_command)
_register(train_base, "train-base", train_base.train_base_command)
_register(train_fusion, "train-fusion", train_fusion.train_fusion_command)
_register(train_baseline, "train-baseline", train_baseline.train_baseline_command)
_register(evaluate, "evaluate", evaluate.evaluate_command)
app.command("jpeg-robustness", epilog=robustness.JPEG_EPILOG)(robustness.jpeg_robustness_command)
_register(robustness, "robustness", robustness.robustness_command)
_register(predict, "predict", predict.predict_command)
_register(explain, "explain", explain.explain_command)
_register(backbones, "backbones", backbones.backbones_command)
_register(import_official, "import-official", import_official.import_official_command)


def main() -> None:
    """Entry point of the ``dfx`` console script."""
    app()
