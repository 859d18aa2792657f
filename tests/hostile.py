"""Hostile inputs built in memory: small valid files that would freeze, exhaust or reach out.

Each builder returns the bytes of one file; none needs more than a few megabytes to build,
whatever the size the file declares. tests/test_hostile.py runs them through the decoder,
``dfx predict`` and ``dfx serve``.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

METADATA_WORDS = (b"DigitalSourceType", b"CreatorTool", b"rdf:resource", b"<x:xmpmeta")
"""The words the provenance scan looks for."""

_TAILS = (b"", b" ", b"=", b'="', b"='", b">", b"> ", b"<", b' rdf:resource="', b"\t\n")


def hostile_texts(size: int) -> dict[str, bytes]:
    """Texts of ``size`` bytes that make backtracking patterns over metadata quadratic.

    Each metadata word followed by each opener of a value (``=``, ``="``, ``>``, ...) with
    no closing character, repeated; and each opener alone, repeated.
    """
    texts = {}
    for word in (b"", *METADATA_WORDS):
        for tail in _TAILS:
            unit = word + tail
            if unit:
                texts[repr(unit)] = (unit * (size // len(unit) + 1))[:size]
    return texts


def xmp_bomb(size: int = 257 * 1024) -> bytes:
    """An XMP packet holding ``DigitalSourceType`` over and over, with no ``>`` after it."""
    head = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description '
    words = b"Iptc4xmpExt:DigitalSourceType " * (size // 30)
    return head + words + b"</x:xmpmeta>"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_xmp(xmp: bytes) -> bytes:
    """A 16 × 16 PNG carrying ``xmp`` in an uncompressed iTXt chunk, as editors write it."""
    plain = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 150)).save(plain, format="PNG")
    data = plain.getvalue()
    itxt = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp
    end = data.rindex(b"IEND") - 4
    return data[:end] + png_chunk(b"iTXt", itxt) + data[end:]


def jpeg(size=(16, 16), **options) -> bytes:
    """A small grey JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (128, 128, 128)).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def zero_png(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """An all-zero PNG of any declared size, compressed as it is built (a few MB at most).

    ``colour_type``: 0 grey, 2 RGB, 6 RGBA; ``bit_depth`` 1, 8 or 16.
    """
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = bytes(1 + (width * channels * bit_depth + 7) // 8)  # filter byte 0, zero samples
    per_piece = max(1, (4 << 20) // len(row))
    compressor = zlib.compressobj(9)
    parts, done = [], 0
    while done < height:
        rows = min(per_piece, height - done)
        parts.append(compressor.compress(row * rows))
        done += rows
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def thin_png() -> bytes:
    """The 12 KB one-bit PNG of 100 × 894,784 pixels (268 MB as RGB)."""
    return zero_png(100, 894_784, bit_depth=1, colour_type=0)


def grey16_png(side: int = 9459) -> bytes:
    """The 174 KB 16-bit grey PNG of 9459 × 9459 zeros (an int64 copy would be 716 MB)."""
    return zero_png(side, side, bit_depth=16, colour_type=0)


def ico_wrapping(png: bytes, side: int = 0) -> bytes:
    """An ICO whose one entry is ``png`` (its directory says 256 × 256 when ``side`` is 0)."""
    directory = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(png), 6 + 16)
    return directory + entry + png


def eps() -> bytes:
    """A minimal EPS file: PostScript that Pillow would hand to Ghostscript."""
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n"
        b"%%BoundingBox: 0 0 8 8\n"
        b"%%EndComments\n"
        b"0 0 moveto 8 8 lineto stroke\n"
        b"showpage\n"
        b"%%EOF\n"
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    """A 16 × 16 JPEG whose frame header declares ``width`` × ``height`` (1.5 KB of data)."""
    data = bytearray(jpeg((16, 16), quality=95))
    frame = data.index(b"\xff\xc0")  # SOF0: marker, length, precision, height, width
    data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def saved(image: Image.Image, format_name: str, **options) -> bytes:
    """``image`` encoded by Pillow in ``format_name``."""
    buffer = io.BytesIO()
    image.save(buffer, format=format_name, **options)
    return buffer.getvalue()
