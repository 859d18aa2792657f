"""The manifest: which image plays which role (base, fusion, test), stable across re-runs.

An image's role depends only on its content and the seed, so re-running ``dfx split``
writes the same file, adding images never moves old ones, and copies of one file share
a role (a copy in the test role would otherwise be an image the detector trained on).
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from dfx.atomic import atomic_write
from dfx.classes import CLASS_FOLDER_ALIASES, CLASSES
from dfx.data.copies import LabelConflict, copy_groups, label_conflicts
from dfx.data.decoding import decode_failures
from dfx.data.layout import ScanResult, find_layout, scan_dataset
from dfx.data.record import ImageRecord
from dfx.errors import DfxError, first_few
from dfx.fingerprint import file_digest

ROLES: tuple[str, ...] = ("base", "fusion", "test")
"""The three roles, in the order of the split ratios."""

DEFAULT_RATIOS: tuple[float, float, float] = (0.4, 0.4, 0.2)
"""The paper's split: 40% base models, 40% fusion model, 20% test."""

COLUMNS: tuple[str, ...] = ("path", "label", "generator", "split")
"""Required CSV columns, in the order dfx writes them."""

INTEGRITY_COLUMNS: tuple[str, ...] = ("size", "hash")
"""Optional columns dfx writes after the required ones: bytes and content fingerprint."""

_HEADER_PREFIX = "# dfx-manifest"


@dataclass
class Manifest:
    """A data folder and the role of each of its images."""

    root: Path
    """The data folder that the rows' paths are relative to."""
    rows: list[ImageRecord]
    """All images, sorted by path, each with its role."""
    seed: int | None = None
    """Seed the split was drawn with (None for a hand-written manifest)."""
    ratios: tuple[float, float, float] | None = None
    """Split ratios (base, fusion, test) it was drawn with."""
    skip_reasons: dict[str, str] = field(default_factory=dict)
    """Files under the data folder that were not images → why (only when just made)."""
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    """Image files the scan found but could not read (relative path, reason): left out of
    the rows and reported as failures by ``dfx split`` (only when just made)."""
    fingerprinted: bool = True
    """False for a manifest read without size and hash columns (changes go unnoticed)."""
    dropped: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of rows left out on reading because their file changed or vanished."""
    copies: list[list[str]] = field(default_factory=list)
    """Groups of byte-identical files, each given one role (only when just drawn)."""
    conflicts: list[LabelConflict] = field(default_factory=list)
    """Copies under different labels, left out of the rows (only when just drawn)."""

    @property
    def skipped(self) -> list[str]:
        """Files under the data folder that were not images (only when just made)."""
        return list(self.skip_reasons)

    def select(self, role: str | None = None) -> list[ImageRecord]:
        """Rows of one role (all rows when ``role`` is None)."""
        return [row for row in self.rows if role is None or row.role == role]

    def absolute(self, row: ImageRecord) -> Path:
        """Absolute location of a row's image."""
        return self.root / row.path

    def counts(self) -> Counter:
        """Number of images per (label, generator, role)."""
        return Counter((row.label, row.generator, row.role) for row in self.rows)


def role_of(key: str, seed: int, ratios: tuple[float, float, float]) -> str:
    """The role of one image: a uniform draw from a hash of (seed, key) against the ratios.

    ``key`` is the image's content fingerprint (its path when the file cannot be read).
    """
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for role, ratio in zip(ROLES, ratios):
        cumulative += ratio
        if draw < cumulative:
            return role
    return ROLES[-1]


def check_ratios(ratios: tuple[float, ...]) -> tuple[float, float, float]:
    """Validate three non-negative ratios that sum to 1."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise DfxError(
            f"`ratios` must be three non-negative numbers (base fusion test) that sum to 1, "
            f"got {' '.join(str(r) for r in ratios)}."
        )
    return (float(ratios[0]), float(ratios[1]), float(ratios[2]))


DIGEST_DIGITS = 16
"""Hex digits of a file digest kept in a model's record of its training images."""


