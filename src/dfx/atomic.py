"""Crash-safe file writes: write beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from dfx import distributed


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` in one step.

    A crash at any moment leaves the previous complete file or none, never a truncated one.
    Symlinks are followed; devices and pipes (``/dev/stdout``, a FIFO) are written directly.
    The temporary file is named ``.<name>.<pid>.<random>``; one left behind by a killed
    process is removed by the next successful write of the same file.

    In a data-parallel run only rank 0 writes: on the other processes, which compute the
    same results, the handle discards what is written and no file is touched.
    """
    if not distributed.is_main():
        with open(os.devnull, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
        return
    # A symlink is written through, to the file it names, and stays a symlink.
    target = Path(os.path.realpath(path))
    encoding = None if "b" in mode else "utf-8"
    newline = None if "b" in mode else ""
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "it is a folder", str(path))
    if target.exists() and not target.is_file():
        # A device or a pipe (/dev/stdout, a FIFO) cannot be renamed over: stream into it.
        with open(target, mode, encoding=encoding, newline=newline) as handle:
            yield handle
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.{os.getpid()}.", dir=target.parent
        )
    except OSError as error:
        raise _naming(error, path) from error
    try:
        with os.fdopen(descriptor, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(temporary, _permissions(target))
        try:
            os.replace(temporary, target)
        except OSError as error:
            raise _naming(error, path) from error
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _remove_leftovers(target)


def _naming(error: OSError, path: str | Path) -> OSError:
    """The same error about the file the caller named, not the temporary file."""
    return type(error)(error.errno, error.strerror, str(path))


def _remove_leftovers(target: Path) -> None:
    """Delete temporary files of ``target`` whose writing process no longer exists."""
    prefix = f".{target.name}."
    for candidate in target.parent.glob(f"{glob.escape(prefix)}*"):
        pid = candidate.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            with contextlib.suppress(OSError):
                candidate.unlink()


def _process_exists(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # Windows' os.kill would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists under another user, or we cannot tell: leave it alone
    return True


def _permissions(target: Path) -> int:
    if target.exists():
        return target.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
