"""Limits that protect a run from hostile inputs (kept free of heavy imports for the CLI)."""

DEFAULT_MAX_PIXELS = 89_478_485
"""Largest image (width × height) decoded by default: Pillow's own decompression-bomb limit."""
