"""Recognise image files by content and decode them safely to RGB."""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dfx.data.suffixes import IMAGE_SUFFIXES
from dfx.errors import ImageReadError
from dfx.limits import DEFAULT_MAX_PIXELS

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

# Major brands of the ISO base media "ftyp" box that mark a still image: HEIC/HEIF (the
# default format of iPhone cameras) and AVIF.
_FTYP_IMAGE_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
)

HEIF_HINT = "a HEIC/HEIF image; install pillow-heif to read it (pip install pillow-heif)"
"""Why a HEIC file fails when the pillow-heif plugin is missing."""


def _register_heif() -> bool:
    """Teach Pillow to open HEIC/HEIF files through pillow-heif, once per process."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    # AVIF stays with Pillow's own decoder; libheif applies the irot/imir orientation boxes
    # and resets EXIF orientation, so exif_transpose below does not rotate twice.
    register_heif_opener()
    return True


HEIF_AVAILABLE = _register_heif()
"""Whether HEIC/HEIF files can be decoded (pillow-heif is installed)."""


@dataclass(frozen=True)
class ImageBytes:
    """An encoded image held in memory (an upload), read like a file of that name."""

    name: str
    """How results name it (the upload's file name)."""
    data: bytes
    """The file's bytes, exactly as a file on disk would hold them."""

    def __str__(self) -> str:
        return self.name

    def stream(self) -> io.BytesIO:
        """A fresh binary stream over the bytes, for decoders that want a file object."""
        return io.BytesIO(self.data)


ImageSource = str | Path | ImageBytes
"""What :func:`load_rgb` decodes: a file, or the bytes of one."""


def _openable(source: ImageSource):
    """What Pillow opens for ``source``: the path, or a stream over the bytes."""
    return source.stream() if isinstance(source, ImageBytes) else source


NOT_AN_IMAGE = "not an image by its content"
NOT_DECODABLE = "not an image Pillow can decode"
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
        return _open_failure(Path(path), error)
    if head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    if head[4:8] == b"ftyp" and head[8:12] in _FTYP_IMAGE_BRANDS:
        return None
    return NOT_AN_IMAGE


def is_heif(path: ImageSource) -> bool:
    """Whether a file (or its bytes) is a HEIC/HEIF image by its ftyp box (AVIF excluded)."""
    try:
        with _openable_binary(path) as handle:
            head = handle.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in _FTYP_IMAGE_BRANDS - {b"avif", b"avis"}


def _openable_binary(source: ImageSource):
    return source.stream() if isinstance(source, ImageBytes) else open(source, "rb")


def not_a_file_with_content(path: str | Path) -> str | None:
    """Why ``path`` (symlinks followed) is not a non-empty regular file, or None.

    Checked before opening: opening a named pipe would wait for a writer forever.
    """
    try:
        status = os.stat(path)
    except OSError as error:
        return _open_failure(Path(path), error)
    if stat.S_ISDIR(status.st_mode):
        return "is a folder, not an image file"
    if not stat.S_ISREG(status.st_mode):
        return "not a regular file (a pipe, device or socket)"
    if status.st_size == 0:
        return EMPTY
    return None


def _open_failure(path: Path, error: OSError) -> str:
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


CHECK_SIDE = 32
"""Target side of a decode check: JPEGs decode at reduced scale, every byte is still read."""


def decode_failures(
    paths: list[str | Path], max_pixels: int | None = DEFAULT_MAX_PIXELS, on_file=None
) -> dict[int, str]:
    """Why each of ``paths`` that does not decode fails (position → the reason).

    The same decoding as classification, with the same reasons, so a file that a run did
    not read (left out by balanced sampling, or written into a manifest) is judged as it
    would be. Files are decoded in threads (Pillow decodes without holding the GIL);
    ``on_file`` is called after each.
    """
    from concurrent.futures import ThreadPoolExecutor

    def check(path) -> str | None:
        try:
            load_rgb(path, max_pixels, target_size=CHECK_SIDE)
            return None
        except ImageReadError as error:
            return str(error)
        finally:
            if on_file is not None:
                on_file()

    if not paths:
        return {}
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        reasons = list(pool.map(check, paths))
    return {i: reason for i, reason in enumerate(reasons) if reason is not None}


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


def load_rgb(
    path: ImageSource,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    *,
    target_size: int | None = None,
) -> Image.Image:
    """Decode an image file (or its bytes) to RGB, raising ImageReadError with the reason.

    The content decides the format (not the extension), the EXIF orientation is applied,
    an animated image gives its first frame, and an image of more than ``max_pixels``
    pixels (None: no dfx limit) is refused before its pixels are decoded. With
    ``target_size`` (the side the image will be resized to next), very large images are
    shrunk while decoding, never below three times that side: see :func:`decode_shrink`.
    """
    in_memory = isinstance(path, ImageBytes)
    if not in_memory:
        path = Path(path)
    try:
        # Bytes get the checks a file gets where they apply: only emptiness can be told early.
        if in_memory:
            reason = None if path.data else EMPTY
        else:
            reason = not_a_file_with_content(path)
        if reason is not None:
            raise ImageReadError(reason)
        with warnings.catch_warnings():
            # dfx applies its own per-file limit below; Pillow's hard limit (twice its
            # warning limit) still raises DecompressionBombError.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # "Corrupt EXIF data" and the like: the image decodes, the warning is noise.
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(_openable(path)) as opened:
                # The limit applies to the stored size, before any reduced-scale draft.
                _check_pixels(opened.size, max_pixels)
                if target_size is not None:
                    request_draft(opened, target_size)
                opened.load()  # the first frame of an animated image
                image = to_rgb(ImageOps.exif_transpose(opened))
                return image if target_size is None else decode_shrink(image, target_size)
    except ImageReadError:
        raise
    except UnidentifiedImageError as error:
        if not HEIF_AVAILABLE and is_heif(path):
            raise ImageReadError(HEIF_HINT) from error
        raise ImageReadError(NOT_DECODABLE) from error
    except OSError as error:
        opening = (FileNotFoundError, PermissionError, IsADirectoryError)
        if not in_memory and isinstance(error, opening):
            raise ImageReadError(_open_failure(path, error)) from error
        raise ImageReadError(f"corrupt or truncated image ({error})") from error
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"too many pixels ({error})") from error
    except MemoryError as error:
        raise ImageReadError("not enough memory to decode it") from error
    except Exception as error:  # a hostile file may trip any decoder path: skip, never crash
        reason = f"corrupt or truncated image ({type(error).__name__}: {error})"
        raise ImageReadError(reason) from error


