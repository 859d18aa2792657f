"""Find the labelled images of a data folder in either supported layout.

Class layout: ``DATA/<class>/<generator>/.../<image>`` with class ``dm``, ``gan`` or ``real``
(or the official ``dm_generated`` / ``gan_generated``). Binary layout: any folders named
``0_real`` and ``1_fake`` below DATA, as CNNDetection and its successors lay them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dfx.classes import BINARY_FOLDERS, CLASS_FOLDER_ALIASES
from dfx.data.discovery import iter_files, not_an_image, unreadable_image, walk
from dfx.data.record import ImageRecord
from dfx.errors import DfxError

NO_GENERATOR = "-"
"""Generator name for images that sit directly in a class (or binary) folder."""


@dataclass
class ScanResult:
    """The images found below a data folder, and what was passed over."""

    root: Path
    """The data folder that was scanned."""
    layout: str
    """``classes`` or ``binary``."""
    records: list[ImageRecord]
    """Every image file found, sorted by path."""
    reasons: dict[str, str] = field(default_factory=dict)
    """Relative path → why it was passed over, for files that are not images by content
    and do not claim to be (README.txt), in scan order."""
    unreadable: list[tuple[ImageRecord, str]] = field(default_factory=list)
    """Image files that cannot be read (empty, unreadable, or not an image despite an image
    extension), with the reason: failures to report, not files to pass over."""

    @property
    def skipped(self) -> list[str]:
        """Relative paths of the files passed over."""
        return list(self.reasons)


def find_layout(root: str | Path) -> tuple[str, dict[Path, str]]:
    """The layout of ``root`` and its label folders (folder → label), from names alone.

    No file is opened, so a command can refuse a layout before reading any image.
    ``classes`` when ``root`` holds dm/gan/real folders, else ``binary`` with every
    0_real/1_fake folder below it (none: the folder has neither layout).
    """
    root = Path(root)
    if not root.is_dir():
        raise DfxError(f"data folder {root} does not exist or is not a folder.")
    class_dirs = {
        child: CLASS_FOLDER_ALIASES[child.name.lower()]
        for child in sorted(root.iterdir())
        if child.is_dir() and child.name.lower() in CLASS_FOLDER_ALIASES
    }
    if class_dirs:
        return "classes", class_dirs
    binary = {f: BINARY_FOLDERS[f.name] for f in _folders(root) if f.name in BINARY_FOLDERS}
    return "binary", binary


def scan_dataset(root: str | Path) -> ScanResult:
    """Scan ``root`` in whichever layout it uses; fail with one sentence when it has neither."""
    root = Path(root)
    layout, label_dirs = find_layout(root)
    result = ScanResult(root, layout, [])
    for label_dir, label in label_dirs.items():
        _scan_into(result, label_dir, label)
    nothing = not result.records and not result.reasons and not result.unreadable
    if layout == "binary" and nothing:
        raise DfxError(
            f"data folder {root} has neither class folders (dm, gan, real) "
            "nor 0_real/1_fake folders; see 'dfx split --help' for the layout."
        )
    if not result.records:
        raise DfxError(f"data folder {root} holds no image files.")
    result.records.sort(key=lambda record: record.path)
    return result


def _scan_into(result: ScanResult, label_dir: Path, label: str) -> None:
    for file in iter_files(label_dir):
        relative = file.relative_to(result.root).as_posix()
        reason = not_an_image(file)
        record = ImageRecord(relative, label, _generator_of(result, label_dir, file))
        if unreadable_image(file, reason):
            result.unreadable.append((record, reason))
        elif reason is not None:
            result.reasons[relative] = reason
        else:
            result.records.append(record)


def _folders(root: Path) -> list[Path]:
    """Every folder below ``root``, sorted; linked folders are entered once (no cycles)."""
    found = []
    for folder, dirnames, _ in walk(root):
        found.extend(folder / name for name in dirnames)
    return sorted(found)


def _generator_of(result: ScanResult, label_dir: Path, file: Path) -> str:
    if result.layout == "classes":
        inside = file.relative_to(label_dir).parts
        return inside[0] if len(inside) > 1 else NO_GENERATOR
    # Binary layout: the generator is the first folder between DATA and 0_real/1_fake.
    above = label_dir.relative_to(result.root).parts[:-1]
    return above[0] if above else NO_GENERATOR
