"""Decode image files (or their bytes) safely to RGB: accepted formats only, refusals from
the header, each side shrunk for the model while decoding, EXIF orientation, modes."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from dfx.data.discovery import EMPTY, FTYP_IMAGE_BRANDS, not_a_file_with_content, open_failure
from dfx.errors import ImageReadError
from dfx.limits import DEFAULT_MAX_PIXELS, MAX_ASPECT_RATIO

HEIF_HINT = "a HEIC/HEIF image; install pillow-heif to read it (pip install pillow-heif)"
"""Why a HEIC file fails when the pillow-heif plugin is missing."""


def _register_heif() -> bool:
    """Teach Pillow to open HEIC/HEIF files through pillow-heif, once per process."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    # AVIF stays with Pillow's own decoder; libheif applies the irot/imir orientation boxes
    # and resets EXIF orientation, so the EXIF turn in load_rgb does not rotate twice.
    register_heif_opener()
    return True


HEIF_AVAILABLE = _register_heif()
"""Whether HEIC/HEIF files can be decoded (pillow-heif is installed)."""

ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
"""Pillow's names of the only formats dfx decodes: the formats people send (JPEG includes MPO,
the multi-picture JPEG of cameras). Every other format Pillow knows (EPS, which runs
Ghostscript, ICO, DDS, ICNS, IM, MSP, PCX, QOI, SGI, SPIDER, TGA, XBM, JPEG 2000, ...) is
refused by name before its decoder runs."""

ACCEPTED_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF and AVIF"
"""The accepted formats, as error messages and the docs name them."""

NOT_ACCEPTED = "images are not accepted"
"""The words of every refusal by format (``EPS images are not accepted: ...``)."""

# Refused formats that Pillow registers without a signature test; their header parsers (which
# read a few bytes and decode nothing) name them. Every other format is named by its signature,
# those whose signature a TGA header can share (CUR, DIB) only after the parsers.
_NAMED_BY_HEADER = ("TGA", "SPIDER", "IM")
_WEAK_SIGNATURES = ("CUR", "DIB")
_DISPLAY_NAMES = {"JPEG2000": "JPEG 2000"}


def not_accepted(format_name: str) -> str:
    """The reason given for an image of a format dfx does not read (Pillow's name of it)."""
    shown = _DISPLAY_NAMES.get(format_name, format_name)
    return f"{shown} {NOT_ACCEPTED}: dfx reads only {ACCEPTED_NAMES}"


def _accepted_formats() -> list[str]:
    """The accepted formats this Pillow has a plugin for (AVIF needs Pillow 11.2 or later)."""
    Image.init()
    return [name for name in ACCEPTED_FORMATS if name in Image.OPEN]


def _refused_format(stream) -> str | None:
    """Pillow's name of the format of a file no accepted format opened, or None.

    Found by each plugin's signature test on the first bytes, or for the few formats without
    one, by their header parser; no decoder runs.
    """
    stream.seek(0)
    prefix = stream.read(16)
    accepted = set(ACCEPTED_FORMATS)
    strong = [name for name in Image.OPEN if name not in accepted | set(_WEAK_SIGNATURES)]
    for name in strong:
        if _signature_matches(name, prefix):
            return name
    for name in _NAMED_BY_HEADER:
        if name not in Image.OPEN:
            continue
        stream.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "IM image format is deprecated", ...
                with Image.open(stream, formats=[name]):
                    return name
        except Exception:
            continue
    return next((name for name in _WEAK_SIGNATURES if _signature_matches(name, prefix)), None)


def _signature_matches(name: str, prefix: bytes) -> bool:
    """Whether Pillow's signature test of format ``name`` takes these first bytes."""
    accept = Image.OPEN[name][1] if name in Image.OPEN else None
    if accept is None:
        return False
    try:
        found = accept(prefix)
    except Exception:  # a signature test that trips on a short file names nothing
        return False
    return bool(found) and not isinstance(found, str)  # a str: a "not installed" notice


@contextmanager
def open_image(source: ImageSource) -> Iterator[Image.Image]:
    """Pillow's image of a file (or its bytes), opened from its header in an accepted format.

    Nothing is decoded yet. A file of another format raises ImageReadError naming it
    (:func:`not_accepted`); one that no plugin recognises raises UnidentifiedImageError.
    """
    with _openable_binary(source) as stream:
        try:
            opened = Image.open(stream, formats=_accepted_formats())
        except UnidentifiedImageError:
            refused = _refused_format(stream)
            if refused is not None:
                raise ImageReadError(not_accepted(refused)) from None
            raise
        with opened:
            yield opened


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


NOT_DECODABLE = "not an image Pillow can decode"
"""The reason given for a file that no accepted format's plugin recognises."""


