"""Copies of one image in a data set: byte-identical files, and near-copies by their look.

Data sets gathered from several sources often hold the same file twice, under two
generator folders or even two labels. The split gives copies one role (it draws the role
from the content, not the path); copies under different labels are labelling errors. The
audit also finds near-copies (re-encoded or resized versions of one picture) by perceptual
hash, and reports the copies that cross labels or roles.
"""

from __future__ import annotations

import filecmp
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from dfx.data.record import ImageRecord

NEAR_DISTANCE = 4
"""Perceptual hashes that differ in at most this many of their 64 bits mark near-copies."""

NEAR_COLOUR_DIFFERENCE = 12.0
"""... and their 8 × 8 colour thumbnails by at most this mean absolute difference (0-255).

The hash sees only the layout of light and dark; on smooth, featureless pictures two
different images can share it, while a re-encoded or resized copy also keeps its colours.
"""


def _same_key_groups(keys: Sequence[Hashable]) -> list[list[int]]:
    """Positions of the items that share a key, one list per key, in order of first occurrence."""
    by_key: dict[Hashable, list[int]] = defaultdict(list)
    for position, key in enumerate(keys):
        by_key[key].append(position)
    return list(by_key.values())


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
    paths = sorted(keys)
    groups = []
    for positions in _same_key_groups([keys[path] for path in paths]):
        candidates = [paths[i] for i in positions]
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


@dataclass(frozen=True)
class CopyGroup:
    """Images with the same bytes (exact) or nearly the same look (near)."""

    kind: str
    """``exact`` (byte-identical files) or ``near`` (perceptual hashes within the distance)."""
    paths: tuple[str, ...]
    """Relative paths."""
    labels: tuple[str, ...]
    """The label of each path."""
    roles: tuple[str | None, ...]
    """The manifest role of each path (None without a manifest)."""
    distance: int
    """Bits in which the perceptual hashes differ (0 for exact copies)."""

    @property
    def crosses(self) -> list[str]:
        """``label`` and/or ``role`` when the copies differ in them."""
        found = ["label"] if len(set(self.labels)) > 1 else []
        return found + (["role"] if len(set(self.roles)) > 1 else [])

    def to_dict(self) -> dict:
        """Plain-data form for JSON."""
        return {
            "kind": self.kind,
            "paths": list(self.paths),
            "labels": list(self.labels),
            "roles": list(self.roles),
            "distance": self.distance,
            "crosses": self.crosses,
        }


def copy_counts(groups: list[CopyGroup]) -> dict[str, int]:
    """Number of exact and near copy groups, and of those that cross labels or roles."""
    counts = Counter()
    for group in groups:
        counts[group.kind] += 1
        for crossed in group.crosses:
            counts[f"{group.kind}_across_{crossed}s"] += 1
    keys = [f"{k}{s}" for k in ("exact", "near") for s in ("", "_across_labels", "_across_roles")]
    return {key: counts[key] for key in keys}


def perceptual_hash(image: Image.Image) -> int:
    """64-bit DCT hash: the signs of the 8 × 8 lowest frequencies of a 32 × 32 grey version.

    Re-encoding, resizing and small edits move few bits; different images differ in about
    half of them.
    """
    from scipy.fft import dctn  # scipy comes with scikit-learn

    grey = image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    low = dctn(np.asarray(grey, dtype=np.float64), norm="ortho")[:8, :8].ravel()
    bits = low > np.median(low[1:])  # the median leaves out the mean (DC) term
    return int("".join("1" if bit else "0" for bit in bits), 2)


class Fingerprinted(Protocol):
    """An image with the content fingerprints that copy finding compares."""

    record: ImageRecord
    """The image."""
    sha256: str
    """Hash of the whole file (equal for byte-identical copies)."""
    phash: int
    """64-bit perceptual hash (:func:`perceptual_hash`)."""
    thumbnail: np.ndarray | None
    """8 × 8 RGB version (float), to confirm near-copies by colour (None: not kept)."""


def find_copies(
    files: Sequence[Fingerprinted], near_distance: int = NEAR_DISTANCE
) -> list[CopyGroup]:
    """Groups of byte-identical files, then pairs of other files with close perceptual hashes.

    Near pairs are found without comparing every pair: hashes within ``near_distance`` bits
    agree exactly on at least one of ``near_distance + 1`` bands of bits (pigeonhole).
    """
    same_bytes = _same_key_groups([file.sha256 for file in files])
    groups = [_group(files, members, "exact", 0) for members in same_bytes if len(members) > 1]
    # One representative per content: exact copies are not near copies again.
    distinct = [members[0] for members in same_bytes]
    copies_of = {members[0]: members for members in same_bytes}
    hashes = np.array([files[i].phash for i in distinct], dtype=np.uint64)
    pairs: dict[tuple[int, int], int] = {}
    bands = near_distance + 1
    edges = np.linspace(0, 64, bands + 1).astype(int)
    for low, high in zip(edges[:-1], edges[1:]):
        mask = np.uint64((1 << int(high - low)) - 1)
        band = (hashes >> np.uint64(low)) & mask
        order = np.argsort(band, kind="stable")
        starts = np.flatnonzero(np.r_[True, band[order][1:] != band[order][:-1], True])
        for start, stop in zip(starts[:-1], starts[1:]):
            members = order[start:stop]
            if len(members) < 2:
                continue
            xor = hashes[members][:, None] ^ hashes[members][None, :]
            distances = np.unpackbits(xor.view(np.uint8), axis=-1).reshape(*xor.shape, 64).sum(-1)
            for a, b in zip(*np.nonzero(np.triu(distances <= near_distance, k=1))):
                if not _same_colours(files[distinct[members[a]]], files[distinct[members[b]]]):
                    continue
                # Every copy of either picture is a near-copy of every copy of the other.
                for first in copies_of[distinct[members[a]]]:
                    for second in copies_of[distinct[members[b]]]:
                        pairs[min(first, second), max(first, second)] = int(distances[a, b])
    near = [_group(files, [a, b], "near", d) for (a, b), d in pairs.items()]
    return groups + sorted(near, key=lambda group: group.paths)


def _same_colours(first: Fingerprinted, second: Fingerprinted) -> bool:
    if first.thumbnail is None or second.thumbnail is None:
        return True
    return float(np.abs(first.thumbnail - second.thumbnail).mean()) <= NEAR_COLOUR_DIFFERENCE


def _group(
    files: Sequence[Fingerprinted], members: list[int], kind: str, distance: int
) -> CopyGroup:
    chosen = sorted((files[i].record for i in members), key=lambda record: record.path)
    return CopyGroup(
        kind,
        tuple(r.path for r in chosen),
        tuple(r.label for r in chosen),
        tuple(r.role for r in chosen),
        distance,
    )
