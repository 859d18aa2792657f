"""Results as JSON and CSV text and files, for programs; never prints."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from dfx.atomic import atomic_write


def headline_row(document: dict) -> dict:
    """The scalar metrics of an evaluation document or robustness row, for CSV."""
    breakdowns = ("per_generator", "generators", "counts")
    return flatten({key: value for key, value in document.items() if key not in breakdowns})


def to_json(data, indent: int | None = 2) -> str:
    """JSON text with NaN and infinities written as null (strict JSON)."""
    return json.dumps(_clean(data), indent=indent)


def flatten(record: dict, prefix: str = "") -> dict:
    """Scalar fields of a nested dict under dotted names; lists are left out.

    A ``multiclass`` section that is None (real/fake-only data) is left out too, so that its
    name does not become a column beside its fields from other records.
    """
    flat: dict = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}.")
        elif value is None and key == "multiclass":
            continue
        elif not isinstance(value, (list, tuple)):
            flat[name] = value
    return flat


METRIC_COLUMNS: tuple[str, ...] = (
    "multiclass.accuracy",
    "multiclass.f1_macro",
    *(
        f"binary.{key}"
        for key in (
            "accuracy",
            "f1",
            "balanced_accuracy",
            "real_accuracy",
            "fake_accuracy",
            "ap",
            "auc",
            "eer",
            "at_threshold.threshold",
            "at_threshold.accuracy",
            "at_threshold.f1",
            "at_threshold.balanced_accuracy",
            "at_threshold.real_accuracy",
            "at_threshold.fake_accuracy",
        )
    ),
)
"""The metric columns of evaluation and robustness CSV files, always present, in this order."""


def to_csv(records: list[dict]) -> str:
    """CSV text, one line per record (flattened metric records).

    Columns: the records' other keys (first-seen order), then every :data:`METRIC_COLUMNS`
    entry whether or not the data defines it, so that files from different data sets line
    up; undefined cells are empty.
    """
    seen: list[str] = []
    for record in records:
        seen.extend(key for key in record if key not in seen)
    columns = [key for key in seen if key not in METRIC_COLUMNS] + list(METRIC_COLUMNS)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: "" if v is None else v for k, v in _clean(record).items()})
    return buffer.getvalue()


def write_text(text: str, path: str | Path) -> Path:
    """Write text to a file atomically."""
    with atomic_write(path) as handle:
        handle.write(text)
    return Path(path)


def write_json(data, path: str | Path) -> Path:
    """Write JSON to a file atomically."""
    return write_text(to_json(data) + "\n", path)


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
