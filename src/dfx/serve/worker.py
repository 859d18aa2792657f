"""The decoding worker process of ``dfx serve`` (``python -m dfx.serve.worker FD MEMORY_MB``).

It reads ``(function, args)`` pairs from the socket ``FD``, runs them one at a time and
answers ``(ok, value, rss_bytes)``: the result or the error's one-line reason, and its
resident memory so the pool can recycle a worker that has grown. Its address space is
capped at what it uses after start-up plus ``MEMORY_MB`` (0: no cap), so a decode that
asks for more fails with MemoryError instead of growing the machine's memory. It ends when
the socket closes (the service stopped or died) and imports neither torch nor the web stack.
It runs at a lower priority than the service (:data:`NICENESS`).
"""

from __future__ import annotations

import contextlib
import os
import sys

NICENESS = 10
"""Added to the worker's niceness: on a busy machine the event loop (health checks, other
requests' hand-offs) gets the CPU before a decode does."""

# One thread each: the pool runs several workers, and a thread pool per worker would only
# reserve memory.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")


def resident_bytes() -> int:
    """This process's resident memory in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _cap_address_space(memory_mb: float) -> None:
    try:
        import resource
    except ImportError:  # not POSIX: no cap
        return
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            used = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = used + int(memory_mb * 1024 * 1024)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def serve(fd: int, memory_mb: float) -> None:
    """Answer the tasks sent over the socket ``fd`` until it closes."""
    import socket
    from multiprocessing.connection import Connection

    import dfx.serve.tasks  # noqa: F401  (Pillow, NumPy and the decoders, loaded before work)

    connection = Connection(socket.socket(fileno=fd).detach())
    with contextlib.suppress(OSError, AttributeError):  # not POSIX, or not allowed: as it is
        os.nice(NICENESS)
    if memory_mb > 0:
        _cap_address_space(memory_mb)
    connection.send(("ready", None, resident_bytes()))
    while True:
        try:
            function, args = connection.recv()
        except (EOFError, OSError):
            return
        try:
            answer = (True, function(*args))
        except MemoryError:
            answer = (False, "not enough memory for it")
        except Exception as error:  # reported to the request; the worker lives on
            answer = (False, f"{type(error).__name__}: {error}")
        try:
            connection.send((*answer, resident_bytes()))
        except MemoryError:
            connection.send((False, "not enough memory for its result", resident_bytes()))
        except (BrokenPipeError, OSError):
            return


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]))
