"""dfx evaluate: measure a detector on labelled images (paper Tables 2 and 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfx.cli.common import (
    EXIT_INPUT_FAILED,
    AllowChanged,
    Compile,
    Device,
    InferenceBatchSize,
    MaxPixels,
    Precision,
    RichProgress,
    Seed,
    Workers,
    check_outputs,
    exit_if_failures,
    fail,
    handle_errors,
    report_failures,
    report_manifest_checks,
    report_skipped,
    stdout,
    write_outputs,
)
from dfx.cli.model_reference import ModelOption, Sha256Option, fetch_model
from dfx.limits import DEFAULT_MAX_PIXELS

EPILOG = """\
[bold]Examples[/bold]

  dfx evaluate --model model.pt -m manifest.csv                 # the test split
  dfx evaluate --model model.pt -m manifest.csv --qf 50         # after JPEG at quality 50
  dfx evaluate --model model.pt --data ~/sets/wang2020/progan   # 0_real/1_fake layout
  dfx evaluate --model model.pt --data sets/a --data sets/b --csv table4.csv
  dfx evaluate --model model.pt -m manifest.csv --plots plots/ --threshold 0.3
  dfx evaluate --model model.pt -m manifest.csv --json report.json --min-accuracy 0.9
  torchrun --standalone --nproc-per-node 8 -m dfx evaluate --model model.pt -m manifest.csv

