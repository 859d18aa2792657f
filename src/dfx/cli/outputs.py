"""Output files: checked before any work starts, written atomically, or sent to stdout."""

from __future__ import annotations

import os
from pathlib import Path

from dfx.cli.console import print_json


def check_outputs(files: list[str | Path | None], folder: Path | None = None) -> None:
    """Fail before any work when an output file (or the plots ``folder``) cannot be written.

    ``-`` (stdout, for one file at most) and None are skipped. A file must not be a folder,
    the folder not a file, and the nearest existing folder above each must be writable.
    """
    from dfx.errors import DfxError

    if sum(str(f) == "-" for f in files if f is not None) > 1:
        raise DfxError("--json - and --csv - cannot both write to stdout.")
    wanted = [(Path(f), "file") for f in files if f is not None and str(f) != "-"]
    if folder is not None:
        wanted.append((folder, "folder"))
    for path, kind in wanted:
        if kind == "file" and path.is_dir():
            raise DfxError(f"cannot write {path}: it is a folder, and a file is needed.")
        if kind == "folder" and path.exists() and not path.is_dir():
            raise DfxError(f"cannot write into {path}: it is a file, and a folder is needed.")
        existing = path if kind == "folder" and path.is_dir() else path.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not os.access(existing, os.W_OK | os.X_OK):
            raise DfxError(f"cannot write {path}: the folder {existing} is not writable.")


def write_outputs(document: dict, rows: list[dict], json_path, csv_path) -> tuple[list, bool]:
    """Write the JSON document and CSV rows to files or stdout.

    Returns the files written and whether stdout was used (then no table may follow).
    """
    from dfx.report import to_csv, to_json, write_json, write_text

    written = []
    if json_path not in (None, "-"):
        written.append(write_json(document, json_path))
    if csv_path not in (None, "-"):
        written.append(write_text(to_csv(rows), csv_path))
    if json_path == "-":
        print_json(to_json(document))
        return written, True
    if csv_path == "-":
        print_json(to_csv(rows).rstrip("\n"))
        return written, True
    return written, False