def is_heif(path: ImageSource) -> bool:
    """Whether a file (or its bytes) is a HEIC/HEIF image by its ftyp box (AVIF excluded)."""
    try:
        with _openable_binary(path) as handle:
            head = handle.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in FTYP_IMAGE_BRANDS - {b"avif", b"avis"}


def _openable_binary(source: ImageSource):
    return source.stream() if isinstance(source, ImageBytes) else open(source, "rb")


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


TRUNCATION_SWITCH_ON = (
    "Pillow's ImageFile.LOAD_TRUNCATED_IMAGES is switched on in this process, so truncated "
    "images cannot be told from whole ones; dfx decodes none until it is off"
)
"""The reason every image gets while another library has told Pillow to accept truncation."""


def load_rgb(
    path: ImageSource,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    *,
    target_size: int | None = None,
) -> Image.Image:
    """Decode an image file (or its bytes) to RGB, raising ImageReadError with the reason.

    The content decides the format (not the extension) and only :data:`ACCEPTED_FORMATS`
    are decoded; the EXIF orientation is applied and an animated image gives its first
    frame. An image of another format, of more than ``max_pixels`` pixels (None: no dfx
    limit), with sides further apart than :data:`dfx.limits.MAX_ASPECT_RATIO`, or whose
    data cannot hold the pixels it declares, is refused from its header, before any
    decoder runs. With ``target_size`` (the side the image will be resized to next), each
    side is shrunk while decoding, never below three times that side, so that the image
    kept is below six times it on each side: see :func:`decode_shrink`.
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
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            raise ImageReadError(TRUNCATION_SWITCH_ON)
        with warnings.catch_warnings():
            # dfx applies its own per-file limit below; Pillow's hard limit (twice its
            # warning limit) still raises DecompressionBombError.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # "Corrupt EXIF data" and the like: the image decodes, the warning is noise.
            warnings.simplefilter("ignore", UserWarning)
            with open_image(path) as opened:
                # The limits apply to the stored size, before any reduced-scale draft.
                check_header(opened, max_pixels)
                return _decoded(opened, target_size)
    except ImageReadError:
        raise
    except UnidentifiedImageError as error:
        if not HEIF_AVAILABLE and is_heif(path):
            raise ImageReadError(HEIF_HINT) from error
        raise ImageReadError(NOT_DECODABLE) from error
    except OSError as error:
        opening = (FileNotFoundError, PermissionError, IsADirectoryError)
        if not in_memory and isinstance(error, opening):
            raise ImageReadError(open_failure(path, error)) from error
        raise ImageReadError(f"corrupt or truncated image ({error})") from error
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"too many pixels ({error})") from error
    except MemoryError as error:
        raise ImageReadError("not enough memory to decode it") from error
    except Exception as error:  # a hostile file may trip any decoder path: skip, never crash
        reason = f"corrupt or truncated image ({type(error).__name__}: {error})"
        raise ImageReadError(reason) from error


def _decoded(opened: Image.Image, target_size: int | None) -> Image.Image:
    """The first frame of an opened image as RGB, upright, shrunk for ``target_size``.

    Shrinking comes before the EXIF turn and, for grey and RGB images, before the
    conversion to RGB, so that no full-size copy is made beside the decoder's own buffer.
    """
    if target_size is not None:
        request_draft(opened, target_size)
    opened.load()  # the first frame of an animated image
    orientation = opened.getexif().get(_ORIENTATION)
    image: Image.Image = opened
    if target_size is not None:
        image = decode_shrink(_reducible(image), target_size)
    turn = _TRANSPOSE.get(orientation)
    if turn is not None:
        image = image.transpose(turn)
    image = to_rgb(image)
    # The file's own image is closed when the caller leaves open_image: hand out a copy.
    return image.copy() if image is opened else image


def _reducible(image: Image.Image) -> Image.Image:
    """``image`` in a mode whose box reduction gives what reducing its RGB form would give.

    Grey and RGB images stay as they are (an RGB copy of a large grey image would triple
    it), one-bit images become grey and 16-bit ones 8-bit grey; other modes (palette,
    alpha, CMYK) are converted to RGB first, as :func:`to_rgb` converts them.
    """
    if image.mode in ("L", "RGB"):
        return image
    if image.mode == "1":
        return image.convert("L")
    if image.mode in _WIDE_GREY:
        return _grey_to_8_bits(image)
    return to_rgb(image)


# EXIF orientations that turn the stored image by a quarter turn (width and height swap).
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
_ORIENTATION = 0x0112  # the EXIF Orientation tag
# How each EXIF orientation is undone, as Pillow's ImageOps.exif_transpose undoes it.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def displayed_size(image: ImageSource | Image.Image) -> tuple[int, int]:
    """(width, height) of an image as shown, EXIF orientation applied, as :func:`load_rgb` gives.

    A file's header is read, not its pixels; an in-memory image is used as it is.
    """
    if isinstance(image, Image.Image):
        return image.size
    with open_image(image) as opened:
        width, height = opened.size
        orientation = opened.getexif().get(_ORIENTATION)
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def check_header(opened: Image.Image, max_pixels: int | None) -> None:
    """Refuse, from an opened image's header, what dfx will not decode (ImageReadError).

    More than ``max_pixels`` pixels (None: no dfx limit), sides further apart than
    :data:`dfx.limits.MAX_ASPECT_RATIO`, or a JPEG too short to hold the pixels it declares.
    """
    _check_pixels(opened.size, max_pixels)
    width, height = opened.size
    if max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height)):
        raise ImageReadError(
            f"too thin: {width}×{height} is further from square than 1:{MAX_ASPECT_RATIO}"
        )
    if opened.format in ("JPEG", "MPO"):
        _check_jpeg_data(opened)


def _check_pixels(size: tuple[int, int], max_pixels: int | None) -> None:
    pixels = size[0] * size[1]
    if max_pixels is not None and pixels > max_pixels:
        raise ImageReadError(
            f"too many pixels ({size[0]}×{size[1]} = {pixels:,} > the limit of {max_pixels:,})"
        )


def _check_jpeg_data(opened: Image.Image) -> None:
    """Refuse a Huffman-coded JPEG whose data after the header are too short for its size.

    Each block of 8 × 8 pixels costs at least one bit (its DC code), so a file cannot hold
    fewer bits than minimum coded units; a shorter one ends early (libjpeg would fill the
    rest with grey and give a verdict on pixels that are not in the file).
    """
    stream = opened.fp
    if stream is None:
        return
    position = stream.tell()
    try:
        scan = _jpeg_scan_start(stream)
        end = stream.seek(0, 2)
    finally:
        stream.seek(position)
    if scan is None:
        return  # arithmetic coding, or an odd header: left to the decoder
    layers = getattr(opened, "layer", None) or []
    h_max = max((layer[1] for layer in layers), default=4) or 4
    v_max = max((layer[2] for layer in layers), default=4) or 4
    width, height = opened.size
    units = -(-width // (8 * h_max)) * -(-height // (8 * v_max))
    if (end - scan) * 8 < units:
        raise ImageReadError(
            f"corrupt or truncated image (its {end - scan:,} bytes of data cannot hold the "
            f"{width}×{height} pixels its header declares)"
        )


_HEADER_SEGMENTS = 1024
"""Segments read before a JPEG's first scan at most (cameras write a few dozen)."""