# EXIF orientations that turn the stored image by a quarter turn (width and height swap).
_QUARTER_TURNS = frozenset({5, 6, 7, 8})


def displayed_size(image: ImageSource | Image.Image) -> tuple[int, int]:
    """(width, height) of an image as shown, EXIF orientation applied, as :func:`load_rgb` gives.

    A file's header is read, not its pixels; an in-memory image is used as it is.
    """
    if isinstance(image, Image.Image):
        return image.size
    with Image.open(_openable(image)) as opened:
        width, height = opened.size
        orientation = opened.getexif().get(0x0112)  # the EXIF Orientation tag
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def _check_pixels(size: tuple[int, int], max_pixels: int | None) -> None:
    pixels = size[0] * size[1]
    if max_pixels is not None and pixels > max_pixels:
        raise ImageReadError(
            f"too many pixels ({size[0]}×{size[1]} = {pixels:,} > the limit of {max_pixels:,})"
        )


# Shrinking stops at this multiple of the target side, so that the antialiased resize that
# follows still does most of the filtering. At 3 (Pillow's own "reducing_gap" advice for fair
# resampling) the inputs stay within a fraction of a grey level of a full decode on average;
# at 2 the difference was several times larger (docs/performance.md).
SHRINK_MARGIN = 3


def request_draft(opened: Image.Image, target_size: int) -> None:
    """Ask a JPEG decoder for a 1/2, 1/4 or 1/8 scale that keeps both sides ≥ 3 × target.

    Decoding at reduced scale skips most of the inverse DCT work; Pillow picks the largest
    reduction that keeps the requested size, so small files are decoded as usual.
    """
    if opened.format in ("JPEG", "MPO"):  # MPO: the multi-picture JPEG of many phones
        side = SHRINK_MARGIN * target_size
        opened.draft(opened.mode, (side, side))


def decode_shrink(image: Image.Image, target_size: int) -> Image.Image:
    """Box-reduce by an integer factor while both sides stay ≥ 3 × target (big PNGs etc.)."""
    factor = min(image.size) // (SHRINK_MARGIN * target_size)
    return image.reduce(factor) if factor >= 2 else image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparent pixels are composited on black."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, (0, 0, 0))
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: scale to 8 bits instead of clipping at 255.
        grey = np.asarray(image, dtype=np.int64) >> 8
        return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")


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
