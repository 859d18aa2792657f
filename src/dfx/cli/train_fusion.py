"""dfx train-fusion: fuse the three frozen base models with the Conv1d head."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfx.cli.console import RichProgress
from dfx.cli.errors import handle_errors
from dfx.cli.options import TRAINING_OPTIONS, Compile, ManifestOption, artifact_option, with_options
from dfx.cli.outputs import check_outputs
from dfx.cli.training import finish_training, render_fusion_result, training_setup

EPILOG = """\
[bold]Examples[/bold]

  dfx train-fusion -m manifest.csv --base-dir base/ --out model.pt
  dfx train-fusion -m manifest.csv --base-dir base/ --epochs 50 --device cuda --out model.pt
  dfx train-fusion -m manifest.csv --dm a/dm.pt --gan b/gan.pt --real c/real.pt --out model.pt
  dfx train-fusion -m manifest.csv --base-dir base/ --out model.pt --resume

The base models are frozen; their pooled features of the 'fusion' images are computed
once, in eval mode, and cached, so each epoch trains only the head. Writes one
self-describing detector file for 'dfx evaluate' and 'dfx predict'.

After every epoch the head's training state goes to OUT with the suffix .state.pt;
the same command with --resume continues from the last completed epoch (the features
are extracted again: they are the same in eval mode).
"""


@handle_errors
@with_options(TRAINING_OPTIONS)
def train_fusion_command(
    manifest: ManifestOption,
    base_dir: Annotated[
        Path | None,
        typer.Option("--base-dir", help="Folder holding dm.pt, gan.pt and real.pt."),
    ] = None,
    dm: Annotated[
        Path | None, typer.Option("--dm", help="dm base model (overrides --base-dir).")
    ] = None,
    gan: Annotated[Path | None, typer.Option("--gan", help="gan base model.")] = None,
    real: Annotated[Path | None, typer.Option("--real", help="real base model.")] = None,
    out: Annotated[Path, artifact_option(help="Detector file to write.")] = Path("model.pt"),
    compile: Compile = False,
    **options,
) -> None:
    """Train the fusion head on cached features of the frozen base models; write the detector."""
    check_outputs({"--output": out})
    from dfx.engine.base_training import base_model_path
    from dfx.engine.configs import FusionTrainConfig
    from dfx.engine.fusion_training import train_fusion
    from dfx.errors import DfxError

    explicit = {"dm": dm, "gan": gan, "real": real}
    paths = {}
    for name, path in explicit.items():
        if path is None and base_dir is None:
            raise DfxError(f"give --base-dir DIR or --{name} FILE for the {name} base model.")
        paths[name] = path if path is not None else base_model_path(base_dir, name)
    config, loaded = training_setup(
        FusionTrainConfig, options | {"compile": compile}, manifest, ("fusion",)
    )
    with RichProgress() as progress:
        result = train_fusion(
            loaded, paths, config, out=out, progress=progress, resume=options["resume"]
        )
    finish_training(result.failures, lambda: render_fusion_result(result, options["as_json"]))
