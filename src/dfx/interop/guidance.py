"""The official release's split file, guidance.csv, as a dfx manifest.

guidance.csv has the columns ``label,image_path,model``: label 0 → base, 1 → fusion,
2 → test; ``image_path`` as the release's loaders read it, relative to the data folder with
a leading ``/`` (``/gan_generated/StyleGAN2/0001.png``) or absolute under it; ``model`` the
generator. The class and generator of each image come from its folders, as for every dfx
manifest; a ``model`` value that disagrees with the generator folder is reported.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dfx.classes import CLASS_FOLDER_ALIASES
from dfx.data.decoding import NOT_DECODABLE
from dfx.data.discovery import NOT_AN_IMAGE
from dfx.data.layout import scan_dataset
from dfx.data.manifest import Manifest, make_manifest
from dfx.errors import DfxError

GUIDANCE_ROLES: dict[int, str] = {0: "base", 1: "fusion", 2: "test"}
"""The release's label column → dfx role."""

REQUIRED_COLUMNS: tuple[str, ...] = ("label", "image_path")
"""Columns a guidance file must have (``model`` is read when present)."""


@dataclass(frozen=True)
class GuidanceIssue:
    """A row of the guidance file that was left out, or that disagrees with the folders."""

    line: int
    """Line number in the guidance file (the header is line 1)."""
    image_path: str
    """The row's ``image_path`` as written."""
    reason: str
    """What is wrong with it."""


@dataclass
class GuidanceResult:
    """The manifest made from a guidance file, and what did not carry over."""

    manifest: Manifest
    """The images the guidance file names, with its roles."""
    rows: int
    """Number of data rows in the guidance file."""
    left_out: list[GuidanceIssue] = field(default_factory=list)
    """Rows that name no usable image (missing, outside DATA, bad label, repeated)."""
    model_mismatches: list[GuidanceIssue] = field(default_factory=list)
    """Kept rows whose ``model`` column differs from the image's generator folder."""
    unlisted: list[str] = field(default_factory=list)
    """Images under DATA that the guidance file does not name (not in the manifest)."""


def manifest_from_guidance(guidance: str | Path, data: str | Path) -> GuidanceResult:
    """Read ``guidance`` and make the manifest of ``data`` with its roles."""
    guidance, data = Path(guidance), Path(data)
    if not data.is_dir():
        raise DfxError(f"data folder {data} does not exist or is not a folder.")
    entries = _read_rows(guidance)
    root = data.resolve()
    # Absolute guidance paths may name DATA as given (through a symlink) or resolved.
    bases = (root, Path(os.path.abspath(data)))
    roles: dict[str, str] = {}
    models: dict[str, tuple[int, str, str]] = {}
    left_out: list[GuidanceIssue] = []
    for line, raw_label, image_path, model in entries:
        role = _role(raw_label)
        relative = _relative(image_path, root, bases)
        if role is None:
            reason = f"label {raw_label!r} is not 0 (base), 1 (fusion) or 2 (test)"
        elif relative is None:
            reason = f"outside the data folder {data}"
        elif relative in roles:
            reason = "repeats an earlier row"
        else:
            roles[relative] = role
            models[relative] = (line, image_path, model)
            continue
        left_out.append(GuidanceIssue(line, image_path, reason))
    if not roles:
        raise DfxError(_nothing_usable(guidance, data, len(entries), left_out))
    scan = scan_dataset(data)
    manifest = make_manifest(data, roles=roles, scan=scan)
    kept = {row.path: row for row in manifest.rows}
    skipped = set(manifest.skipped)
    unreadable = dict(manifest.unreadable)
    for relative in roles.keys() - kept.keys():
        line, image_path, _ = models[relative]
        reason = unreadable.get(relative) or _why_absent(root, relative, skipped)
        if reason in (NOT_AN_IMAGE, NOT_DECODABLE):  # this file's own, older wording
            reason = "not an image file"
        left_out.append(GuidanceIssue(line, image_path, reason))
    left_out.sort(key=lambda issue: issue.line)
    if not manifest.rows:
        raise DfxError(_nothing_usable(guidance, data, len(entries), left_out))
    mismatches = [
        GuidanceIssue(line, image_path, f"model {model!r}, generator folder {row.generator!r}")
        for path, row in kept.items()
        for line, image_path, model in [models[path]]
        if model and model.strip().lower() != row.generator.lower()
    ]
    mismatches.sort(key=lambda issue: issue.line)
    unlisted = [record.path for record in scan.records if record.path not in roles]
    return GuidanceResult(manifest, len(entries), left_out, mismatches, unlisted)


def _read_rows(path: Path) -> list[tuple[int, str, str, str]]:
    """(line, label, image_path, model) of each data row; one sentence if it is no guidance file."""
    if not path.is_file():
        raise DfxError(f"guidance file {path} does not exist.")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [name.strip().lower() for name in next(reader, [])]
            missing = [name for name in REQUIRED_COLUMNS if name not in header]
            if missing:
                raise DfxError(
                    f"{path} lacks the column(s) {', '.join(missing)}; a guidance file has "
                    "the columns label,image_path,model."
                )
            label, image, model = (
                header.index(n) if n in header else None for n in ("label", "image_path", "model")
            )
            rows = []
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue
                cells = cells + [""] * (len(header) - len(cells))
                rows.append(
                    (
                        reader.line_num,
                        cells[label].strip(),
                        cells[image].strip(),
                        cells[model].strip() if model is not None else "",
                    )
                )
    except (UnicodeDecodeError, csv.Error) as error:
        raise DfxError(f"{path} is not a readable CSV file: {error}.") from error
    if not rows:
        raise DfxError(f"guidance file {path} has no rows.")
    return rows


def _role(text: str) -> str | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return GUIDANCE_ROLES.get(int(number)) if number.is_integer() else None


def _relative(image_path: str, root: Path, bases: tuple[Path, ...]) -> str | None:
    """The path relative to DATA with forward slashes, or None when it leads outside DATA.

    An absolute path counts as under DATA when it is below one of ``bases`` (DATA as given
    and resolved), as written or with its own symlinks resolved.
    """
    text = image_path.replace("\\", "/")
    if not text:
        return None
    if Path(text).is_absolute() or text.startswith("/"):
        for normal in (Path(os.path.normpath(text)), Path(os.path.realpath(text))):
            for base in bases:
                if normal.is_relative_to(base):
                    return normal.relative_to(base).as_posix()
        inside = text.lstrip("/")
        # The release's form: DATA-relative with a leading '/' (its paths start at a class folder).
        first = PurePosixPath(inside).parts[:1]
        if not first or (
            first[0].lower() not in CLASS_FOLDER_ALIASES and not (root / first[0]).exists()
        ):
            return None
        text = inside
    parts = [part for part in PurePosixPath(text).parts if part != "."]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _why_absent(root: Path, relative: str, skipped: set[str]) -> str:
    if not (root / relative).is_file():
        return "no such file"
    if relative in skipped:
        return "not an image file"
    return "not inside a class folder (dm, gan, real, dm_generated, gan_generated)"


def _nothing_usable(guidance: Path, data: Path, rows: int, left_out: list[GuidanceIssue]) -> str:
    example = f" (e.g. line {left_out[0].line}, {left_out[0].image_path}: {left_out[0].reason})"
    return (
        f"none of the {rows} rows of {guidance} names a usable image under {data}"
        f"{example if left_out else ''}; DATA must be the folder that image_path is relative to."
    )
