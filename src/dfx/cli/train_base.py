"""dfx train-base: train the class-specialised base models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfx.cli.console import RichProgress
from dfx.cli.errors import handle_errors
from dfx.cli.options import BACKBONE_TRAINING_OPTIONS, ManifestOption, artifact_option, with_options
from dfx.cli.outputs import check_outputs
from dfx.cli.training import finish_training, render_base_results, training_setup
from dfx.engine.configs import BaseTrainConfig

EPILOG = """\
[bold]Examples[/bold]

  dfx train-base -m manifest.csv --target all --backbone densenet121 --out base/
  dfx train-base -m manifest.csv --target gan --backbone resnet50 --epochs 20 --device cuda
  dfx train-base -m manifest.csv --target all --backbone tiny --weights none --epochs 3
  dfx train-base -m manifest.csv --target all --out base/ --resume     # after a crash or Ctrl-C
  torchrun --standalone --nproc-per-node 8 -m dfx train-base -m manifest.csv --out base/

Each model sees all 'base' images of its class as positives and a small stratified
share of the two other classes as negatives (90:10), holds out 20% for validation and
keeps the weights with the lowest validation loss. Writes OUT/<target>.pt and
OUT/<target>.history.jsonl, then prints the paper's Table 1 on the test images.

After every epoch the full training state goes to OUT/<target>.state.pt: after a crash,
a kill or Ctrl-C, the same command with --resume continues from the last completed
epoch and ends with the same weights as an uninterrupted run.
"""


@handle_errors
@with_options(BACKBONE_TRAINING_OPTIONS)
def train_base_command(
    manifest: ManifestOption,
    target: Annotated[
        str, typer.Option("--target", "-t", help="Class to specialise in: dm, gan, real or all.")
    ] = "all",
    negative_fraction: Annotated[
        float,
        typer.Option("--negative-fraction", help="Share of negatives in the training set."),
    ] = BaseTrainConfig.negative_fraction,
    out: Annotated[
        Path, artifact_option(help="Folder for the base-model files.", metavar="DIR")
    ] = Path("base"),
    **options,
) -> None:
    """Train base models: one backbone per class, each specialised in "its class vs the others"."""
    check_outputs(folders={"--output": out})
    from dfx.classes import CLASSES
    from dfx.engine.base_training import base_model_path, check_target, train_base
    from dfx.engine.training import RunPaths
    from dfx.errors import TrainingInterrupted

    targets = list(CLASSES) if target == "all" else [check_target(target)]
    config, loaded = training_setup(
        BaseTrainConfig,
        options | {"negative_fraction": negative_fraction},
        manifest,
        ("base", "test"),
    )
    resume = options["resume"]
    paths = {name: RunPaths.of(base_model_path(out, name)) for name in targets}
    # With --target all, the models after the interrupted one have no state yet: they
    # start from scratch, as long as some model of the run has a state to resume from.
    saved = {name: paths[name].state.is_file() for name in targets}
    results = []
    try:
        with RichProgress() as progress:
            for name in targets:
                resume_this = resume and (saved[name] or not any(saved.values()))
                if resume and not resume_this:
                    progress.notice(f"{name} base model: no saved state, so it starts from epoch 1")
                results.append(
                    train_base(
                        loaded,
                        name,
                        config,
                        out=paths[name].model,
                        progress=progress,
                        resume=resume_this,
                    )
                )
    except KeyboardInterrupt as interrupt:
        # Stopped before the current model saved a state: earlier models' states still let
        # --resume skip or continue them, so say so instead of "nothing to resume".
        if getattr(interrupt, "state_path", None) is None and any(
            paths[name].state.is_file() for name in targets
        ):
            raise TrainingInterrupted(f"train-base --target {target}", 0, out) from None
        raise
    # Each model reads the same test images: name every unreadable file once.
    failures = list({f.source: f for r in results for f in r.failures}.values())
    finish_training(failures, lambda: render_base_results(results, options["as_json"]))
