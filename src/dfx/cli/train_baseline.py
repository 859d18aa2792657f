"""dfx train-baseline: one backbone trained directly on dm/gan/real, for comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from dfx.cli.console import RichProgress
from dfx.cli.errors import handle_errors
from dfx.cli.options import BACKBONE_TRAINING_OPTIONS, ManifestOption, artifact_option, with_options
from dfx.cli.outputs import check_outputs
from dfx.cli.training import finish_training, render_validated, training_setup

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
@with_options(BACKBONE_TRAINING_OPTIONS)
def train_baseline_command(
    manifest: ManifestOption,
    out: Annotated[Path, artifact_option(help="Detector file to write.")] = Path("baseline.pt"),
    **options,
) -> None:
    """Train a baseline detector: one backbone on the three classes, no fusion."""
    check_outputs({"--output": out})
    from dfx.engine.baseline_training import TRAIN_ROLES, train_baseline
    from dfx.engine.configs import BaselineTrainConfig

    config, loaded = training_setup(BaselineTrainConfig, options, manifest, TRAIN_ROLES)
    with RichProgress() as progress:
        result = train_baseline(
            loaded, config, out=out, progress=progress, resume=options["resume"]
        )
    finish_training(
        result.failures,
        lambda: render_validated(
            result,
            options["as_json"],
            f"Baseline {config.backbone} on its validation images",
            f"best epoch {result.best_epoch}, threshold {result.threshold['value']:.4g}, "
            f"{result.seconds:.1f} s",
        ),
    )
