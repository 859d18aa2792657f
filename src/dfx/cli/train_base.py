"""dfx train-base: train the class-specialised base models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfx.cli.common import (
    AllowChanged,
    Device,
    Epochs,
    LearningRate,
    LrStep,
    ManifestOption,
    MaxPixels,
    Precision,
    Resume,
    RichProgress,
    Seed,
    TrainBatchSize,
    ValFraction,
    WeightDecay,
    Workers,
    exit_if_failures,
    failure_records,
    handle_errors,
    print_json,
    report_failures,
    report_manifest_checks,
    stdout,
)
from dfx.limits import DEFAULT_MAX_PIXELS

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
def train_base_command(
    ctx: typer.Context,
    manifest: ManifestOption,
    target: Annotated[
        str, typer.Option("--target", "-t", help="Class to specialise in: dm, gan, real or all.")
    ] = "all",
    backbone: Annotated[
        str, typer.Option("--backbone", "-b", help="Backbone name ('dfx backbones' lists them).")
    ] = "densenet121",
    weights: Annotated[
        str, typer.Option("--weights", help="Initial weights: imagenet, none or a state-dict file.")
    ] = "imagenet",
    image_size: Annotated[
        int | None,
        typer.Option("--image-size", min=16, help="Input side (default: backbone's)."),
    ] = None,
    epochs: Epochs = 50,
    batch_size: TrainBatchSize = 32,
    lr: LearningRate = 1e-4,
    weight_decay: WeightDecay = 1e-3,
    lr_step: LrStep = 0,
    negative_fraction: Annotated[
        float,
        typer.Option("--negative-fraction", help="Share of negatives in the training set."),
    ] = 0.1,
    val_fraction: ValFraction = 0.2,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the base-model files.")
    ] = Path("base"),
    device: Device = "auto",
    precision: Precision = "auto",
    workers: Workers = None,
    seed: Seed = 0,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    resume: Resume = False,
    allow_changed: AllowChanged = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the results as JSON instead of tables.")
    ] = False,
) -> None:
    """Train base models: one backbone per class, each specialised in "its class vs the others"."""
    from dfx.classes import CLASSES
    from dfx.data.manifest import read_manifest
    from dfx.engine.base_training import (
        BaseTrainConfig,
        check_target,
        state_path_of,
        train_base,
    )
    from dfx.errors import TrainingInterrupted
    from dfx.models.backbones import get_spec

    targets = list(CLASSES) if target == "all" else [check_target(target)]
    get_spec(backbone)
    config = BaseTrainConfig(
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        lr_step=lr_step,
        negative_fraction=negative_fraction,
        val_fraction=val_fraction,
        seed=seed,
        device=device,
        precision=precision,
        workers=workers,
        max_pixels=max_pixels,
    )
    loaded = read_manifest(manifest, splits=("base", "test"), allow_changed=allow_changed)
    report_manifest_checks(loaded)
    # With --target all, the models after the interrupted one have no state yet: they
    # start from scratch, as long as some model of the run has a state to resume from.
    saved = {name: state_path_of(out, name).is_file() for name in targets}
    results = []
    try:
        with RichProgress() as progress:
            for name in targets:
                resume_this = resume and (saved[name] or not any(saved.values()))
                if resume and not resume_this:
                    progress.notice(f"{name} base model: no saved state, so it starts from epoch 1")
                results.append(train_base(loaded, name, config, out, progress, resume=resume_this))
    except KeyboardInterrupt as interrupt:
        # Stopped before the current model saved a state: earlier models' states still let
        # --resume skip or continue them, so say so instead of "nothing to resume".
        if getattr(interrupt, "state_path", None) is None and any(
            state_path_of(out, name).is_file() for name in targets
        ):
            raise TrainingInterrupted(f"train-base --target {target}", 0, out) from None
        raise
    # Each model reads the same test images: name every unreadable file once.
    failures = list({f.source: f for r in results for f in r.failures}.values())
    report_failures(failures)
    render_base_results(results, json_output)
    exit_if_failures(failures)


def render_base_results(results, json_output: bool) -> None:
    """Print Table 1 and the files written (or the same as JSON)."""
    from dfx.report import base_metrics_table, to_json

    if json_output:
        print_json(
            to_json(
                {
                    "models": [
                        {
                            "target": r.target,
                            "path": str(r.path),
                            "history": str(r.history_path),
                            "best_epoch": r.best_epoch,
                            "best_val_loss": r.best_val_loss,
                            "counts": r.counts,
                            "test": r.test_metrics,
                            "seconds": r.seconds,
                            "failures": failure_records(r.failures),
                        }
                        for r in results
                    ]
                }
            )
        )
        return
    console = stdout()
    console.print(base_metrics_table([(r.target, r.test_metrics) for r in results]))
    for r in results:
        console.print(
            f"wrote {r.path} (best epoch {r.best_epoch}, {r.seconds:.1f} s)", markup=False
        )
