"""The work ``dfx serve`` hands to its worker processes: decoding uploads and drawing overlays.

These run in :mod:`dfx.serve.worker` (no torch, no web stack); their arguments and results
travel pickled, so they are plain data: bytes, Pillow images, arrays, dataclasses.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from PIL import Image

from dfx.data.decoding import ImageBytes, displayed_size, load_rgb
from dfx.data.provenance import Provenance, read_provenance
from dfx.errors import ImageReadError

DECODED_MAX_PIXELS = 4096 * 4096
"""Most pixels of a decoded image sent back to the service (48 MiB as RGB). Decoding
shrinks large images towards the network's input, so only extreme aspect ratios come
near it; past it the image gets an error record instead of a copy in the service."""


@dataclass
class Decoded:
    """An upload decoded as ``dfx predict`` decodes it, with what the service reports of it."""

    image: Image.Image
    """The RGB image the network's preprocessing takes (shrunk for the resize, as predict)."""
    provenance: Provenance
    """The origin claims of the upload's metadata."""
    size: tuple[int, int]
    """The upload's displayed (width, height), EXIF orientation applied."""


def decode_upload(
    upload: ImageBytes, max_pixels: int | None, target_size: int | None
) -> Decoded | str:
    """``upload`` decoded (``load_rgb`` with predict's arguments), or the reason it is not."""
    try:
        image = load_rgb(upload, max_pixels, target_size=target_size)
        size = displayed_size(upload)
    except ImageReadError as error:
        return str(error)
    width, height = image.size
    if width * height > DECODED_MAX_PIXELS:
        return (
            f"too many pixels after decoding ({width}×{height} > {DECODED_MAX_PIXELS:,}; "
            "an extreme aspect ratio)"
        )
    image.info.clear()  # ICC profile, EXIF, XMP: nothing the network needs sent back
    return Decoded(image, read_provenance(upload), size)


def draw_explanation(
    image: Image.Image,
    heatmaps: dict,
    shares: dict[str, float] | None,
    caption: list[str],
    max_side: int,
) -> dict[str, str]:
    """The overlays and the contact sheet, at most ``max_side`` px long, as base64 PNG."""
    from dfx.overlays import drawn_images, png_bytes

    return {
        key: base64.b64encode(png_bytes(picture)).decode("ascii")
        for key, picture in drawn_images(image, heatmaps, shares, caption, max_side).items()
    }