def content_digests(manifest: Manifest, rows: list[ImageRecord]) -> list[str]:
    """Short content digests of some rows' files, sorted and unique: a model's training record.

    The manifest's recorded hash when it has one, else the file's digest now (files that
    vanished are left out). Compared with :func:`dfx.data.manifest.seen_in_training`.
    """
    digests = set()
    for row in rows:
        digest = row.hash
        if digest is None:
            try:
                digest = file_digest(manifest.absolute(row))
            except OSError:
                continue
        digests.add(digest[:DIGEST_DIGITS])
    return sorted(digests)


def seen_in_training(trained_on: list[str], paths, known: dict | None = None) -> int:
    """How many of the files ``paths`` have a digest among ``trained_on`` (0 when it is empty).

    ``known`` maps a path to its recorded digest (a manifest's hash column), saving a read.
    """
    if not trained_on:
        return 0
    trained, known = set(trained_on), known or {}
    seen = 0
    for path in paths:
        digest = known.get(str(path))
        if digest is None:
            try:
                digest = file_digest(path)
            except OSError:
                continue
        seen += digest[:DIGEST_DIGITS] in trained
    return seen


def require_class_layout(data: str | Path, layout: str | None = None) -> None:
    """Fail unless ``data`` has the class layout that roles need (``layout`` when known).

    Folder names decide, so a binary tree is refused before any image is read.
    """
    if layout is None:
        layout, folders = find_layout(data)
        if not folders:
            return  # neither layout: the scan says so in its own words
    if layout != "classes":
        raise DfxError(
            f"{data} uses the binary 0_real/1_fake layout, which has no dm/gan labels to train "
            "on; split needs class folders dm, gan and real (use it with 'dfx evaluate --data')."
        )


def make_manifest(
    data: str | Path,
    ratios: tuple[float, ...] = DEFAULT_RATIOS,
    seed: int = 0,
    roles: Mapping[str, str] | None = None,
    scan: ScanResult | None = None,
    *,
    drop_conflicts: bool = False,
    check_decoding: bool = True,
    on_file=None,
) -> Manifest:
    """Scan a class-layout data folder and give every image a role.

    Drawn roles come from each file's content, so byte-identical copies share one. Copies
    under different labels fail with :class:`LabelConflictError` naming them, or with
    ``drop_conflicts`` are all left out (listed in ``conflicts``).
    ``roles`` (relative path → role), when given, fixes the roles instead of drawing them,
    as the official release's guidance.csv does, and keeps only the images it names.
    ``scan``, when given, is the caller's scan of ``data`` (it is not scanned again).
    With ``check_decoding`` every image is decoded once (``on_file`` called after each), so
    truncated files join the empty and unreadable ones in ``unreadable`` instead of the rows.
    """
    ratios = check_ratios(ratios)
    require_class_layout(data, scan.layout if scan is not None else None)
    scan = scan or scan_dataset(data)
    records = [r for r in scan.records if roles is None or r.path in roles]
    unreadable = [
        (r.path, reason) for r, reason in scan.unreadable if roles is None or r.path in roles
    ]
    if check_decoding:
        # The scan's broken files are decoded too, so their reasons read as the API's do.
        broken = [r for r, _ in scan.unreadable if roles is None or r.path in roles]
        candidates = [*records, *broken]
        failed = decode_failures([scan.root / r.path for r in candidates], None, on_file)
        unreadable = [(candidates[i].path, reason) for i, reason in failed.items()]
        records = [r for i, r in enumerate(records) if i not in failed]
    unreadable.sort()
    if roles is not None:
        rows = [replace(r, role=roles[r.path]) for r in records]
        return Manifest(scan.root.resolve(), rows, None, None, scan.reasons, unreadable)
    root = scan.root.resolve()
    rows = fingerprint_rows(root, [replace(record, role="") for record in records])
    groups = copy_groups(root, {row.path: row.hash for row in rows if row.hash})
    conflicts = label_conflicts(groups, {row.path: row.label for row in rows})
    if conflicts and not drop_conflicts:
        raise LabelConflictError(conflicts)
    left_out = {path for conflict in conflicts for path in conflict.paths}
    rows = [
        replace(row, role=role_of(row.hash or row.path, seed, ratios))
        for row in rows
        if row.path not in left_out
    ]
    kept = [group for group in groups if group[0] not in left_out]
    return Manifest(
        root, rows, seed, ratios, scan.reasons, unreadable, copies=kept, conflicts=conflicts
    )


