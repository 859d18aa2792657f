"""dfx evaluate: measure a detector on labelled images (paper Tables 2 and 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfx.cli.console import (
    RichProgress,
    report_failures,
    report_labelled_sets,
    report_written,
    stdout,
    warn,
)
from dfx.cli.errors import EXIT_INPUT_FAILED, exit_if_failures, fail, handle_errors
from dfx.cli.model_reference import check_model, fetch_model
from dfx.cli.options import (
    EVALUATION_OPTIONS,
    Compile,
    InferenceBatchSize,
    ModelOption,
    evaluation_options,
    with_options,
)
from dfx.cli.outputs import check_outputs, emit, plan_outputs

EPILOG = """\
[bold]Examples[/bold]

  dfx evaluate -M model.pt -m manifest.csv                 # the test split
  dfx evaluate -M model.pt -m manifest.csv --qf 50         # after JPEG at quality 50
  dfx evaluate -M model.pt --data ~/sets/wang2020/progan   # 0_real/1_fake layout
  dfx evaluate -M model.pt --data sets/a --data sets/b -o table4.csv
  dfx evaluate -M model.pt -m manifest.csv --plots plots/ --threshold 0.3
  dfx evaluate -M model.pt -m manifest.csv -o report.json --min-accuracy 0.9
  dfx -q evaluate -M model.pt -m manifest.csv --json | jq .binary.accuracy
  dfx evaluate -M model.onnx -m manifest.csv                 # 'dfx export' file, ONNX Runtime
  dfx evaluate -M model.pt -m manifest.csv --runtime openvino --precision bf16
  torchrun --standalone --nproc-per-node 8 -m dfx evaluate -M model.pt -m manifest.csv

Test sets are balanced to the smallest class by seeded sampling (--no-balanced to
keep all). Besides the argmax decision, images are called fake when P(fake) >= t,
t calibrated on validation data at training time (--threshold overrides). Several
--data sets give one row per set (generalization, paper Table 4). JPEG compression
happens in memory (Pillow, 4:4:4 chroma): nothing is written. Exit codes: 0 ok,
1 some images unreadable or --min-accuracy not met, 2 bad input, 3 internal error,
130 interrupted.
"""


@handle_errors
@with_options(EVALUATION_OPTIONS)
def evaluate_command(
    model: ModelOption,
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data", help="Labelled folder instead of a manifest (either layout; repeatable)."
        ),
    ] = None,
    qf: Annotated[
        int | None, typer.Option("--qf", min=1, max=100, help="JPEG quality applied first.")
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
    compile: Compile = False,
    **options,
) -> None:
    """Evaluate a detector: 3-class and binary metrics, AP, AUC, EER, per-generator accuracy."""
    plots = options["plots"]
    plan = plan_outputs(
        options["outputs"],
        as_json=options["as_json"],
        as_csv=options["as_csv"],
        formats=("json", "csv"),
    )
    check_outputs(plan.file_options(), {"--plots": plots})
    check_model(model, options["sha256"])  # before torch loads: a wrong path fails at once

    from dfx.data.labelled import read_labelled_sets

    # The cheap checks of the data come first (torch-free), so a typo fails at once.
    labelled = read_labelled_sets(
        options["manifest"], options["role"], list(data or []), options["allow_changed"]
    )
    report_labelled_sets(labelled)
    from dfx.api import load_detector
    from dfx.engine.evaluation import evaluate, evaluate_sets

    detector = load_detector(
        fetch_model(model, options["sha256"]),
        options["device"],
        options["precision"],
        compile,
        runtime=options["backend"],
    )
    warn_if_trained_on(detector, labelled)
    settings = evaluation_options(options, batch_size)
    with RichProgress() as progress:
        if len(labelled.sets) == 1:
            result = evaluate(detector, labelled.sets[0].images, settings, qf=qf, progress=progress)
        else:
            result = evaluate_sets(detector, labelled.sets, settings, qf=qf, progress=progress)
    report_failures(result.failures)
    if len(labelled.sets) == 1:
        render_evaluation(result, plan, plots)
        headline = (result.multiclass or result.binary)["accuracy"]
    else:
        render_generalization(result, plan, plots)
        headline = result.mean()["accuracy"]
    if min_accuracy is not None and headline < min_accuracy:
        raise fail(
            f"accuracy {headline:.4f} is below --min-accuracy {min_accuracy}.", EXIT_INPUT_FAILED
        )
    exit_if_failures(result.failures)


def warn_if_trained_on(detector, labelled) -> None:
    """A one-sentence warning on stderr when some images to measure were training images."""
    from dfx.data.manifest import seen_in_training

    trained_on = detector.model_file.trained_on
    if not trained_on:
        return
    known = {}
    if labelled.manifest is not None:
        manifest = labelled.manifest
        known = {str(manifest.absolute(r)): r.hash for r in manifest.rows if r.hash}
    paths = [image.path for s in labelled.sets for image in s.images]
    seen = seen_in_training(trained_on, paths, known)
    if seen:
        warn(
            f"{seen} of the {len(paths)} images given to evaluate were training images of "
            "this model, so its figures overstate how it does on new images."
        )


def render_evaluation(result, plan, plots=None) -> None:
    """Tables on stdout, unless JSON or CSV goes to stdout; JSON, CSV and plots if asked."""
    from dfx.cli.tables import confusion_table, forensic_table, per_generator_table, summary_table
    from dfx.report import headline_row

    document = result.to_dict()
    written = []
    if plots is not None:
        from dfx.plots import evaluation_plots

        written += evaluation_plots(result, plots)
    files, used_stdout = emit(plan, document, [headline_row(document)])
    written += files
    if used_stdout:
        report_written(written)
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
    report_written(written)


def render_generalization(result, plan, plots) -> None:
    """One row per data set (paper Table 4); JSON, CSV and per-set plots if asked."""
    from dfx.cli.tables import generalization_table
    from dfx.report import headline_row

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
    files, used_stdout = emit(plan, document, rows)
    written += files
    if used_stdout:
        report_written(written)
        return
    console = stdout()
    console.print(generalization_table(document["sets"], document["mean"]))
    threshold = document["sets"][0]["threshold"]
    console.print(
        f"acc @ t: decision P(fake) >= {threshold['value']:.4g} ({threshold['source']})",
        markup=False,
    )
    report_written(written)


def _folder_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "set"
