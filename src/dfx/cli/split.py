"""dfx split: give every image of a data folder a role (base, fusion, test)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfx.cli.console import RichProgress, notice, report_list, report_skipped, stdout
from dfx.cli.errors import EXIT_INPUT_FAILED, fail, handle_errors
from dfx.cli.options import JsonFlag, Seed, artifact_option
from dfx.cli.outputs import check_outputs, emit_json

EPILOG = """\
[bold]Examples[/bold]

  dfx split data/                              # writes data/../manifest.csv
  dfx split data/ --out runs/manifest.csv --seed 1
  dfx split data/ --ratios 0.5 0.3 0.2 --json
  dfx split --from-guidance guidance.csv datasets/   # the official release's partition
  dfx split data/ --drop-label-conflicts       # leave out files filed under two labels

Layout: DATA/<class>/<generator>/.../<image>, class = dm | gan | real (or the official
dm_generated / gan_generated). An image's role depends only on its content and the
seed: re-running gives the same manifest, adding images never moves old ones, and
byte-identical copies share one role. Copies under different labels are refused
(exit 2, the files named) unless --drop-label-conflicts leaves them all out.
With --from-guidance the roles come from the official guidance.csv (label 0 base,
1 fusion, 2 test; image_path relative to DATA with a leading '/', or absolute under it);
rows naming no usable image are reported and left out (exit 1); images the file does
not name are left out with a notice. An existing manifest is never overwritten
without --force.
"""


@handle_errors
def split_command(
    data: Annotated[
        Path, typer.Argument(metavar="DATA", help="Data folder with dm/, gan/ and real/ inside.")
    ],
    out: Annotated[
        Path | None,
        artifact_option(help="Manifest CSV to write (default: manifest.csv beside DATA)."),
    ] = None,
    ratios: Annotated[
        tuple[float, float, float],
        typer.Option("--ratios", help="Shares of the base, fusion and test roles."),
    ] = (0.4, 0.4, 0.2),
    seed: Seed = 0,
    from_guidance: Annotated[
        Path | None,
        typer.Option(
            "--from-guidance",
            help="Take the roles from the official release's guidance.csv instead of drawing them.",
        ),
    ] = None,
    drop_label_conflicts: Annotated[
        bool,
        typer.Option(
            "--drop-label-conflicts",
            help="Leave out identical files that sit under different labels instead of failing.",
        ),
    ] = False,
    as_json: JsonFlag = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Overwrite an existing manifest (models trained from it "
            "then no longer match its roles).",
        ),
    ] = False,
) -> None:
    """Split a labelled data folder into base / fusion / test roles and write a manifest CSV."""
    from dfx.cli.tables import split_table
    from dfx.data.manifest import DEFAULT_RATIOS, ROLES, write_manifest

    target = out if out is not None else data.resolve().parent / "manifest.csv"
    check_outputs({"--output": target})
    if target.exists() and not force:
        raise fail(
            f"{target} already exists and models may have been trained from its roles: "
            "pass --force to overwrite it, or --output to write another file."
        )
    guidance = None
    if from_guidance is not None:
        if tuple(ratios) != DEFAULT_RATIOS or seed != 0 or drop_label_conflicts:
            raise fail(
                "--ratios, --seed and --drop-label-conflicts do not apply with "
                "--from-guidance, which fixes roles."
            )
        from dfx.interop.guidance import manifest_from_guidance

        guidance = manifest_from_guidance(from_guidance, data)
        manifest = guidance.manifest
    else:
        manifest = _make_manifest(data, ratios, seed, drop_label_conflicts)
    write_manifest(manifest, target)
    report_skipped(manifest.skip_reasons)
    report_list(
        f"left out {len(manifest.unreadable)} unreadable image(s):",
        [f"{path}: {reason}" for path, reason in manifest.unreadable],
    )
    report_list(
        f"left out {len(manifest.conflicts)} set(s) of identical files under different labels:",
        [conflict.describe() for conflict in manifest.conflicts],
    )
    if guidance is not None:
        _report_guidance(guidance)
    counts = manifest.counts()
    notice(f"wrote {target} ({len(manifest.rows)} images)")
    document = {
        "manifest": str(target),
        "n": len(manifest.rows),
        "skipped": manifest.skipped,
        "skip_reasons": manifest.skip_reasons,
        "failures": [{"path": path, "error": reason} for path, reason in manifest.unreadable],
        "duplicate_groups": manifest.copies,
        "label_conflicts": [c.to_dict() for c in manifest.conflicts],
        "counts": [
            {"label": label, "generator": generator, "split": split, "n": n}
            for (label, generator, split), n in sorted(counts.items())
        ],
    } | ({"guidance": _guidance_json(from_guidance, guidance)} if guidance else {})
    if not emit_json(document, as_json):
        stdout().print(split_table(counts, ROLES))
    if manifest.copies:
        copies = sum(len(group) for group in manifest.copies)
        notice(
            f"{copies} images are byte-identical copies in {len(manifest.copies)} "
            "group(s); each group has one role ('dfx audit' lists them)."
        )
    if manifest.unreadable or (guidance is not None and guidance.left_out):
        raise typer.Exit(EXIT_INPUT_FAILED)


def _make_manifest(data: Path, ratios, seed: int, drop_label_conflicts: bool):
    """The manifest of ``data``, under a progress bar of the images decoded once each."""
    from dfx.data.layout import scan_dataset
    from dfx.data.manifest import check_ratios, make_manifest, require_class_layout

    check_ratios(ratios)
    require_class_layout(data)  # from folder names, before any image is read
    scan = scan_dataset(data)
    with RichProgress() as progress:
        total = len(scan.records) + len(scan.unreadable)
        progress.start("decode", total, "check that each image decodes")
        manifest = make_manifest(
            data,
            ratios,
            seed,
            scan=scan,
            drop_conflicts=drop_label_conflicts,
            on_file=lambda: progress.advance("decode"),
        )
        progress.finish("decode")
    return manifest


def _report_guidance(guidance) -> None:
    """Say on stderr which guidance rows and images did not carry over."""
    report_list(
        f"left out {len(guidance.left_out)} of {guidance.rows} guidance row(s):",
        [f"line {i.line}: {i.image_path}: {i.reason}" for i in guidance.left_out],
    )
    report_list(
        f"{len(guidance.model_mismatches)} row(s) whose model column differs from the "
        "generator folder (the folder is used):",
        [f"line {i.line}: {i.image_path}: {i.reason}" for i in guidance.model_mismatches],
    )
    if guidance.unlisted:
        notice(
            f"{len(guidance.unlisted)} image(s) under DATA are not in the guidance "
            "file and are not in the manifest."
        )


def _guidance_json(path: Path, guidance) -> dict:
    def issues(items) -> list[dict]:
        return [{"line": i.line, "image_path": i.image_path, "reason": i.reason} for i in items]

    return {
        "file": str(path),
        "rows": guidance.rows,
        "left_out": issues(guidance.left_out),
        "model_mismatches": issues(guidance.model_mismatches),
        "unlisted": len(guidance.unlisted),
    }
