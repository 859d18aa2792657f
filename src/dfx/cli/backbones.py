"""dfx backbones: list the selectable backbones (a static table: no torch import)."""

from __future__ import annotations

from dfx.cli.console import print_rows
from dfx.cli.errors import handle_errors
from dfx.cli.options import JsonFlag
from dfx.cli.outputs import emit_json

COLUMNS = ("backbone", "features", "input", "ImageNet weights", "explained layer")
"""The table's headings on a terminal."""
TSV_COLUMNS = ("backbone", "features", "input", "imagenet_weights", "explained_layer")
"""The header of the tab-separated lines off a terminal (full names, never cut)."""


@handle_errors
def backbones_command(as_json: JsonFlag = False) -> None:
    """List the backbones with their feature size, default input and explained layer."""
    from rich.table import Table

    from dfx.cli.tables import tsv
    from dfx.models.inference_settings import settings_for
    from dfx.models.registry import REGISTRY

    rows = [spec.to_dict() | settings_for(spec.name).to_dict() for spec in REGISTRY.values()]
    if emit_json(rows, as_json):
        return
    cells = [
        [
            row["name"],
            str(row["feature_dim"]),
            f"{row['resize']}" + (f" → crop {row['crop']}" if row["crop"] else ""),
            "yes" if row["imagenet_weights"] else "no",
            row["attribution_layer"],
        ]
        for row in rows
    ]

    def table() -> Table:
        table = Table(*COLUMNS)
        for row in cells:
            table.add_row(*row)
        return table

    print_rows(table, lambda: tsv(TSV_COLUMNS, cells))
