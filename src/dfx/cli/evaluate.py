"""dfx evaluate: measure a detector on labelled images (paper Tables 2 and 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfx.cli.common import (
    EXIT_INPUT_FAILED,
    Compile,
    Device,
    InferenceBatchSize,
    Precision,
    RichProgress,
    Seed,
    Workers,
    exit_if_failures,
    fail,
    handle_errors,
    print_json,
    report_failures,
    report_skipped,
    stdout,
)

EPILOG = """\
[bold]Examples[/bold]

  dfx evaluate --model model.pt -m manifest.csv                 # the test split
  dfx evaluate --model model.pt -m manifest.csv --qf 50         # after JPEG at quality 50
  dfx evaluate --model model.pt --data ~/sets/wang2020/progan   # 0_real/1_fake layout
  dfx evaluate --model model.pt -m manifest.csv --json report.json --min-accuracy 0.9

Test sets are balanced to the smallest class by seeded sampling (--no-balanced to
keep all). JPEG compression happens in memory (Pillow, 4:4:4 chroma): nothing is
written. Exit codes: 0 ok, 1 some images unreadable or --min-accuracy not met, 2 bad
input, 3 internal error, 130 interrupted.
"""

ModelOption = Annotated[
    Path,
    typer.Option("--model", envvar="DFX_MODEL", help="Detector file written by train-fusion."),
]


@handle_errors
def evaluate_command(
    model: ModelOption,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", "-m", help="Manifest CSV from 'dfx split'.")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Manifest role to evaluate.")] = "test",
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Labelled folder instead of a manifest (either layout)."),
    ] = None,
    qf: Annotated[
        int | None, typer.Option("--qf", min=1, max=100, help="JPEG quality applied first.")
    ] = None,
    balanced: Annotated[
        bool, typer.Option("--balanced/--no-balanced", help="Balance classes by sampling.")
    ] = True,
    json_path: Annotated[
        str | None, typer.Option("--json", help="Write the metrics as JSON to FILE ('-': stdout).")
    ] = None,
    min_accuracy: Annotated[
        float | None,
        typer.Option(
            "--min-accuracy",
            min=0.0,
            max=1.0,
            help="Exit 1 if 3-class accuracy (binary for 0_real/1_fake data) is lower.",
        ),
    ] = None,
    batch_size: InferenceBatchSize = None,
    device: Device = "auto",
    precision: Precision = "auto",
    compile: Compile = False,
    workers: Workers = None,
    seed: Seed = 0,
) -> None:
    """Evaluate a detector: 3-class and binary accuracy/F1, AP, AUC, per-generator accuracy."""
    from dfx.api import load_detector
    from dfx.data.manifest import read_manifest
    from dfx.engine.evaluation import evaluate, images_from_folder, images_from_manifest
    from dfx.errors import DfxError

    if (manifest is None) == (data is None):
        raise DfxError("give exactly one of --manifest FILE or --data DIR.")
    # The cheap checks of the data come first, so a typo fails before a model loads.
    if manifest is not None:
        images = images_from_manifest(read_manifest(manifest), split)
    else:
        images, skipped = images_from_folder(data)
        report_skipped(skipped)
    detector = load_detector(model, device, precision, compile)
    with RichProgress() as progress:
        result = evaluate(
            detector,
            images,
            qf=qf,
            balanced=balanced,
            seed=seed,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
        )
    report_failures(result.failures)
    render_evaluation(result, json_path)
    headline = (result.multiclass or result.binary)["accuracy"]
    if min_accuracy is not None and headline < min_accuracy:
        raise fail(
            f"accuracy {headline:.4f} is below --min-accuracy {min_accuracy}.", EXIT_INPUT_FAILED
        )
    exit_if_failures(result.failures)


def render_evaluation(result, json_path: str | None) -> None:
    """Tables on stdout, unless JSON goes to stdout; JSON to a file if asked."""
    from dfx.report import (
        confusion_table,
        per_generator_table,
        summary_table,
        to_json,
        write_json,
    )

    if json_path == "-":
        print_json(to_json(result.to_dict()))
        return
    if json_path is not None:
        write_json(result.to_dict(), json_path)
    console = stdout()
    setting = "raw" if result.qf is None else f"JPEG QF {result.qf}"
    counts = ", ".join(f"{n} {label}" for label, n in result.counts.items())
    console.print(
        summary_table(
            [(setting, result.multiclass, result.binary)],
            f"Evaluation on {result.n} images ({counts}), %",
        )
    )
    if result.multiclass is not None:
        console.print(confusion_table(result.multiclass["confusion"]))
    console.print(per_generator_table(result.per_generator))
    if json_path is not None:
        console.print(f"wrote {json_path}", markup=False)
