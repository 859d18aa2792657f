"""dfx jpeg-robustness and dfx robustness: one table per run, raw row first (paper Tables 2–3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfx.cli.common import (
    AllowChanged,
    Device,
    MaxPixels,
    Precision,
    RichProgress,
    Seed,
    Workers,
    check_outputs,
    exit_if_failures,
    handle_errors,
    report_failures,
    report_skipped,
    stdout,
    write_outputs,
)
from dfx.cli.evaluate import ThresholdOption
from dfx.cli.model_reference import ModelOption, Sha256Option, fetch_model
from dfx.limits import DEFAULT_MAX_PIXELS

JPEG_EPILOG = """\
[bold]Examples[/bold]

  dfx jpeg-robustness --model model.pt -m manifest.csv                # raw, QF 90 ... 50
  dfx jpeg-robustness --model model.pt -m manifest.csv --qf 95 --qf 75 --plot jpeg.png
  dfx jpeg-robustness --model model.pt --data ~/sets/test --json - | jq '.rows[].binary.accuracy'

Each image is read once; every variant (raw and one per QF) is compressed in memory
with Pillow (4:4:4 chroma) and classified. Nothing is written beside the data.
Exit codes: 0 ok, 1 some images unreadable, 2 bad input, 3 internal error.
"""

EPILOG = """\
[bold]Examples[/bold]

  dfx robustness --model model.pt -m manifest.csv                     # the official release's tests
  dfx robustness --model model.pt -m manifest.csv -p "jpeg:90,50 blur:1,2 resize:0.5 mirror"
  dfx robustness --model model.pt -m manifest.csv -p field --csv field.csv --plot field.png

