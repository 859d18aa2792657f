"""dfx jpeg-robustness and dfx robustness: one table per run, raw row first (paper Tables 2–3)."""

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
)
from dfx.cli.errors import exit_if_failures, handle_errors
from dfx.cli.model_reference import check_model, fetch_model
from dfx.cli.options import EVALUATION_OPTIONS, ModelOption, evaluation_options, with_options
from dfx.cli.outputs import check_outputs, emit, plan_outputs
from dfx.models.inference_settings import batch_size_help

JPEG_EPILOG = """\
[bold]Examples[/bold]

  dfx jpeg-robustness -M model.pt -m manifest.csv                # raw, QF 90 ... 50
  dfx jpeg-robustness -M model.pt -m manifest.csv --qf 95 --qf 75 --plots plots/
  dfx jpeg-robustness -M model.pt --data ~/sets/test --json | jq '.rows[].binary.accuracy'

Each image is read once; every variant (raw and one per QF) is compressed in memory
with Pillow (4:4:4 chroma) and classified. Nothing is written beside the data.
Exit codes: 0 ok, 1 some images unreadable, 2 bad input, 3 internal error.
"""

EPILOG = """\
[bold]Examples[/bold]

  dfx robustness -M model.pt -m manifest.csv                     # the official release's tests
  dfx robustness -M model.pt -m manifest.csv -p "jpeg:90,50 blur:1,2 resize:0.5 mirror"
  dfx robustness -M model.pt -m manifest.csv -p field -o field.csv --plots plots/

Spec: space-separated kind[:values] tokens. jpeg:QF,... (1-100); blur:SIGMA,...
(pixels); blurk:KERNEL,... (odd kernel side with sigma 4, as the official release
blurs); resize:FACTOR,...; rotate:DEGREES,...; mirror[:h|v|b]. A kind without values
takes its default grid (jpeg 90..50, blur 0..4, blurk 3,7,15, resize 0.5, rotate
45,135). Presets: paper (jpeg 90..50); official (the default: jpeg 90..50,
blurk:3,7,15, resize:0.5,2, mirror:b, rotate:45,135); field (jpeg 100..30, blur 0..4,
resize 0.5). See docs/robustness.md.
"""

DataOption = Annotated[
    Path | None,
    typer.Option("--data", help="Labelled folder instead of a manifest (either layout)."),
]
PlotFile = Annotated[
    Path | None,
    typer.Option("--plot", metavar="FILE", hidden=True, help="Old name: the plot as FILE."),
]
"""The plot file of dfx 0.x (``--plot FILE``), kept hidden beside ``--plots DIR``."""
VariantBatchSize = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        help="Network inputs (images × variants) per step, at least one image "
        f"(default: {batch_size_help()}).",
    ),
]


@handle_errors
@with_options(EVALUATION_OPTIONS)
def jpeg_robustness_command(
    model: ModelOption,
    data: DataOption = None,
    qf: Annotated[
        list[int] | None,
        typer.Option("--qf", min=1, max=100, help="JPEG quality (repeat; default 90 80 70 60 50)."),
    ] = None,
    plot: PlotFile = None,
    batch_size: VariantBatchSize = None,
    **options,
) -> None:
    """Accuracy raw and after JPEG compression at each quality factor (paper Tables 2–3)."""
    labelled = _check_first(model, data, plot, options)
    from dfx.data.perturbations import DEFAULT_QFS, jpeg_grid  # loads torch

    perturbations = jpeg_grid(list(qf) if qf else list(DEFAULT_QFS))
    _run(
        "JPEG robustness",
        "jpeg-robustness.png",
        perturbations,
        model,
        labelled,
        plot,
        batch_size,
        options,
    )


@handle_errors
@with_options(EVALUATION_OPTIONS)
def robustness_command(
    model: ModelOption,
    perturb: Annotated[
        list[str] | None,
        typer.Option(
            "--perturb",
            "-p",
            help="Perturbation spec, e.g. 'jpeg:90,50 blur:1,2 mirror' (repeatable; "
            "default: official).",
        ),
    ] = None,
    data: DataOption = None,
    plot: PlotFile = None,
    batch_size: VariantBatchSize = None,
    **options,
) -> None:
    """Accuracy raw and under each perturbation of a spec: JPEG, blur, resize, rotation, mirror."""
    labelled = _check_first(model, data, plot, options)
    from dfx.data.perturbations import parse_spec

    perturbations = parse_spec(" ".join(perturb) if perturb else "official")
    _run("Robustness", "robustness.png", perturbations, model, labelled, plot, batch_size, options)


def _check_first(model: Path, data: Path | None, plot: Path | None, options: dict):
    """Outputs, model path and data, checked before torch loads: mistakes fail at once."""
    from dfx.data.labelled import read_labelled_sets

    plan = _output_plan(options)
    check_outputs([*plan.file_options(), ("--plot", plot)], {"--plots": options["plots"]})
    check_model(model, options["sha256"])
    labelled = read_labelled_sets(
        options["manifest"],
        options["role"],
        [data] if data is not None else [],
        options["allow_changed"],
    )
    report_labelled_sets(labelled)
    return labelled


def _output_plan(options: dict):
    return plan_outputs(
        options["outputs"],
        as_json=options["as_json"],
        as_csv=options["as_csv"],
        formats=("json", "csv"),
    )


def _run(
    title: str,
    plot_name: str,
    perturbations: list,
    model: str,
    labelled,
    plot: Path | None,
    batch_size: int | None,
    options: dict,
) -> None:
    """Both commands, once their inputs are checked: load the model, run, render."""
    from dfx.api import load_detector
    from dfx.engine.robustness import measure_robustness

    plots = options["plots"]
    plot_files = [p for p in (plot, plots / plot_name if plots is not None else None) if p]
    detector = load_detector(
        fetch_model(model, options["sha256"]),
        options["device"],
        options["precision"],
        runtime=options["backend"],
    )
    settings = evaluation_options(options, batch_size)
    with RichProgress() as progress:
        result = measure_robustness(
            detector, labelled.sets[0].images, perturbations, settings, progress=progress
        )
    report_failures(result.failures)
    render_robustness(result, title, _output_plan(options), plot_files)
    exit_if_failures(result.failures)


def render_robustness(result, title: str, plan, plots: list[Path]) -> None:
    """Tables on stdout (unless JSON or CSV goes there); JSON, CSV and plot files if asked."""
    from dfx.cli.tables import forensic_table, summary_table
    from dfx.report import headline_row

    document = result.to_dict()
    written = []
    for plot in plots:
        from dfx.plots import robustness_plot

        n = result.rows[0].n
        written.append(robustness_plot(document["rows"], plot, f"{title} (n = {n})"))
    rows = [headline_row(row) for row in document["rows"]]
    files, used_stdout = emit(plan, document, rows)
    written += files
    report_written(written)
    if used_stdout:
        return
    console = stdout()
    counts = ", ".join(f"{n} {label}" for label, n in result.counts.items())
    console.print(
        summary_table(
            [(row.perturbation, row.multiclass, row.binary) for row in result.rows],
            f"{title} on {result.rows[0].n} images ({counts}), %",
        )
    )
    console.print(
        forensic_table(
            [(row.perturbation, row.binary) for row in result.rows],
            document["threshold"],
            "Real/fake",
        )
    )
