"""dfx train-fusion: fuse the three frozen base models with the Conv1d head."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfx.cli.common import (
    AllowChanged,
    Compile,
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
def train_fusion_command(
    ctx: typer.Context,
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
    out: Annotated[Path, typer.Option("--out", "-o", help="Detector file to write.")] = Path(
        "model.pt"
    ),
    epochs: Epochs = 50,
    batch_size: TrainBatchSize = 32,
    lr: LearningRate = 1e-4,
    weight_decay: WeightDecay = 1e-3,
    lr_step: LrStep = 0,
    val_fraction: ValFraction = 0.2,
    device: Device = "auto",
    precision: Precision = "auto",
    compile: Compile = False,
    workers: Workers = None,
    seed: Seed = 0,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    resume: Resume = False,
    allow_changed: AllowChanged = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the results as JSON instead of tables.")
    ] = False,
) -> None:
    """Train the fusion head on cached features of the frozen base models; write the detector."""
    from dfx.data.manifest import read_manifest
    from dfx.engine.fusion_training import FusionTrainConfig, train_fusion
    from dfx.errors import DfxError

    explicit = {"dm": dm, "gan": gan, "real": real}
    paths = {}
    for name, path in explicit.items():
        if path is None and base_dir is None:
            raise DfxError(f"give --base-dir DIR or --{name} FILE for the {name} base model.")
        paths[name] = path if path is not None else base_dir / f"{name}.pt"
    config = FusionTrainConfig(
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
        compile=compile,
    )
    loaded = read_manifest(manifest, splits=("fusion",), allow_changed=allow_changed)
    report_manifest_checks(loaded)
    with RichProgress() as progress:
        result = train_fusion(loaded, paths, config, out, progress, resume=resume)
    report_failures(result.failures)
    render_fusion_result(result, json_output)
    exit_if_failures(result.failures)


def render_fusion_result(result, json_output: bool) -> None:
    """Print the validation metrics and timings (or the same as JSON)."""
    from dfx.report import summary_table, to_json

    if json_output:
        print_json(
            to_json(
                {
                    "path": str(result.path),
                    "history": str(result.history_path),
                    "best_epoch": result.best_epoch,
                    "counts": result.counts,
                    "validation": result.validation,
                    "extraction_seconds": result.extraction_seconds,
                    "training_seconds": result.training_seconds,
                    "failures": failure_records(result.failures),
                }
            )
        )
        return
    console = stdout()
    validation = result.validation
    console.print(
        summary_table(
            [("validation", validation["multiclass"], validation["binary"])],
            f"Fusion model on its validation features (n={validation['n']}, %)",
        )
    )
    console.print(
        f"wrote {result.path} (best epoch {result.best_epoch}; features extracted once in "
        f"{result.extraction_seconds:.1f} s, head trained in {result.training_seconds:.1f} s)",
        markup=False,
    )
