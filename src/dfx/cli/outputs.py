"""Output files: checked before any work starts, written atomically, or sent to stdout.

One convention on every command that outputs data. ``--json`` (and ``--csv`` where a
command has rows of metrics) is a flag: it picks the format. ``-o/--output FILE`` says
where the results go, in the format of FILE's suffix (``.json``, ``.csv``, ...) or of the
flag; the tables still print. Without ``--output`` the flag's format replaces the tables
on stdout, and ``--output -`` means stdout too. ``--plots DIR`` takes a folder.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dfx.cli.console import print_json

STDOUT = "-"
"""The value of an output option that means standard output."""


Outputs = dict[str, str | Path | None] | list[tuple[str, str | Path | None]]
"""Output paths by the option that names them; a list where one option is repeated."""


def check_outputs(files: Outputs | None = None, folders: Outputs | None = None) -> None:
    """Fail before any work when an output cannot be written; keys name the options.

    ``-`` (stdout, for one option at most) and None are skipped. A file must not be a
    folder nor an image (dfx never writes over an input), a folder must not be a file,
    nothing on the way may be a file, and the nearest existing
    folder must accept a new file (tried, so read-only mounts and /proc are caught too).
    """
    from dfx.errors import DfxError

    files, folders = _named(files), _named(folders)
    to_stdout = [name for name, value in files if str(value) == STDOUT]
    if len(to_stdout) > 1:
        raise DfxError(f"{' and '.join(to_stdout)} cannot both write to stdout.")
    wanted = [(name, Path(v), "file") for name, v in files if str(v) != STDOUT]
    wanted += [(name, Path(v), "folder") for name, v in folders]
    for name, path, kind in wanted:
        _check_one(name, path, kind)


def _named(outputs: Outputs | None) -> list[tuple[str, str | Path]]:
    pairs = outputs.items() if isinstance(outputs, dict) else outputs or []
    return [(name, value) for name, value in pairs if value is not None]


def _check_one(name: str, path: Path, kind: str) -> None:
    from dfx.data.discovery import not_an_image
    from dfx.errors import DfxError

    if kind == "file" and path.is_dir():
        raise DfxError(f"cannot write {path} ({name}): it is a folder, and a file is needed.")
    if kind == "file" and path.is_file() and not_an_image(path) is None:
        raise DfxError(
            f"cannot write {path} ({name}): it is an image, and dfx never writes over one."
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


FORMAT_OF_SUFFIX = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "tsv"}
"""The format of a results file, from its suffix."""


@dataclass(frozen=True)
class OutputPlan:
    """Where one run's results go: the format on stdout and the files to write."""

    stdout: str | None
    """The format printed on stdout (``json``, ``csv``), or None for the tables."""
    files: tuple[tuple[Path, str], ...]
    """Each file to write, with its format."""

    def file_options(self) -> list[tuple[str, Path]]:
        """The files, each with the option that names it, for :func:`check_outputs`."""
        return [("--output", path) for path, _ in self.files]


def plan_outputs(
    outputs: list[str] | None,
    *,
    as_json: bool = False,
    as_csv: bool = False,
    formats: tuple[str, ...] = ("json",),
) -> OutputPlan:
    """Where the results go, from ``--output`` FILEs and the ``--json``/``--csv`` flags.

    ``formats`` are those the command writes; a file's suffix picks one, else the flag.
    """
    from dfx.errors import DfxError

    if as_json and as_csv:
        raise DfxError("choose one of `as_json` and `as_csv`: both print on stdout.")
    flagged = "json" if as_json else "csv" if as_csv else None
    files, to_stdout = [], False
    for value in outputs or []:
        if value == STDOUT:
            if to_stdout:
                raise DfxError("`outputs` names stdout (-) twice.")
            to_stdout = True
            continue
        path = Path(value)
        wanted = FORMAT_OF_SUFFIX.get(path.suffix.lower())
        if wanted not in formats:
            wanted = flagged
        if wanted is None:
            suffixes = " or ".join(s for s, f in FORMAT_OF_SUFFIX.items() if f in formats)
            raise DfxError(
                f"cannot tell which format to write {path} in: end its name in {suffixes}, "
                f"or give --{formats[0]}."
            )
        files.append((path, wanted))
    if to_stdout:
        stdout_format = flagged or formats[0]
    else:
        stdout_format = flagged if not files else None
    return OutputPlan(stdout_format, tuple(files))


def emit(plan: OutputPlan, document, rows: list[dict] | None = None) -> tuple[list, bool]:
    """Write the JSON document (or CSV ``rows``) where ``plan`` says.

    Returns the files written and whether stdout was used (then no table may follow).
    """
    from dfx.report import to_csv, to_json, write_json, write_text

    written = []
    for path, form in plan.files:
        if form == "json":
            written.append(write_json(document, path))
        else:
            written.append(write_text(to_csv(rows or []), path))
    if plan.stdout == "json":
        print_json(to_json(document))
    elif plan.stdout == "csv":
        print_json(to_csv(rows or []).rstrip("\n"))
    return written, plan.stdout is not None


def emit_json(document, as_json: bool) -> bool:
    """Print a JSON document on stdout when ``--json`` asks; True when it did (no tables)."""
    if as_json:
        emit(OutputPlan("json", ()), document)
    return as_json
