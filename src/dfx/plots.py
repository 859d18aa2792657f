"""PNG plots of evaluations and robustness runs (matplotlib, imported only when plotting).

Figures are built with matplotlib's object API (no pyplot, no global backend state) and
written through :func:`dfx.atomic.atomic_write`, so a crash never leaves a truncated file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dfx.atomic import atomic_write
from dfx.classes import CLASSES
from dfx.metrics import binary_confusion, curve_points
from dfx.report import write_json
from dfx.threshold import is_called_fake


def _figure(width: float = 5.0, height: float = 4.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_png(figure, path: str | Path) -> Path:
    """Write a figure as PNG atomically."""
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png")
    return Path(path)


def robustness_plot(rows: list[dict], path: str | Path, title: str) -> Path:
    """Accuracy (3-class where available, and binary) for each row of a robustness run."""
    labels = [_axis_label(row, _all_jpeg(rows)) for row in rows]
    positions = np.arange(len(rows))
    figure = _figure(max(5.0, 0.6 * len(rows) + 2), 4.0)
    axes = figure.add_subplot()
    series = [("binary", [row["binary"]["accuracy"] for row in rows])]
    if all(row.get("multiclass") for row in rows):
        series.insert(0, ("3-class", [row["multiclass"]["accuracy"] for row in rows]))
    for name, values in series:
        axes.plot(positions, [100 * v for v in values], marker="o", label=name)
    crowded = len(rows) > 8
    axes.set_xticks(
        positions, labels, rotation=45 if crowded else 0, ha="right" if crowded else "center"
    )
    axes.set_xlabel("JPEG quality factor" if _all_jpeg(rows) else "perturbation")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title(title)
    return save_png(figure, path)


def _all_jpeg(rows: list[dict]) -> bool:
    return all(row["qf"] is not None for row in rows[1:])


def _axis_label(row: dict, all_jpeg: bool) -> str:
    # A bare quality factor only reads right on an axis titled "JPEG quality factor".
    if all_jpeg and row["qf"] is not None:
        return str(row["qf"])
    return row["perturbation"]


def confusion_plot(matrix: list[list[int]], labels: list[str], path: str | Path, title: str):
    """A confusion matrix as a heat map with counts, rows true, columns predicted."""
    values = np.asarray(matrix)
    figure = _figure(4.5, 4.0)
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="Blues")
    figure.colorbar(image, ax=axes)
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels)
    axes.set_yticks(ticks, labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    middle = values.max() / 2 if values.size else 0
    for (row, column), count in np.ndenumerate(values):
        colour = "white" if count > middle else "black"
        axes.text(column, row, str(count), ha="center", va="center", color=colour)
    axes.set_title(title)
    return save_png(figure, path)


def curve_plot(x, y, path: str | Path, *, xlabel: str, ylabel: str, title: str, diagonal: bool):
    """One curve (ROC or precision-recall) in the unit square."""
    figure = _figure(4.5, 4.0)
    axes = figure.add_subplot()
    axes.plot(x, y)
    if diagonal:
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.set_title(title)
    return save_png(figure, path)


def evaluation_plots(result, folder: str | Path) -> list[Path]:
    """confusion.png, roc.png, pr.png and curves.json (the curves' points) of an evaluation.

    3-class data gets the 3×3 confusion matrix; real/fake data the 2×2 one of the decision
    at the threshold. ROC and PR need both real and fake images; without them only the
    confusion matrix is written.
    """
    folder = Path(folder)
    threshold = result.threshold.value
    written = []
    if result.multiclass is not None:
        matrix, labels, title = result.multiclass["confusion"], list(CLASSES), "3-class"
    else:
        matrix = binary_confusion(result.is_fake, is_called_fake(result.p_fake, threshold))
        labels, title = ["real", "fake"], f"real/fake at t = {threshold:.3g}"
    written.append(confusion_plot(matrix, labels, folder / "confusion.png", title))
    curves = curve_points(result.is_fake, result.p_fake)
    document = {
        "confusion": {"labels": labels, "matrix": matrix},
        "threshold": result.threshold.to_dict(),
        "roc": None,
        "pr": None,
    }
    if curves is not None:
        roc, pr = curves["roc"], curves["pr"]
        document["roc"] = roc | {"auc": result.binary["auc"]}
        document["pr"] = pr | {"ap": result.binary["ap"]}
        written.append(
            curve_plot(
                roc["fpr"],
                roc["tpr"],
                folder / "roc.png",
                xlabel="false-positive rate (real called fake)",
                ylabel="true-positive rate (fake called fake)",
                title=f"ROC, AUC = {100 * result.binary['auc']:.2f}%",
                diagonal=True,
            )
        )
        written.append(
            curve_plot(
                pr["recall"],
                pr["precision"],
                folder / "pr.png",
                xlabel="recall (fake)",
                ylabel="precision (fake)",
                title=f"precision-recall, AP = {100 * result.binary['ap']:.2f}%",
                diagonal=False,
            )
        )
    written.append(write_json(document, folder / "curves.json"))
    return written


def audit_plots(report, folder: str | Path) -> list[Path]:
    """sizes.png (width and height) and jpeg_quality.png: per-class histograms of an audit.

    Classes whose histograms do not overlap can be told apart by these traits alone.
    """
    folder = Path(folder)
    by_label: dict[str, list] = {}
    for file in report.files:
        by_label.setdefault(file.record.label, []).append(file.facts)
    labels = sorted(by_label, key=lambda label: (label not in CLASSES, label))
    figure = _figure(9.0, 3.8)
    for position, (trait, title) in enumerate((("width", "width"), ("height", "height")), 1):
        axes = figure.add_subplot(1, 2, position)
        values = {label: [getattr(f, trait) for f in by_label[label]] for label in labels}
        everything = [v for vs in values.values() for v in vs]
        bins = np.histogram_bin_edges(everything, bins=min(30, max(1, len(set(everything)))))
        for label in labels:
            axes.hist(values[label], bins=bins, histtype="step", linewidth=1.5, label=label)
        axes.set_xlabel(f"{title} (pixels)")
        axes.set_ylabel("images")
        axes.grid(alpha=0.3)
        axes.legend()
    written = [save_png(figure, folder / "sizes.png")]
    figure = _figure(6.0, 3.8)
    axes = figure.add_subplot()
    bins = np.arange(0, 105, 5)
    for label in labels:
        qualities = [f.jpeg_quality for f in by_label[label] if f.jpeg_quality is not None]
        others = len(by_label[label]) - len(qualities)
        axes.hist(
            qualities,
            bins=bins,
            histtype="step",
            linewidth=1.5,
            label=f"{label} ({len(qualities)} JPEG, {others} other)",
        )
    axes.set_xlim(0, 100)
    axes.set_xlabel("estimated JPEG quality")
    axes.set_ylabel("images")
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title("JPEG quality per class")
    written.append(save_png(figure, folder / "jpeg_quality.png"))
    return written
