"""Output files: checked before any work starts, written atomically, or sent to stdout.

One convention on every command that outputs data: ``--json`` alone (or ``--json -``)
prints JSON on stdout instead of tables; ``--json FILE`` writes it to FILE and the tables
still print. ``--csv`` works the same way with a value, and ``--plots DIR`` takes a folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dfx.cli.console import print_json, report_written

STDOUT = "-"
"""The value of an output option that means standard output."""


def check_outputs(
    files: dict[str, str | Path | None] | None = None,
    folders: dict[str, str | Path | None] | None = None,
) -> None:
    """Fail before any work when an output cannot be written; keys name the options.

    ``-`` (stdout, for one option at most) and None are skipped. A file must not be a
    folder nor an image (an optional ``--json FILE`` can swallow an image argument), a
    folder must not be a file, nothing on the way may be a file, and the nearest existing
    folder must accept a new file (tried, so read-only mounts and /proc are caught too).
    """
    from dfx.errors import DfxError

    files = {k: v for k, v in (files or {}).items() if v is not None}
    folders = {k: v for k, v in (folders or {}).items() if v is not None}
    to_stdout = [name for name, value in files.items() if str(value) == STDOUT]
    if len(to_stdout) > 1:
        raise DfxError(f"{' and '.join(to_stdout)} cannot both write to stdout.")
    wanted = [(name, Path(v), "file") for name, v in files.items() if str(v) != STDOUT]
    wanted += [(name, Path(v), "folder") for name, v in folders.items()]
    for name, path, kind in wanted:
        _check_one(name, path, kind)


def _check_one(name: str, path: Path, kind: str) -> None:
    from dfx.data.images import not_an_image
    from dfx.errors import DfxError

    optional = " (--json takes an optional FILE: put it last, or write --json -)"
    hint = optional if name == "--json" else ""
    if kind == "file" and path.is_dir():
        raise DfxError(f"cannot write {path} ({name}): it is a folder, and a file is needed{hint}.")
    if kind == "file" and path.is_file() and not_an_image(path) is None:
        raise DfxError(
            f"cannot write {path} ({name}): it is an image, and dfx never writes over one{hint}."
        )
    if kind == "folder" and path.exists() and not path.is_dir():
        raise DfxError(f"cannot write into {path} ({name}): it is a file, and a folder is needed.")
    existing = path if kind == "folder" and path.is_dir() else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DfxError(
            f"cannot write {path}: {existing} is a file, so it cannot hold the folder {name} needs."
        )
    if kind == "file" and path.exists() and not path.is_file():
        return  # /dev/null and other devices: writable as they are
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".dfx-write-check-")
    except OSError as error:
        reason = error.strerror or str(error)
        raise DfxError(
            f"cannot write {path}: the folder {existing} does not accept files ({reason})."
        ) from None
    os.close(handle)
    os.unlink(probe)


def emit_json(document, json_path: str | None) -> bool:
    """Write a JSON document where ``--json`` asks; True when it went to stdout (no tables).

    A file written is named on stderr.
    """
    from dfx.report import to_json, write_json

    if json_path is None:
        return False
    if str(json_path) == STDOUT:
        print_json(to_json(document))
        return True
    report_written([write_json(document, json_path)])
    return False


def write_outputs(document: dict, rows: list[dict], json_path, csv_path) -> tuple[list, bool]:
    """Write the JSON document and CSV rows to files or stdout.

    Returns the files written and whether stdout was used (then no table may follow).
    """
    from dfx.report import to_csv, to_json, write_json, write_text

    written = []
    if json_path not in (None, STDOUT):
        written.append(write_json(document, json_path))
    if csv_path not in (None, STDOUT):
        written.append(write_text(to_csv(rows), csv_path))
    if json_path == STDOUT:
        print_json(to_json(document))
        return written, True
    if csv_path == STDOUT:
        print_json(to_csv(rows).rstrip("\n"))
        return written, True
    return written, False