class LabelConflictError(DfxError):
    """Byte-identical files under different labels: the data set is mislabelled."""

    def __init__(self, conflicts: list[LabelConflict]) -> None:
        self.conflicts = conflicts
        """Each set of copies and their labels."""
        super().__init__(
            f"{len(conflicts)} set(s) of identical files carry different labels "
            f"({first_few([c.describe() for c in conflicts])}); correct the labels, or pass "
            "`drop_label_conflicts` to leave every such copy out of the manifest."
        )


def write_manifest(manifest: Manifest, out: str | Path) -> Path:
    """Write the manifest CSV (data folder recorded relative to the CSV) atomically.

    Each row gets its file's size and fingerprint (computed now where the row lacks them),
    so that training and evaluation notice files that change later.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        root = Path(os.path.relpath(manifest.root, out.parent.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        root = manifest.root.as_posix()
    header = f"{_HEADER_PREFIX} root={root}"
    if manifest.seed is not None and manifest.ratios is not None:
        header += f" seed={manifest.seed} ratios={','.join(f'{r:g}' for r in manifest.ratios)}"
    rows = fingerprint_rows(manifest.root, manifest.rows)
    with atomic_write(out) as handle:
        handle.write(header + "\n")
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS + INTEGRITY_COLUMNS)
        for row in rows:
            fields = row.to_dict()
            writer.writerow(_blank(fields[column]) for column in COLUMNS + INTEGRITY_COLUMNS)
    return out


def fingerprint_rows(root: Path, rows: list[ImageRecord]) -> list[ImageRecord]:
    """The rows with size and hash filled in from the files under ``root`` where missing."""

    def filled(row: ImageRecord) -> ImageRecord:
        if row.size is not None and row.hash:
            return row
        measured = _measure(root / row.path)
        return replace(row, size=measured[0], hash=measured[1]) if measured else row

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(filled, rows))


def _measure(path: Path) -> tuple[int, str] | None:
    try:
        return path.stat().st_size, file_digest(path)
    except OSError:
        return None


def _blank(value) -> str:
    return "" if value is None else str(value)


def read_manifest(
    path: str | Path,
    check_files: bool = True,
    *,
    roles: tuple[str, ...] | None = None,
    allow_changed: bool = False,
) -> Manifest:
    """Read a manifest CSV; fail with one sentence if it is malformed or its files changed.

    The data folder is the ``root=`` of its ``# dfx-manifest`` first line, relative to the
    CSV; a manifest without that line has its paths relative to its own folder. With
    ``check_files``, the files of the rows in ``roles`` (None: all) must exist and, where
    the manifest records them, still have their size and fingerprint; otherwise this fails
    naming them, or with ``allow_changed`` leaves those rows out (listed in ``dropped``).
    """
    path = Path(path)
    if path.is_dir():
        raise DfxError(f"manifest {path} is a folder; a manifest is one CSV file.")
    if not path.is_file():
        raise DfxError(f"manifest {path} does not exist; create one with 'dfx split DATA'.")
    with open(path, "rb") as handle:
        if handle.read(4) == b"PK\x03\x04":  # the zip archive torch.save writes
            raise DfxError(f"manifest {path} is a PyTorch file (a model?), not a manifest CSV.")
    try:
        # utf-8-sig: a spreadsheet program may have saved it with a byte-order mark.
        with open(path, encoding="utf-8-sig", newline="") as handle:
            lines = handle.read().splitlines()
    except UnicodeDecodeError as error:
        raise DfxError(f"manifest {path} is not UTF-8 text ({error.reason}).") from error
    settings = _parse_header(lines[0]) if lines and lines[0].startswith(_HEADER_PREFIX) else {}
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line and not line.startswith("#")]
    reader = csv.DictReader([line for _, line in numbered])
    try:
        rows = _rows(reader, path, [n for n, _ in numbered])
    except csv.Error as error:
        raise DfxError(f"manifest {path} is not valid CSV ({error}).") from error
    if not rows:
        raise DfxError(f"manifest {path} lists no images.")
    root = (path.parent / settings.get("root", ".")).resolve()
    manifest = Manifest(root, rows, _int_or_none(settings.get("seed")), None)
    manifest.fingerprinted = all(c in (reader.fieldnames or []) for c in INTEGRITY_COLUMNS)
    if check_files:
        _check_files(manifest, path, roles, allow_changed)
    return manifest


def _rows(reader: csv.DictReader, path: Path, line_numbers: list[int]) -> list[ImageRecord]:
    """The manifest rows of ``reader``; ``line_numbers`` maps its lines to the file's."""
    fieldnames = reader.fieldnames or []
    missing_columns = [c for c in COLUMNS if c not in fieldnames]
    if missing_columns:
        raise DfxError(
            f"manifest {path} lacks the column(s) {', '.join(missing_columns)}; "
            f"expected at least {','.join(COLUMNS)}."
        )
    rows = []
    for entry in reader:
        number = line_numbers[min(reader.line_num, len(line_numbers)) - 1]
        if any(entry.get(column) is None for column in COLUMNS):
            raise DfxError(
                f"manifest {path} line {number} has too few fields; expected at least "
                f"{','.join(COLUMNS)}."
            )
        label = CLASS_FOLDER_ALIASES.get(entry["label"].strip().lower())
        if label is None or entry["split"] not in ROLES:
            raise DfxError(
                f"manifest {path} line {number} has label {entry['label']!r} and split "
                f"{entry['split']!r}; labels are {', '.join(CLASSES)} and splits "
                f"{', '.join(ROLES)}."
            )
        size = (entry.get("size") or "").strip()
        rows.append(
            ImageRecord(
                entry["path"],
                label,
                entry["generator"],
                entry["split"],
                int(size) if size.isdigit() else None,
                (entry.get("hash") or "").strip() or None,
            )
        )
    return rows


