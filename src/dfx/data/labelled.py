"""Labelled image sets for evaluation: from a manifest role or from labelled folders.

Problems are returned, never printed: the files passed over (not images) and the manifest
whose checks the caller reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dfx.data.layout import scan_dataset
from dfx.data.manifest import ROLES, Manifest, read_manifest
from dfx.data.record import ImageRecord
from dfx.errors import DfxError


@dataclass
class LabelledSet:
    """One named set of labelled images."""

    name: str
    """Short name for tables (the manifest's file name, or the folder's)."""
    source: str
    """The manifest or folder it came from, as given."""
    images: list[ImageRecord]
    """Its images (paths placed under their data folder), in manifest or scan order."""


@dataclass
class LabelledSets:
    """The sets to evaluate, and what reading them found."""

    sets: list[LabelledSet]
    """One set per manifest or folder."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Files under the folders that are not images, with the reason (path → reason)."""
    manifest: Manifest | None = None
    """The manifest read, whose ``dropped`` rows and ``fingerprinted`` flag need reporting."""


def check_role(role: str | None) -> None:
    """Fail with one sentence unless ``role`` is a manifest role (None: all roles)."""
    if role is not None and role not in ROLES:
        raise DfxError(f"`split` {role!r} is not one of {', '.join(ROLES)}.")


def images_from_manifest(manifest: Manifest, role: str | None = "test") -> list[ImageRecord]:
    """The labelled images of one role of a manifest (all roles when ``role`` is None)."""
    check_role(role)
    rows = manifest.select(role)
    if not rows:
        raise DfxError(f"the manifest has no images in the {role} role.")
    return [row.under(manifest.root) for row in rows]


def images_from_folder(data: str | Path) -> tuple[list[ImageRecord], dict[str, str]]:
    """The labelled images of a data folder in either layout, and the files passed over.

    The second value maps each non-image file (relative path) to the reason. Image files
    that cannot be read (an empty ``x.png``) are among the images, so that a run reports
    them as failures with the reason its decoding gives, as for any other unreadable image.
    """
    scan = scan_dataset(data)
    records = sorted([*scan.records, *(r for r, _ in scan.unreadable)], key=lambda r: r.path)
    images = [record.under(scan.root) for record in records]
    return images, dict(scan.reasons)


def set_names(folders: list[Path]) -> list[str]:
    """Short, distinct names for data folders: the folder name, or the path when names clash."""
    names = [Path(folder).name or str(folder) for folder in folders]
    return [name if names.count(name) == 1 else str(folder) for name, folder in zip(names, folders)]


def read_labelled_sets(
    manifest: Path | None, role: str, folders: list[Path], allow_changed: bool = False
) -> LabelledSets:
    """The images of one manifest role, or of each labelled folder (exactly one source).

    A manifest's files are checked against their recorded size and hash first; with
    ``allow_changed`` the changed ones are left out (listed in ``manifest.dropped``)
    instead of refused.
    """
    if (manifest is None) == (not folders):
        raise DfxError("give exactly one of `manifest` or `data`.")
    if manifest is not None:
        check_role(role)
        loaded = read_manifest(manifest, roles=(role,), allow_changed=allow_changed)
        images = images_from_manifest(loaded, role)
        return LabelledSets([LabelledSet(manifest.name, str(manifest), images)], manifest=loaded)
    result = LabelledSets([])
    for name, folder in zip(set_names(folders), folders):
        images, passed_over = images_from_folder(folder)
        result.sets.append(LabelledSet(name, str(folder), images))
        result.skipped |= {str(Path(folder) / file): reason for file, reason in passed_over.items()}
    return result