Spec: space-separated kind[:values] tokens. jpeg:QF,... (1-100); blur:SIGMA,...
(pixels); blurk:KERNEL,... (odd kernel side with sigma 4, as the official release
blurs); resize:FACTOR,...; rotate:DEGREES,...; mirror[:h|v|b]. A kind without values
takes its default grid (jpeg 90..50, blur 0..4, blurk 3,7,15, resize 0.5, rotate
45,135). Presets: paper (jpeg 90..50); official (the default: jpeg 90..50,
blurk:3,7,15, resize:0.5,2, mirror:b, rotate:45,135); field (jpeg 100..30, blur 0..4,
resize 0.5). See docs/robustness.md.
"""

ManifestOpt = Annotated[
    Path | None, typer.Option("--manifest", "-m", help="Manifest CSV from 'dfx split'.")
]
SplitOpt = Annotated[str, typer.Option("--split", help="Manifest role to evaluate.")]
DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Labelled folder instead of a manifest (either layout)."),
]
BalancedOpt = Annotated[
    bool, typer.Option("--balanced/--no-balanced", help="Balance classes by sampling.")
]
JsonOpt = Annotated[
    str | None, typer.Option("--json", help="Write the rows as JSON to FILE ('-': stdout).")
]
CsvOpt = Annotated[
    str | None, typer.Option("--csv", help="Write one CSV line per row to FILE ('-': stdout).")
]
PlotOpt = Annotated[
    Path | None, typer.Option("--plot", help="Write accuracy per row as a PNG plot to FILE.")
]
BatchOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        help="Network inputs (images × variants) per step (default: 32 on CPU, 256 on CUDA).",
    ),
]


@handle_errors
def jpeg_robustness_command(
    model: ModelOption,
    sha256: Sha256Option = None,
    manifest: ManifestOpt = None,
    split: SplitOpt = "test",
    data: DataOpt = None,
    qf: Annotated[
        list[int] | None,
        typer.Option("--qf", min=1, max=100, help="JPEG quality (repeat; default 90 80 70 60 50)."),
    ] = None,
    balanced: BalancedOpt = True,
    threshold: ThresholdOption = None,
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    plot: PlotOpt = None,
    batch_size: BatchOpt = None,
    device: Device = "auto",
    precision: Precision = "auto",
    workers: Workers = None,
    seed: Seed = 0,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    allow_changed: AllowChanged = False,
) -> None:
    """Accuracy raw and after JPEG compression at each quality factor (paper Tables 2–3)."""
    from dfx.data.perturbations import DEFAULT_QFS, jpeg_grid

    perturbations = jpeg_grid(list(qf) if qf else list(DEFAULT_QFS))
    _run(
        "JPEG robustness",
        perturbations,
        model=model,
        sha256=sha256,
        manifest=manifest,
        split=split,
        data=data,
        balanced=balanced,
        threshold=threshold,
        json_path=json_path,
        csv_path=csv_path,
        plot=plot,
        batch_size=batch_size,
        device=device,
        precision=precision,
        workers=workers,
        seed=seed,
        max_pixels=max_pixels,
        allow_changed=allow_changed,
    )


@handle_errors
def robustness_command(
    model: ModelOption,
    sha256: Sha256Option = None,
    perturb: Annotated[
        list[str] | None,
        typer.Option(
            "--perturb",
            "-p",
            help="Perturbation spec, e.g. 'jpeg:90,50 blur:1,2 mirror' (repeatable; "
            "default: official).",
        ),
    ] = None,
    manifest: ManifestOpt = None,
    split: SplitOpt = "test",
    data: DataOpt = None,
    balanced: BalancedOpt = True,
    threshold: ThresholdOption = None,
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    plot: PlotOpt = None,
    batch_size: BatchOpt = None,
    device: Device = "auto",
    precision: Precision = "auto",
    workers: Workers = None,
    seed: Seed = 0,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    allow_changed: AllowChanged = False,
) -> None:
    """Accuracy raw and under each perturbation of a spec: JPEG, blur, resize, rotation, mirror."""
    from dfx.data.perturbations import parse_spec

    perturbations = parse_spec(" ".join(perturb) if perturb else "official")
    _run(
        "Robustness",
        perturbations,
        model=model,
        sha256=sha256,
        manifest=manifest,
        split=split,
        data=data,
        balanced=balanced,
        threshold=threshold,
        json_path=json_path,
        csv_path=csv_path,
        plot=plot,
        batch_size=batch_size,
        device=device,
        precision=precision,
        workers=workers,
        seed=seed,
        max_pixels=max_pixels,
        allow_changed=allow_changed,
    )


def _run(
    title: str,
    perturbations: list,
    *,
    model: str,
    sha256: str | None,
    manifest: Path | None,
    split: str,
    data: Path | None,
    balanced: bool,
    threshold: float | None,
    json_path: str | None,
    csv_path: str | None,
    plot: Path | None,
    batch_size: int | None,
    device: str,
    precision: str,
    workers: int | None,
    seed: int,
    max_pixels: int | None,
    allow_changed: bool,
) -> None:
    """Both commands: check the data, load the model, run, render."""
    from dfx.api import load_detector
    from dfx.cli.evaluate import load_images
    from dfx.engine.robustness import robustness

    check_outputs([json_path, csv_path, plot])
    images, skipped = load_images(
        manifest, split, [data] if data is not None else [], allow_changed
    )
    report_skipped(skipped)
    detector = load_detector(fetch_model(model, sha256), device, precision)
    with RichProgress() as progress:
        result = robustness(
            detector,
            images[0][2],
            perturbations,
            balanced=balanced,
            seed=seed,
            threshold=threshold,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            max_pixels=max_pixels,
        )
    report_failures(result.failures)
    render_robustness(result, title, json_path, csv_path, plot)
    exit_if_failures(result.failures)


def render_robustness(result, title: str, json_path, csv_path, plot) -> None:
    """Tables on stdout (unless JSON or CSV goes there); JSON, CSV and plot files if asked."""
    from dfx.report import forensic_table, headline_row, summary_table

    document = result.to_dict()
    written = []
    if plot is not None:
        from dfx.plots import robustness_plot

        n = result.rows[0].n
        written.append(robustness_plot(document["rows"], plot, f"{title} (n = {n})"))
    rows = [headline_row(row) for row in document["rows"]]
    files, used_stdout = write_outputs(document, rows, json_path, csv_path)
    written += files
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
    for path in written:
        console.print(f"wrote {path}", markup=False)
