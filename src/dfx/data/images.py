"""Recognise image files by content and decode them safely to RGB."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dfx.errors import ImageReadError

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


def looks_like_image(path: str | Path) -> bool:
    """True when the file's first bytes are those of an image format (the extension is ignored)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    if head.startswith(_SIGNATURES):
        return True
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file below ``root``, in sorted order, without following symlinked folders."""
    for folder, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(folder) / name


def load_rgb(path: str | Path, *, target_size: int | None = None) -> Image.Image:
    """Decode an image file to an RGB Pillow image, raising ImageReadError with the reason.

    With ``target_size`` (the side the image will be resized to next), very large images are
    shrunk while decoding, never below three times that side: see :func:`decode_shrink`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                if target_size is not None:
                    request_draft(opened, target_size)
                opened.load()
                image = ImageOps.exif_transpose(opened)
                image = to_rgb(image)
                return image if target_size is None else decode_shrink(image, target_size)
    except FileNotFoundError as error:
        raise ImageReadError("file not found") from error
    except PermissionError as error:
        raise ImageReadError("permission denied") from error
    except IsADirectoryError as error:
        raise ImageReadError("is a folder, not an image file") from error
    except UnidentifiedImageError as error:
        raise ImageReadError("not an image Pillow can decode") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(f"too many pixels ({error})") from error
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageReadError(f"corrupt or truncated image ({error})") from error


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
    if opened.format == "JPEG":
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


def expand_inputs(arguments: list[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files as given, and the image files found in folders (recursively, by content).

    Returns the inputs to classify and (argument, reason) for arguments that name nothing.
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            files.extend(f for f in iter_files(path) if looks_like_image(f))
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            problems.append((str(argument), "no such file or folder"))
    return files, problems
