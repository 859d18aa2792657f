"""Find image files: the extensions that promise one, content checks, folder walks.

No heavy imports (no Pillow): a scan, and the command line's checks of its arguments, tell
image files from other files by their first bytes and name alone; decoding them is
:mod:`dfx.data.decoding`'s.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jfif", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".apng"}
    | {".heic", ".heif", ".avif"}
)
"""Extensions that promise an image: such a file that is not one is reported, not ignored."""


# Leading bytes of the formats Pillow decodes that image data sets use in practice.
_SIGNATURES: tuple[bytes, ...] = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"BM",  # BMP
    b"II*\x00",  # TIFF, little endian
    b"MM\x00*",  # TIFF, big endian
)

FTYP_IMAGE_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
)
"""Major brands of the ISO base media ``ftyp`` box that mark a still image: HEIC/HEIF (the
default format of iPhone cameras) and AVIF."""

NOT_AN_IMAGE = "not an image by its content"
EMPTY = "empty file (0 bytes)"
MISSING = "no such file or folder"
"""The reason given for a path that names nothing, by the library and every command alike."""


def not_an_image(path: str | Path) -> str | None:
    """Why ``path`` is not an image file by its first bytes, or None when it looks like one."""
    reason = not_a_file_with_content(path)
    if reason is not None:
        return reason
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as error:
        return open_failure(Path(path), error)
    if head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    if head[4:8] == b"ftyp" and head[8:12] in FTYP_IMAGE_BRANDS:
        return None
    return NOT_AN_IMAGE


def not_a_file_with_content(path: str | Path) -> str | None:
    """Why ``path`` (symlinks followed) is not a non-empty regular file, or None.

    Checked before opening: opening a named pipe would wait for a writer forever.
    """
    try:
        status = os.stat(path)
    except OSError as error:
        return open_failure(Path(path), error)
    if stat.S_ISDIR(status.st_mode):
        return "is a folder, not an image file"
    if not stat.S_ISREG(status.st_mode):
        return "not a regular file (a pipe, device or socket)"
    if status.st_size == 0:
        return EMPTY
    return None


def open_failure(path: Path, error: OSError) -> str:
    """Why opening ``path`` failed with ``error``, in the words every command uses."""
    if isinstance(error, FileNotFoundError):
        return "dangling symbolic link" if path.is_symlink() else MISSING
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, IsADirectoryError):
        return "is a folder, not an image file"
    return f"cannot open ({error.strerror or error})"


def unreadable_image(path: str | Path, reason: str | None) -> bool:
    """Whether a file that failed the content check (``reason``) is an image that failed.

    Empty, unreadable or vanished files, and files with an image extension, are reported
    as unreadable images; other files that are not images (README.txt) are passed over.
    """
    return reason is not None and (
        reason != NOT_AN_IMAGE or Path(path).suffix.lower() in IMAGE_SUFFIXES
    )


def walk(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``os.walk`` in sorted order that enters symlinked folders, each real folder once.

    Linked generator folders (e.g. on another disk) are scanned; a link back to a folder
    already visited, such as a cycle, is not entered again, so a scan always ends.
    """
    visited: set[tuple[int, int]] = set()
    for folder, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            identity = os.stat(folder)
        except OSError:
            dirnames[:] = []
            continue
        key = (identity.st_dev, identity.st_ino)
        if key in visited:
            dirnames[:] = []
            continue
        visited.add(key)
        dirnames.sort()
        yield Path(folder), dirnames, sorted(filenames)


def iter_files(root: Path) -> Iterator[Path]:
    """Every file below ``root`` in sorted order (see :func:`walk`); hidden files are skipped.

    Links to files (dangling ones included) are listed like files.
    """
    for folder, _, filenames in walk(root):
        for name in filenames:
            if not name.startswith("."):
                yield folder / name


def expand_inputs(
    arguments: list[str | Path], skipped: dict[str, str] | None = None
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files as given, and the image files found in folders (recursively, by content).

    Returns the inputs to classify and (path, reason) for arguments that name nothing.
    Files in folders that should be images (an image extension, or empty, unreadable, a
    dangling link) are inputs even when they cannot be images, so that decoding them gives
    the reason the Python API gives; other non-image files are passed over, and ``skipped``,
    when given, gets their path → reason.
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = len(files) + len(problems)
            for file in iter_files(path):
                reason = not_an_image(file)
                if reason is None or unreadable_image(file, reason):
                    files.append(file)  # a broken photo.jpg is an input, reported as such
                elif skipped is not None:  # README.txt is passed over, for the caller to name
                    skipped[str(file)] = reason
            if len(files) + len(problems) == found:
                problems.append((str(argument), "a folder with no image files in it"))
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            problems.append((str(argument), MISSING))
    return files, problems
