"""How long the manifest's file fingerprint takes, against hashing whole files.

Usage: PYTHONPATH=src python benchmarks/fingerprint.py [FOLDER]
Without FOLDER it writes 200 random files of 1 MiB (a large JPEG/PNG) to a temporary
folder. Figures are per file, from a warm page cache (what a repeated check sees).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

from dfx.fingerprint import file_digest


def whole_file_blake2b(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def per_file_ms(function, files: list[Path]) -> float:
    for path in files:  # warm the page cache first
        function(path)
    started = time.perf_counter()
    for path in files:
        function(path)
    return 1000 * (time.perf_counter() - started) / len(files)


def main() -> None:
    if len(sys.argv) > 1:
        files = [p for p in Path(sys.argv[1]).rglob("*") if p.is_file()]
        run(files)
        return
    with tempfile.TemporaryDirectory() as folder:
        files = []
        for i in range(200):
            path = Path(folder) / f"{i}.bin"
            path.write_bytes(os.urandom(1 << 20))
            files.append(path)
        run(files)


def run(files: list[Path]) -> None:
    size = sum(p.stat().st_size for p in files) / len(files) / 1024
    fast = per_file_ms(file_digest, files)
    full = per_file_ms(whole_file_blake2b, files)
    print(f"{len(files)} files, mean {size:.0f} KiB")
    print(f"head+tail fingerprint: {fast:.3f} ms/file")
    print(f"whole-file blake2b:    {full:.3f} ms/file  ({full / fast:.1f}x slower)")


if __name__ == "__main__":
    main()
