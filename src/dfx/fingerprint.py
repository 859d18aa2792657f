"""File hashes: a fast content fingerprint (size, head and tail) and the full sha256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 64 * 1024
"""Bytes hashed at each end of a file; files up to twice this size are hashed whole."""


def file_digest(path: str | Path) -> str:
    """blake2b (16 bytes, hex) of the size, the first and the last 64 KiB of a file.

    Reading at most 128 KiB keeps it fast on data sets of large images, and it still
    changes when a file is re-encoded, truncated, replaced or grows.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        digest = hashlib.blake2b(str(size).encode() + b"\0", digest_size=16)
        digest.update(handle.read(CHUNK))
        if size > CHUNK:
            handle.seek(max(CHUNK, size - CHUNK))
            digest.update(handle.read(CHUNK))
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a whole file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
