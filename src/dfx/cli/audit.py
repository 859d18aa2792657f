"""dfx audit: look for traits besides the generator that tell a data set's classes apart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfx.cli.console import (
    RichProgress,
    report_list,
    report_manifest_checks,
    report_skipped,
    report_written,
    stderr,
    stdout,
)
from dfx.cli.errors import EXIT_INPUT_FAILED, fail, handle_errors
from dfx.cli.options import JsonFlag, OptionalManifest, OutputFiles, PlotsOption
from dfx.cli.outputs import check_outputs, emit, plan_outputs

EPILOG = """\
[bold]Examples[/bold]

  dfx audit data/                          # a class-layout (or 0_real/1_fake) folder
  dfx audit --manifest manifest.csv        # with roles: copies across base/fusion/test
  dfx audit data/ -o audit.json --plots audit-plots/
  dfx audit data/ --json | jq '.shortcut_score'

The shortcut score is the cross-validated balanced accuracy with which a decision tree
tells the classes apart from container traits alone (format, JPEG quality, width,
height, colour mode, bytes per pixel): near chance (0.5 for real vs fake) is good; from
0.8 on a warning is printed, because a detector trained on such data may learn the
container instead of the generator. Copies are byte-identical files; near-copies have
perceptual hashes within 4 of 64 bits and matching colours (re-encoded or resized
copies). Nothing is written except --output and --plots.
Exit codes: 0 ok, 1 some images unreadable, 2 bad input.
"""


@handle_errors
def audit_command(
    data: Annotated[
        Path | None,
        typer.Argument(metavar="DATA", help="Data folder (dm/gan/real or 0_real/1_fake)."),
    ] = None,
    manifest: OptionalManifest = None,
    as_json: JsonFlag = False,
    outputs: OutputFiles = None,
    plots: PlotsOption = None,
    workers: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="Files read at once (default: CPUs, at most 8)."),
    ] = None,
) -> None:
    """Audit a data set: container traits per class, a shortcut score, copies across roles."""
    from dfx.data.audit import audit

    if (data is None) == (manifest is None):
        raise fail("give either a data folder DATA or --manifest, not both or neither.")
    plan = plan_outputs(outputs, as_json=as_json)
    check_outputs(plan.file_options(), {"--plots": plots})
    if manifest is not None:
        from dfx.data.manifest import read_manifest

        loaded = read_manifest(manifest, allow_changed=True)
        report_manifest_checks(loaded)
        root = loaded.root
        records = loaded.rows
    else:
        from dfx.data.layout import scan_dataset

        scan = scan_dataset(data)
        report_skipped(scan.reasons)
        root = scan.root
        records = scan.records
    with RichProgress(enabled=len(records) > 200) as progress:
        report = audit(root, records, workers=workers, progress=progress)
    report_list(
        f"skipped {len(report.failures)} unreadable image(s):",
        [f"{path}: {reason}" for path, reason in report.failures],
    )
    if not report.files:
        raise fail(f"none of the {len(records)} images could be read.")
    document = report.to_dict()
    written = []
    if plots is not None:
        from dfx.plots import audit_plots

        written += audit_plots(report, plots)
    files, used_stdout = emit(plan, document)
    written += files
    if not used_stdout:
        _render(document)
    report_written(written)  # on stderr, hidden by --quiet
    if document["shortcut_warning"]:
        _warn(document)
    if report.failures:
        raise typer.Exit(EXIT_INPUT_FAILED)


def _render(document: dict) -> None:
    from dfx.cli.tables import audit_traits_table, copies_table, shortcut_table

    console = stdout()
    console.print(audit_traits_table(document["generators"]))
    console.print(shortcut_table(document))
    counts = document["copy_counts"]
    console.print(
        f"copies: {counts['exact']} group(s) of identical files "
        f"({counts['exact_across_labels']} across labels, {counts['exact_across_roles']} "
        f"across roles); {counts['near']} near-copy pair(s) ({counts['near_across_labels']} "
        f"across labels, {counts['near_across_roles']} across roles)",
        markup=False,
    )
    if any(group["crosses"] for group in document["copies"]):
        console.print(copies_table(document["copies"]))


def _warn(document: dict) -> None:
    scores = document["shortcut_score"]
    worst = max((s for s in scores.values() if s is not None), default=0.0)
    traits = sorted(
        ((s, t) for t, s in document["shortcut_score_by_trait"].items() if s is not None),
        reverse=True,
    )
    telling = ", ".join(f"{t} {s:.2f}" for s, t in traits[:3])
    console = stderr()
    console.print(
        f"[yellow]warning:[/yellow] container traits alone tell the classes apart (shortcut "
        f"score {worst:.2f}; alone for real vs fake: {telling}). A detector trained on this "
        "data may learn the file format instead of the generator. Consider:",
        highlight=False,
    )
    for advice in document["advice"]:
        console.print(f"  - {advice}", markup=False)
