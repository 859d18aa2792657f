"""The rich tables commands print: the paper's tables and the per-image verdicts."""

from __future__ import annotations

import math
from collections import Counter

from rich.markup import escape
from rich.table import Table

from dfx.classes import CLASSES
from dfx.threshold import SOURCE_LABELS


def pct(value: float | None) -> str:
    """A fraction as a percentage with two decimals ("—" when undefined)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * value:.2f}"


def split_table(counts: Counter, roles: tuple[str, ...]) -> Table:
    """Images per class × generator × role, with totals."""
    table = Table(title="Images per role", title_justify="left")
    table.add_column("class")
    table.add_column("generator")
    for role in roles:
        table.add_column(role, justify="right")
    table.add_column("total", justify="right")
    groups = sorted({(label, generator) for label, generator, _ in counts})
    for label, generator in groups:
        cells = [counts.get((label, generator, role), 0) for role in roles]
        table.add_row(escape(label), escape(generator), *map(str, cells), str(sum(cells)))
    totals = [sum(n for (_, _, r), n in counts.items() if r == role) for role in roles]
    table.add_section()
    table.add_row("all", "", *map(str, totals), str(sum(totals)))
    return table


def base_metrics_table(rows: list[tuple[str, dict | None]]) -> Table:
    """The paper's Table 1: each base model's "target vs others" metrics on the test images."""
    table = Table(
        title="Base models on the test images (target vs others, %)", title_justify="left"
    )
    table.add_column("base model")
    for name in ("accuracy", "recall", "precision", "F1"):
        table.add_column(name, justify="right")
    for target, metrics in rows:
        metrics = metrics or {}
        table.add_row(
            target, *(pct(metrics.get(k)) for k in ("accuracy", "recall", "precision", "f1"))
        )
    return table


def summary_table(rows: list[tuple[str, dict | None, dict]], title: str) -> Table:
    """One row per setting: 3-class accuracy/F1 and binary accuracy/F1/AP/AUC (paper Tables 2–3)."""
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for name in ("3-class\nacc", "3-class\nF1", "binary\nacc", "binary\nF1", "AP", "AUC"):
        table.add_column(name, justify="right")
    for name, multiclass, binary in rows:
        multiclass = multiclass or {}
        table.add_row(
            escape(name),
            pct(multiclass.get("accuracy")),
            pct(multiclass.get("f1_macro")),
            pct(binary.get("accuracy")),
            pct(binary.get("f1")),
            pct(binary.get("ap")),
            pct(binary.get("auc")),
        )
    return table


def forensic_table(rows: list[tuple[str, dict]], threshold: dict, title: str) -> Table:
    """One row per setting: real/fake/balanced accuracy and EER; the decision at the threshold."""
    t = threshold["value"]
    table = Table(
        title=f"{title} (threshold t = {t:.4g}, {SOURCE_LABELS.get(threshold['source'], '')}), %",
        title_justify="left",
    )
    table.add_column("")
    for name in ("real\nacc", "fake\nacc", "bal.\nacc", "EER", "acc\n@ t", "real\n@ t"):
        table.add_column(name, justify="right")
    table.add_column("fake\n@ t", justify="right")
    for name, binary in rows:
        at = binary.get("at_threshold") or {}
        table.add_row(
            escape(name),
            pct(binary.get("real_accuracy")),
            pct(binary.get("fake_accuracy")),
            pct(binary.get("balanced_accuracy")),
            pct(binary.get("eer")),
            pct(at.get("accuracy")),
            pct(at.get("real_accuracy")),
            pct(at.get("fake_accuracy")),
        )
    return table


def generalization_table(sets: list[dict], mean: dict) -> Table:
    """Paper Table 4: one row per data set with its binary metrics, and their mean."""
    table = Table(title="Binary metrics per data set (%)", title_justify="left")
    table.add_column("data set", overflow="fold")
    table.add_column("n", justify="right")
    for name in ("acc", "bal.\nacc", "real\nacc", "fake\nacc", "AP", "AUC", "acc\n@ t"):
        table.add_column(name, justify="right")
    for entry in sets:
        binary = entry["binary"]
        table.add_row(
            escape(entry["name"]),
            str(entry["n"]),
            pct(binary.get("accuracy")),
            pct(binary.get("balanced_accuracy")),
            pct(binary.get("real_accuracy")),
            pct(binary.get("fake_accuracy")),
            pct(binary.get("ap")),
            pct(binary.get("auc")),
            pct((binary.get("at_threshold") or {}).get("accuracy")),
        )
    table.add_section()
    table.add_row(
        "mean",
        "",
        pct(mean.get("accuracy")),
        pct(mean.get("balanced_accuracy")),
        "",
        "",
        pct(mean.get("ap")),
        pct(mean.get("auc")),
        "",
    )
    return table


def confusion_table(confusion: list[list[int]]) -> Table:
    """The 3-class confusion matrix, rows true, columns predicted."""
    table = Table(title="Confusion matrix", title_justify="left")
    table.add_column("true \\ predicted")
    for name in CLASSES:
        table.add_column(name, justify="right")
    for name, row in zip(CLASSES, confusion):
        table.add_row(name, *map(str, row))
    return table


def per_generator_table(generators: dict[str, dict]) -> Table:
    """Per class/generator: n, accuracy, and binary accuracy (argmax and at the threshold)."""
    table = Table(title="Accuracy per generator (%)", title_justify="left")
    table.add_column("class/generator", overflow="fold")
    for name in ("n", "accuracy", "binary\nacc", "binary\nacc @ t"):
        table.add_column(name, justify="right")
    for name, entry in generators.items():
        table.add_row(
            escape(name),
            str(entry["n"]),
            pct(entry["accuracy"]),
            pct(entry["binary_accuracy"]),
            pct(entry["binary_accuracy_at_threshold"]),
        )
    return table


def predictions_table(records: list[dict]) -> Table:
    """One row per input of ``dfx predict``; ``fake`` is the decision at the threshold.

    A ``provenance`` column (what the files' metadata claims) is added when any input has
    something to say.
    """
    cells = [_provenance_cell(record.get("provenance")) for record in records]
    table = Table(title=None)
    table.add_column("path", overflow="fold")
    table.add_column("label")
    for name in CLASSES:
        table.add_column(f"p_{name}", justify="right")
    table.add_column("p_fake", justify="right")
    table.add_column("fake")
    with_provenance = any(cells)
    if with_provenance:
        table.add_column("provenance", overflow="fold")
    for record, cell in zip(records, cells):
        if record.get("error"):
            table.add_row(
                f"{escape(record['path'])}\n  [red]{escape(record['error'])}[/red]", "error"
            )
            continue
        probs = record["probs"]
        table.add_row(
            escape(record["path"]),
            record["label"],
            *(f"{probs[name]:.3f}" for name in CLASSES),
            f"{record['p_fake']:.3f}",
            "yes" if record["fake"] else "no",
            *([escape(cell)] if with_provenance else []),
        )
    return table


_CLAIM_NAMES = {
    "claim_generator": "C2PA",
    "validation": "C2PA signature",
    "DigitalSourceType": "source type",
}
_CELL_LINE = 40


def _provenance_cell(provenance: dict | None) -> str:
    """The claims of a provenance record, one short line each, and the JPEG quality."""
    if not provenance:
        return ""
    lines = []
    for claim in provenance["claims"]:
        line = f"{_CLAIM_NAMES.get(claim['name'], claim['name'])}: {claim['value']}"
        lines.append(line if len(line) <= _CELL_LINE else line[: _CELL_LINE - 1] + "…")
    if provenance.get("jpeg_quality") is not None:
        lines.append(f"JPEG q{provenance['jpeg_quality']}")
    return "\n".join(lines)


def audit_traits_table(groups: list[dict]) -> Table:
    """Container traits per class and generator (the ``generators`` of an audit document).

    Sizes are width×height ranges; B/px is the median of file bytes per pixel.
    """
    table = Table(title="Container traits", title_justify="left")
    table.add_column("class")
    table.add_column("generator", overflow="fold")
    table.add_column("n", justify="right")
    for name in ("format", "JPEG q", "size", "B/px", "mode", "metadata"):
        table.add_column(name, justify="right" if name == "B/px" else "left")
    for group in groups:
        quality = group["jpeg_quality"]
        blocks = [f"{b.upper()} {100 * group[b]:.0f}%" for b in ("exif", "icc", "xmp") if group[b]]
        table.add_row(
            escape(group["label"]),
            escape(group["generator"] or "all"),
            str(group["n"]),
            escape(_shares(group["formats"], group["n"])),
            "—" if quality is None else _range(quality),
            f"{_range(group['width'])}×{_range(group['height'])}",
            f"{group['bytes_per_pixel']['median']:.2f}",
            escape(_shares(group["modes"], group["n"])),
            "\n".join(blocks) or "—",
        )
    return table


def _shares(counts: dict[str, int], n: int) -> str:
    if len(counts) == 1:
        return next(iter(counts))
    return "\n".join(f"{name} {100 * count / n:.0f}%" for name, count in counts.items())


def _range(spread: dict) -> str:
    low, high = f"{spread['min']:g}", f"{spread['max']:g}"
    return low if low == high else f"{low}–{high}"


def shortcut_table(document: dict) -> Table:
    """The shortcut scores of an audit: overall, and for real vs fake per trait alone."""
    table = Table(
        title="Shortcut score (balanced accuracy from container traits alone)",
        title_justify="left",
    )
    table.add_column("task")
    table.add_column("traits")
    table.add_column("score", justify="right")
    table.add_column("chance", justify="right")
    names = {"real_vs_fake": "real vs fake", "three_class": "dm / gan / real"}
    chance = document["shortcut_score_chance"]
    for task, score in document["shortcut_score"].items():
        if score is not None:
            table.add_row(names[task], "all", f"{score:.2f}", f"{chance[task]:.2f}")
    for trait, score in document["shortcut_score_by_trait"].items():
        if score is not None:
            table.add_row(names["real_vs_fake"], trait, f"{score:.2f}", "0.50")
    return table


def copies_table(copies: list[dict], shown: int = 10) -> Table:
    """The first copy groups that cross labels or roles, with their labels and roles."""
    crossing = [group for group in copies if group["crosses"]]
    table = Table(title="Copies across labels or roles", title_justify="left")
    table.add_column("kind")
    table.add_column("distance", justify="right")
    table.add_column("files (label, role)", overflow="fold")
    table.add_column("crosses")
    for group in crossing[:shown]:
        files = [
            f"{path} ({label}{', ' + role if role else ''})"
            for path, label, role in zip(group["paths"], group["labels"], group["roles"])
        ]
        table.add_row(
            group["kind"],
            str(group["distance"]),
            escape("\n".join(files)),
            ", ".join(group["crosses"]),
        )
    if len(crossing) > shown:
        table.add_row("…", "", f"and {len(crossing) - shown} more (see --json)", "")
    return table


def explanations_table(records: list[dict]):
    """One row per input: verdict, target, each specialist's share and the contact sheet."""
    from rich.markup import escape
    from rich.table import Table

    from dfx.classes import CLASSES

    table = Table(title=None)
    table.add_column("path", overflow="fold")
    table.add_column("label")
    table.add_column("p_fake", justify="right")
    table.add_column("fake")
    table.add_column("target")
    for name in CLASSES:
        table.add_column(f"share {name}", justify="right")
    table.add_column("contact sheet", overflow="fold")
    for record in records:
        if record.get("error"):
            table.add_row(
                f"{escape(record['path'])}\n  [red]{escape(record['error'])}[/red]", "error"
            )
            continue
        shares = record["shares"] or {}
        table.add_row(
            escape(record["path"]),
            record["label"],
            f"{record['p_fake']:.3f}",
            "yes" if record["fake"] else "no",
            record["target"],
            *(f"{shares[name]:.0%}" if name in shares else "—" for name in CLASSES),
            escape(record["files"][-1]),
        )
    return table


PREDICTION_COLUMNS = (
    "path",
    "label",
    *(f"p_{name}" for name in CLASSES),
    "p_fake",
    "fake",
    "error",
    "provenance",
)
"""The columns of ``dfx predict``'s tab-separated lines: always these nine, whatever the inputs."""


def tsv(header, rows) -> str:
    """Tab-separated lines under a header, for pipes and files: one line per row, always.

    Tabs and line breaks inside a cell become spaces, so no cell splits a line or a column.
    """

    def cell(value) -> str:
        return " ".join(str(value).replace("\t", " ").splitlines())

    return "\n".join("\t".join(cell(value) for value in row) for row in [header, *rows])


def predictions_tsv(records: list[dict]) -> str:
    """``dfx predict``'s verdicts as tab-separated lines with a header, for pipes and files.

    One line per input, whatever the terminal width, and the same nine columns whatever
    the inputs: ``provenance`` is empty when a file claims nothing, and its claims are
    joined with "; " otherwise.
    """
    rows = []
    for record in records:
        claims = "; ".join(_provenance_cell(record.get("provenance")).splitlines())
        if record.get("error"):
            rows.append([record["path"], "", "", "", "", "", "", record["error"], claims])
            continue
        probs = record["probs"]
        rows.append([
            record["path"],
            record["label"],
            *(f"{probs[name]:.4f}" for name in CLASSES),
            f"{record['p_fake']:.4f}",
            "yes" if record["fake"] else "no",
            "",
            claims,
        ])  # fmt: skip
    return tsv(PREDICTION_COLUMNS, rows)


EXPLANATION_COLUMNS = (
    "path",
    "label",
    "p_fake",
    "fake",
    "target",
    *(f"share_{name}" for name in CLASSES),
    "contact_sheet",
    "error",
)
"""The columns of ``dfx explain``'s tab-separated lines."""


def explanations_tsv(records: list[dict]) -> str:
    """``dfx explain``'s records as tab-separated lines with a header, for pipes and files."""
    rows = []
    for record in records:
        if record.get("error"):
            rows.append([record["path"], *[""] * (len(EXPLANATION_COLUMNS) - 2), record["error"]])
            continue
        shares = record["shares"] or {}
        rows.append([
            record["path"],
            record["label"],
            f"{record['p_fake']:.4f}",
            "yes" if record["fake"] else "no",
            record["target"],
            *(f"{shares[name]:.4f}" if name in shares else "" for name in CLASSES),
            record["files"][-1],
            "",
        ])  # fmt: skip
    return tsv(EXPLANATION_COLUMNS, rows)