def _jpeg_scan_start(stream) -> int | None:
    """Where a Huffman-coded JPEG's first scan begins, reading only the segment headers.

    None for arithmetic coding (SOF9 to SOF15 and DAC: less than a bit per block is
    possible) and for a header this walk cannot follow.
    """
    at = 2  # after the start-of-image marker
    for _ in range(_HEADER_SEGMENTS):
        stream.seek(at)
        head = stream.read(4)
        if len(head) < 4 or head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0xFF:  # a fill byte
            at += 1
            continue
        if marker == 0xDA:  # start of scan
            return at
        if 0xC9 <= marker <= 0xCF:
            return None
        at += 2 + int.from_bytes(head[2:4], "big")
    return None


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
    """Box-reduce each side by an integer factor while it stays ≥ 3 × target (big PNGs etc.).

    The model resizes each side to the target independently (the aspect ratio is not
    kept), so each side keeps its own margin; each ends below
    :data:`dfx.limits.DECODE_SIDE_MULTIPLE` (6) × target, whatever the image's shape.
    """
    factors = tuple(max(1, side // (SHRINK_MARGIN * target_size)) for side in image.size)
    return image.reduce(factors) if max(factors) >= 2 else image


_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I")
_STRIP_PIXELS = 1 << 20  # pixels converted at a time from 16 to 8 bits


def _grey_to_8_bits(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) grey as 8-bit grey: value ÷ 256, clipped to 0..255.

    Converted a strip of rows at a time, so that a large image costs its 8-bit copy and
    a few megabytes, not an int64 array eight times its pixel count.
    """
    width, height = image.size
    grey = Image.new("L", image.size)
    rows = max(1, _STRIP_PIXELS // max(1, width))
    for top in range(0, height, rows):
        strip = np.asarray(image.crop((0, top, width, min(height, top + rows))))
        scaled = np.clip(strip.astype(np.int64) >> 8, 0, 255).astype(np.uint8)
        grey.paste(Image.fromarray(scaled), (0, top))
    return grey


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
    if image.mode in _WIDE_GREY:
        # 16-bit grey: scale to 8 bits instead of clipping at 255.
        return _grey_to_8_bits(image).convert("RGB")
    return image.convert("RGB")