def _parse_header(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split()[2:] if "=" in part)


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


def find_changes(manifest: Manifest, roles: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(path, reason) of the rows in ``roles`` whose file vanished or changed since writing."""
    chosen = [row for row in manifest.rows if roles is None or row.role in roles]

    def change(row: ImageRecord) -> str | None:
        file = manifest.absolute(row)
        try:
            size = file.stat().st_size
            if not file.is_file():
                return "missing"
            if row.size is not None and size != row.size:
                return f"changed (size {row.size} -> {size} bytes)"
            if row.hash and file_digest(file) != row.hash:
                return "changed (content differs)"
        except OSError:
            return "missing"
        return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        reasons = list(pool.map(change, chosen))
    return [(row.path, reason) for row, reason in zip(chosen, reasons) if reason is not None]


def _check_files(
    manifest: Manifest, path: Path, roles: tuple[str, ...] | None, allow_changed: bool
) -> None:
    changes = find_changes(manifest, roles)
    if not changes:
        return
    if allow_changed:
        gone = {name for name, _ in changes}
        manifest.rows = [row for row in manifest.rows if row.path not in gone]
        manifest.dropped = changes
        return
    missing = [name for name, reason in changes if reason == "missing"]
    changed = [name for name, reason in changes if reason != "missing"]
    parts = []
    if missing:
        parts.append(f"{len(missing)} file(s) missing ({first_few(missing)})")
    if changed:
        parts.append(f"{len(changed)} file(s) changed since it was written ({first_few(changed)})")
    raise DfxError(
        f"manifest {path} names {' and '.join(parts)} under {manifest.root}; re-run "
        "'dfx split', restore the files, or pass `allow_changed` to skip them."
    )
