"""dfx split: give every image of a data folder a role (base, fusion, test)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfx.cli.common import Seed, handle_errors, print_json, report_skipped, stdout

EPILOG = """\
[bold]Examples[/bold]

  dfx split data/                              # writes data/../manifest.csv
  dfx split data/ --out runs/manifest.csv --seed 1
  dfx split data/ --ratios 0.5 0.3 0.2 --json

Layout: DATA/<class>/<generator>/.../<image>, class = dm | gan | real (or the official
dm_generated / gan_generated). An image's role depends only on its relative path and
the seed: re-running gives the same manifest, and adding images never moves old ones.
"""


@handle_errors
def split_command(
    data: Annotated[
        Path, typer.Argument(metavar="DATA", help="Data folder with dm/, gan/ and real/ inside.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Manifest CSV to write (default: manifest.csv beside DATA)."
        ),
    ] = None,
    ratios: Annotated[
        tuple[float, float, float],
        typer.Option("--ratios", help="Shares of the base, fusion and test roles."),
    ] = (0.4, 0.4, 0.2),
    seed: Seed = 0,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the counts as JSON instead of a table.")
    ] = False,
) -> None:
    """Split a labelled data folder into base / fusion / test roles and write a manifest CSV."""
    from dfx.data.manifest import ROLES, make_manifest, write_manifest
    from dfx.report import split_table, to_json

    manifest = make_manifest(data, ratios, seed)
    target = out if out is not None else data.resolve().parent / "manifest.csv"
    write_manifest(manifest, target)
    report_skipped(manifest.skipped, manifest.skip_reasons)
    counts = manifest.counts()
    if json_output:
        print_json(
            to_json(
                {
                    "manifest": str(target),
                    "n": len(manifest.rows),
                    "skipped": manifest.skipped,
                    "skip_reasons": manifest.skip_reasons,
                    "counts": [
                        {"label": label, "generator": generator, "split": split, "n": n}
                        for (label, generator, split), n in sorted(counts.items())
                    ],
                }
            )
        )
        return
    console = stdout()
    console.print(split_table(counts, ROLES))
    console.print(f"wrote {target} ({len(manifest.rows)} images)", markup=False)
