"""Limits that protect a run from hostile inputs (kept free of heavy imports for the CLI)."""

DEFAULT_MAX_PIXELS = 89_478_485
"""Largest image (width × height) decoded by default: Pillow's own decompression-bomb limit."""

MAX_ASPECT_RATIO = 50
"""Longest side over shortest side beyond which an image is refused from its header.

A 1:50 strip (a long scrolling screenshot, a webtoon panel) is still read; a 100 × 894,784
one-bit PNG (12 KB, but 268 MB as RGB) is refused before any pixel is decoded.
"""

DECODE_SIDE_MULTIPLE = 6
"""A decoded image is kept at most this many times the model's resize side on each side.

Decoding for a model shrinks each side by an integer factor while it stays at least three
times that side (``dfx.data.decoding.SHRINK_MARGIN``), so each side ends below six times it:
an image held until its batch runs takes at most ``(6 × resize)² × 3`` bytes (7.1 MB at
resize 256, 5.4 MB at 224), whatever its size or shape.
"""

METADATA_SCAN_BYTES = 1024 * 1024
"""Longest XMP packet or text value searched for provenance claims (the rest is ignored)."""
