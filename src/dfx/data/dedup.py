"""Copies of one image in a data folder: found by content, so that they never straddle roles.

Data sets gathered from several sources often hold the same file twice, under two
generator folders or even two labels. The split gives copies one role (it draws the role
from the content, not the path); copies under different labels are labelling errors.
"""

from __future__ import annotations

import filecmp
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LabelConflict:
    """Byte-identical files filed under more than one label."""

    paths: tuple[str, ...]
    """Relative paths of the copies, sorted."""
    labels: tuple[str, ...]
    """The label of each path, in the same order."""

    def describe(self) -> str:
        """The copies with their labels, e.g. ``real/a.png (real) = gan/x/b.png (gan)``."""
        return " = ".join(f"{path} ({label})" for path, label in zip(self.paths, self.labels))

    def to_dict(self) -> dict:
        """Plain-data form for JSON."""
        return {"paths": list(self.paths), "labels": list(self.labels)}


def copy_groups(root: Path, keys: Mapping[str, str]) -> list[list[str]]:
    """Groups of two or more paths with byte-identical content, each sorted, in path order.

    ``keys`` maps relative paths to content fingerprints (:func:`dfx.fingerprint.file_digest`).
    A fingerprint reads only the ends of large files, so files that share one are compared
    byte for byte before they count as copies.
    """
    by_key: dict[str, list[str]] = defaultdict(list)
    for path in sorted(keys):
        by_key[keys[path]].append(path)
    groups = []
    for candidates in by_key.values():
        while len(candidates) > 1:
            first, rest = candidates[0], candidates[1:]
            same = [p for p in rest if filecmp.cmp(root / first, root / p, shallow=False)]
            if same:
                groups.append([first, *same])
            candidates = [p for p in rest if p not in same]
    return sorted(groups)


def label_conflicts(groups: list[list[str]], labels: Mapping[str, str]) -> list[LabelConflict]:
    """The copy groups whose files carry more than one label."""
    return [
        LabelConflict(tuple(group), tuple(labels[path] for path in group))
        for group in groups
        if len({labels[path] for path in group}) > 1
    ]
