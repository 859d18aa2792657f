"""dfx train-baseline: one backbone trained directly on dm/gan/real, for comparison."""

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

  dfx train-baseline -m manifest.csv --backbone densenet121 --out baseline.pt
  dfx train-baseline -m manifest.csv --backbone resnet50 --epochs 20 --device cuda -o r50.pt
  dfx evaluate --model baseline.pt --data sets/a --data sets/b   # compare with the fusion
  dfx train-baseline -m manifest.csv --backbone densenet121 --out baseline.pt --resume

Trains on the manifest's base and fusion images (everything the fusion detector saw),
80/20 hold-out per class, class-weighted cross entropy, Adam (official defaults), and
keeps the lowest-validation-loss weights. The threshold on P(fake) is calibrated on the
hold-out. The file works wherever a detector does: evaluate, predict, jpeg-robustness,
robustness, dfx.load_detector. After every epoch the training state goes to OUT with
the suffix .state.pt; the same command with --resume continues from the last completed
epoch, and Ctrl-C prints that command.
"""


@handle_errors
def train_baseline_command(
    ctx: typer.Context,
    manifest: ManifestOption,
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
    out: Annotated[Path, typer.Option("--out", "-o", help="Detector file to write.")] = Path(
        "baseline.pt"
    ),
    epochs: Epochs = 50,
    batch_size: TrainBatchSize = 32,
    lr: LearningRate = 1e-4,
    weight_decay: WeightDecay = 1e-3,
    lr_step: LrStep = 0,
    val_fraction: ValFraction = 0.2,
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
    """Train a baseline detector: one backbone on the three classes, no fusion."""
    from dfx.data.manifest import read_manifest
    from dfx.engine.baseline_training import TRAIN_ROLES, BaselineTrainConfig, train_baseline
    from dfx.models.backbones import get_spec
    from dfx.report import summary_table, to_json

    get_spec(backbone)
    config = BaselineTrainConfig(
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        lr_step=lr_step,
        val_fraction=val_fraction,
        seed=seed,
        device=device,
        precision=precision,
        workers=workers,
        max_pixels=max_pixels,
    )
    loaded = read_manifest(manifest, splits=TRAIN_ROLES, allow_changed=allow_changed)
    report_manifest_checks(loaded)
    with RichProgress() as progress:
        result = train_baseline(loaded, config, out, progress, resume=resume)
    report_failures(result.failures)
    if json_output:
        print_json(
            to_json(
                {
                    "path": str(result.path),
                    "history": str(result.history_path),
                    "best_epoch": result.best_epoch,
                    "counts": result.counts,
                    "validation": result.validation,
                    "threshold": result.threshold,
                    "seconds": result.seconds,
                    "failures": failure_records(result.failures),
                }
            )
        )
    else:
        validation = result.validation
        console = stdout()
        console.print(
            summary_table(
                [("validation", validation["multiclass"], validation["binary"])],
                f"Baseline {backbone} on its validation images (n={validation['n']}, %)",
            )
        )
        console.print(
            f"wrote {result.path} (best epoch {result.best_epoch}, threshold "
            f"{result.threshold['value']:.4g}, {result.seconds:.1f} s)",
            markup=False,
        )
    exit_if_failures(result.failures)