Test sets are balanced to the smallest class by seeded sampling (--no-balanced to
keep all). Besides the argmax decision, images are called fake when P(fake) >= t,
t calibrated on validation data at training time (--threshold overrides). Several
--data sets give one row per set (generalization, paper Table 4). JPEG compression
happens in memory (Pillow, 4:4:4 chroma): nothing is written. Exit codes: 0 ok,
1 some images unreadable or --min-accuracy not met, 2 bad input, 3 internal error,
130 interrupted.
"""

ThresholdOption = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        min=0.0,
        max=1.0,
        help="Call an image fake when P(fake) >= this (default: the model's calibrated one).",
    ),
]


@handle_errors
def evaluate_command(
    model: ModelOption,
    sha256: Sha256Option = None,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", "-m", help="Manifest CSV from 'dfx split'.")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Manifest role to evaluate.")] = "test",
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data", help="Labelled folder instead of a manifest (either layout; repeatable)."
        ),
    ] = None,
    qf: Annotated[
        int | None, typer.Option("--qf", min=1, max=100, help="JPEG quality applied first.")
    ] = None,
    balanced: Annotated[
        bool, typer.Option("--balanced/--no-balanced", help="Balance classes by sampling.")
    ] = True,
    threshold: ThresholdOption = None,
    json_path: Annotated[
        str | None, typer.Option("--json", help="Write the metrics as JSON to FILE ('-': stdout).")
    ] = None,
    csv_path: Annotated[
        str | None,
        typer.Option("--csv", help="Write the headline metrics as CSV to FILE ('-': stdout)."),
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option("--plots", help="Write confusion, ROC and PR plots (PNG) and points to DIR."),
    ] = None,
    min_accuracy: Annotated[
        float | None,
        typer.Option(
            "--min-accuracy",
            min=0.0,
            max=1.0,
            help="Exit 1 if 3-class accuracy (binary for 0_real/1_fake data; mean binary "
            "accuracy for several sets) is lower.",
        ),
    ] = None,
    batch_size: InferenceBatchSize = None,
    device: Device = "auto",
    precision: Precision = "auto",
    compile: Compile = False,
    workers: Workers = None,
    seed: Seed = 0,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    allow_changed: AllowChanged = False,
) -> None:
    """Evaluate a detector: 3-class and binary metrics, AP, AUC, EER, per-generator accuracy."""
    from dfx.api import load_detector
    from dfx.engine.evaluation import evaluate, evaluate_sets

    data = list(data or [])
    check_outputs([json_path, csv_path], plots)
    # The cheap checks of the data come first, so a typo fails before a model loads.
    sets, skipped = load_images(manifest, split, data, allow_changed)
    report_skipped(skipped)
    detector = load_detector(fetch_model(model, sha256), device, precision, compile)
    options = {
        "qf": qf,
        "balanced": balanced,
        "seed": seed,
        "threshold": threshold,
        "batch_size": batch_size,
        "workers": workers,
        "max_pixels": max_pixels,
    }
    with RichProgress() as progress:
        if len(sets) == 1:
            result = evaluate(detector, sets[0][2], progress=progress, **options)
        else:
            result = evaluate_sets(detector, sets, progress=progress, **options)
    report_failures(result.failures)
    if len(sets) == 1:
        render_evaluation(result, json_path, csv_path, plots)
        headline = (result.multiclass or result.binary)["accuracy"]
    else:
        render_generalization(result, json_path, csv_path, plots)
        headline = result.mean()["accuracy"]
    if min_accuracy is not None and headline < min_accuracy:
        raise fail(
            f"accuracy {headline:.4f} is below --min-accuracy {min_accuracy}.", EXIT_INPUT_FAILED
        )
    exit_if_failures(result.failures)


def load_images(manifest: Path | None, split: str, data: list[Path], allow_changed: bool = False):
    """(name, source, labelled images) per data set, and the files passed over with reasons.

    A manifest's files are checked against their recorded size and hash first; with
    ``allow_changed`` the changed ones are left out (and reported) instead of refused.
    """
    from dfx.data.manifest import ROLES, read_manifest
    from dfx.engine.evaluation import images_from_folder, images_from_manifest, set_names
    from dfx.errors import DfxError

    if (manifest is None) == (not data):
        raise DfxError("give exactly one of --manifest FILE or --data DIR.")
    if manifest is not None:
        if split not in ROLES:
            raise DfxError(f"--split {split!r} is not one of {', '.join(ROLES)}.")
        loaded = read_manifest(manifest, splits=(split,), allow_changed=allow_changed)
        report_manifest_checks(loaded)
        return [(manifest.name, str(manifest), images_from_manifest(loaded, split))], {}
    sets, skipped = [], {}
    for name, folder in zip(set_names(data), data):
        images, passed_over = images_from_folder(folder)
        sets.append((name, str(folder), images))
        skipped |= {str(Path(folder) / file): reason for file, reason in passed_over.items()}
    return sets, skipped


def render_evaluation(result, json_path: str | None, csv_path=None, plots=None) -> None:
    """Tables on stdout, unless JSON or CSV goes to stdout; JSON, CSV and plots if asked."""
    from dfx.report import (
        confusion_table,
        forensic_table,
        headline_row,
        per_generator_table,
        summary_table,
    )

    document = result.to_dict()
    written = []
    if plots is not None:
        from dfx.plots import evaluation_plots

        written += evaluation_plots(result, plots)
    files, used_stdout = write_outputs(document, [headline_row(document)], json_path, csv_path)
    written += files
    if used_stdout:
        return
    console = stdout()
    setting = "raw" if result.qf is None else f"JPEG QF {result.qf}"
    counts = ", ".join(f"{n} {label}" for label, n in result.counts.items())
    console.print(
        summary_table(
            [(setting, result.multiclass, result.binary)],
            f"Evaluation on {result.n} images ({counts}), %",
        )
    )
    console.print(forensic_table([(setting, result.binary)], document["threshold"], "Real/fake"))
    if result.multiclass is not None:
        console.print(confusion_table(result.multiclass["confusion"]))
    console.print(per_generator_table(result.generators))
    for path in written:
        console.print(f"wrote {path}", markup=False)


def render_generalization(result, json_path, csv_path, plots) -> None:
    """One row per data set (paper Table 4); JSON, CSV and per-set plots if asked."""
    from dfx.report import generalization_table, headline_row

    document = result.to_dict()
    written = []
    if plots is not None:
        from dfx.plots import evaluation_plots

        for name, _, evaluation in result.sets:
            written += evaluation_plots(evaluation, Path(plots) / _folder_name(name))
    rows = [
        {"name": entry["name"], "data": entry["data"]} | headline_row(entry)
        for entry in document["sets"]
    ]
    files, used_stdout = write_outputs(document, rows, json_path, csv_path)
    written += files
    if used_stdout:
        return
    console = stdout()
    console.print(generalization_table(document["sets"], document["mean"]))
    threshold = document["sets"][0]["threshold"]
    console.print(
        f"acc @ t: decision P(fake) >= {threshold['value']:.4g} ({threshold['source']})",
        markup=False,
    )
    for path in written:
        console.print(f"wrote {path}", markup=False)


def _folder_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "set"
