"""What an image file's container says about it, read from its header without the pixels.

Format, size, colour mode, the JPEG quality estimated from the quantisation tables, and
which metadata blocks (EXIF, ICC, XMP) it carries: the traits a detector can learn
instead of the generator's when the classes of a data set differ in them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfx.data.decoding import open_image
from dfx.data.discovery import not_a_file_with_content
from dfx.errors import ImageReadError

# The example tables of the JPEG standard (ITU T.81 Annex K), in natural (row-major) order.
# Encoders based on the IJG library (libjpeg, Pillow, most cameras' software) scale them by
# the quality factor; matching a file's tables against the scaled ones recovers the factor.
_LUMINANCE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ]
).ravel()
_CHROMINANCE = np.array(
    [
        [17, 18, 24, 47, 99, 99, 99, 99],
        [18, 21, 26, 66, 99, 99, 99, 99],
        [24, 26, 56, 99, 99, 99, 99, 99],
        [47, 66, 99, 99, 99, 99, 99, 99],
    ]
    + [[99] * 8] * 4
).ravel()


def _scaled(table: np.ndarray, quality: int) -> np.ndarray:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((table * scale + 50) // 100, 1, 255)


_QUALITIES = np.arange(1, 101)
_SCALED_LUMINANCE = np.stack([_scaled(_LUMINANCE, q) for q in _QUALITIES])
_SCALED_CHROMINANCE = np.stack([_scaled(_CHROMINANCE, q) for q in _QUALITIES])


def jpeg_quality(quantization: dict[int, list[int]] | None) -> int | None:
    """The IJG quality factor (1-100) whose tables are closest to a JPEG's (None: no tables).

    Exact for files written with the standard tables; for other encoders it is the nearest
    equivalent, which is what matters when comparing the compression of two classes.
    """
    if not quantization or 0 not in quantization or len(quantization[0]) != 64:
        return None
    error = np.abs(_SCALED_LUMINANCE - np.asarray(quantization[0])).sum(axis=1)
    if 1 in quantization and len(quantization[1]) == 64:
        error = error + np.abs(_SCALED_CHROMINANCE - np.asarray(quantization[1])).sum(axis=1)
    # Ties (tables clipped at 1 near quality 100) go to the highest quality.
    return int(_QUALITIES[len(error) - 1 - int(np.argmin(error[::-1]))])


@dataclass(frozen=True)
class FileFacts:
    """The container traits of one image file."""

    format: str
    """Pillow's name of the format: PNG, JPEG, WEBP, HEIF, ..."""
    width: int
    """Stored width in pixels (before any EXIF rotation)."""
    height: int
    """Stored height in pixels."""
    mode: str
    """Pillow colour mode: RGB, RGBA, L, P, CMYK, ..."""
    bytes: int
    """File size in bytes."""
    jpeg_quality: int | None
    """Estimated JPEG quality factor (None: not a JPEG)."""
    exif: bool
    """Whether it carries EXIF data."""
    icc: bool
    """Whether it carries an ICC colour profile."""
    xmp: bool
    """Whether it carries an XMP packet."""

    @property
    def bytes_per_pixel(self) -> float:
        """File size per stored pixel: how strongly the content was compressed."""
        return self.bytes / max(1, self.width * self.height)

    def to_dict(self) -> dict:
        """Plain-data form for JSON."""
        return {
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "mode": self.mode,
            "bytes": self.bytes,
            "jpeg_quality": self.jpeg_quality,
            "exif": self.exif,
            "icc": self.icc,
            "xmp": self.xmp,
        }


def read_facts(path: str | Path) -> FileFacts:
    """The container traits of an image file; raises ImageReadError when it cannot be opened."""
    path = Path(path)
    reason = not_a_file_with_content(path)
    if reason is not None:
        raise ImageReadError(reason)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open_image(path) as image:
                info = image.info
                return FileFacts(
                    format=image.format or "unknown",
                    width=image.width,
                    height=image.height,
                    mode=image.mode,
                    bytes=path.stat().st_size,
                    jpeg_quality=jpeg_quality(getattr(image, "quantization", None))
                    if image.format in ("JPEG", "MPO")
                    else None,
                    exif=bool(info.get("exif")) or len(image.getexif()) > 0,
                    icc=bool(info.get("icc_profile")),
                    xmp=bool(xmp_packet(info)),
                )
    except ImageReadError:
        raise
    except Exception as error:  # any decoder may trip on a hostile header: report, go on
        raise ImageReadError(f"cannot read its header ({type(error).__name__}: {error})") from error


def xmp_packet(info: dict) -> bytes:
    """The XMP packet Pillow found in a file's header (empty when there is none)."""
    packet = info.get("xmp") or info.get("XML:com.adobe.xmp") or b""
    return packet.encode("utf-8", "replace") if isinstance(packet, str) else bytes(packet)
