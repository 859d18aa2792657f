"""One labelled image: the record that scans find, manifests give a role, and sets evaluate.

A scan of a data folder fills in the path, label and generator; a manifest adds the role
and, once written, the file's size and content fingerprint. Each step fills in what it
knows, so one record type travels from ``dfx split`` through training, evaluation and audit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image and what the data set says about it (unknown fields are None)."""

    path: str | Path
    """Relative to the data folder, with forward slashes; the file's location once :meth:`under`."""
    label: str
    """``dm``, ``gan`` or ``real`` in the class layout; ``fake`` or ``real`` in the binary one."""
    generator: str
    """The generator (or source) folder the image belongs to."""
    role: str | None = None
    """Manifest role, ``base``, ``fusion`` or ``test`` (None: not in a manifest)."""
    size: int | None = None
    """File size in bytes when the manifest was written (None: not recorded)."""
    hash: str | None = None
    """:func:`dfx.fingerprint.file_digest` of the file then (None: not recorded)."""

    @property
    def is_fake(self) -> bool:
        """True unless the image is real."""
        return self.label != "real"

    def under(self, root: str | Path) -> ImageRecord:
        """This record with its path placed under the data folder ``root``."""
        return replace(self, path=Path(root) / self.path)

    def to_dict(self) -> dict:
        """Plain-data form, keyed as the manifest's columns (the role under ``split``)."""
        return {
            "path": str(self.path),
            "label": self.label,
            "generator": self.generator,
            "split": self.role,
            "size": self.size,
            "hash": self.hash,
        }
