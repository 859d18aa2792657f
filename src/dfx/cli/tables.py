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
    table = Table(title="Base models on the test split (target vs others, %)", title_justify="left")
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
    """One row per input of ``dfx predict``; ``fake`` is the decision at the threshold."""
    table = Table(title=None)
    table.add_column("path", overflow="fold")
    table.add_column("label")
    for name in CLASSES:
        table.add_column(f"p_{name}", justify="right")
    table.add_column("p_fake", justify="right")
    table.add_column("fake")
    for record in records:
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
        )
    return table


PREDICTION_COLUMNS = (
    "path",
    "label",
    *(f"p_{name}" for name in CLASSES),
    "p_fake",
    "fake",
    "error",
)
"""The columns of ``dfx predict``'s tab-separated lines."""


def predictions_tsv(records: list[dict]) -> str:
    """``dfx predict``'s verdicts as tab-separated lines with a header, for pipes and files.

    One line per input, whatever the terminal width; tabs and newlines in paths become
    spaces so that every input stays one line.
    """
    lines = ["\t".join(PREDICTION_COLUMNS)]
    for record in records:
        path = " ".join(record["path"].replace("\t", " ").splitlines())
        if record.get("error"):
            cells = [path, "", "", "", "", "", "", record["error"]]
        else:
            probs = record["probs"]
            cells = [
                path,
                record["label"],
                *(f"{probs[name]:.4f}" for name in CLASSES),
                f"{record['p_fake']:.4f}",
                "yes" if record["fake"] else "no",
                "",
            ]
        lines.append("\t".join(cells))
    return "\n".join(lines)
