"""Worker processes for the CPU-heavy work of ``dfx serve`` (decoding, provenance, drawing).

Each worker is a ``python -m dfx.serve.worker`` process that runs one task at a time, so a
runaway task can be stopped: past its timeout, or once its request is abandoned, the worker
is killed and a fresh one started in its place. A worker whose resident memory has grown
past :data:`RECYCLE_MB` over its start is replaced after its task, and its address space is
capped (``memory_mb``), so a decode that would need more fails alone.

Tasks are handed out on the event loop, fairly: round robin over the requests that wait,
and at most ``per_request`` workers busy for one request, so one client's bombs cannot hold
every worker while others wait. The event loop itself only hands out work and collects
results; a thread per worker waits on its socket.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

RECYCLE_MB = 256
"""A worker whose resident memory has grown by more than this (MiB) is replaced."""

START_TIMEOUT_S = 60.0
"""Longest a worker may take to start (import Pillow and NumPy) before it counts as failed."""

_POLL_S = 0.05
"""How often a waiting thread looks whether its request was abandoned."""


class TaskTimeout(Exception):
    """The task ran past its timeout; its worker was killed."""


class TaskFailed(Exception):
    """The task raised in the worker, or its worker died; the message says why."""


class _Cancelled(Exception):
    """The request gave up on the task; its worker was killed."""


class _Worker:
    """One worker process and its socket; its methods run on one thread at a time."""

    def __init__(self, memory_mb: float) -> None:
        self.memory_mb = memory_mb
        self.process: subprocess.Popen | None = None
        self.connection: Connection | None = None
        self.baseline = 0
        self.started = 0
        """Processes started so far (1 + the replacements)."""

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "dfx.serve.worker"]
        command += [str(theirs.fileno()), str(self.memory_mb)]
        try:
            self.process = subprocess.Popen(
                command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True
            )
        finally:
            theirs.close()
        self.connection = connection = Connection(ours.detach())
        self.started += 1
        try:
            if not connection.poll(START_TIMEOUT_S):
                raise TaskFailed(f"a worker process did not start within {START_TIMEOUT_S:g} s")
            _, _, self.baseline = connection.recv()
        except (EOFError, OSError):  # it ended, or the pool closed meanwhile
            self.stop()
            raise TaskFailed("a worker process ended while starting") from None
        except TaskFailed:
            self.stop()
            raise

    def stop(self) -> None:
        connection, self.connection = self.connection, None
        process, self.process = self.process, None
        if connection is not None:
            connection.close()
        if process is not None:
            process.kill()
            process.wait()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self) -> None:
        self.stop()
        self.start()

    def call(self, function, args: tuple, timeout: float, cancel: threading.Event):
        """``function(*args)`` in the process; TaskTimeout, TaskFailed or _Cancelled.

        A worker that had to be stopped is left stopped (the pool starts its replacement
        after answering); a stopped one is started first.
        """
        if not self.alive:
            self.restart()
        deadline = time.monotonic() + timeout
        try:
            self.connection.send((function, args))
            while not self.connection.poll(min(_POLL_S, max(0.0, deadline - time.monotonic()))):
                if cancel.is_set():
                    self.stop()
                    raise _Cancelled()
                if time.monotonic() >= deadline:
                    self.stop()
                    raise TaskTimeout(f"took longer than {timeout:g} s")
            ok, value, resident = self.connection.recv()
        except (EOFError, OSError):
            self.stop()
            raise TaskFailed("its worker process ended (out of memory?)") from None
        if resident > self.baseline + RECYCLE_MB * 1024 * 1024:
            self.stop()  # gives the memory of a large decode back to the system
        if not ok:
            raise TaskFailed(value)
        return value


@dataclass
class _Task:
    function: Any
    args: tuple
    timeout: float
    future: asyncio.Future
    cancel: threading.Event = field(default_factory=threading.Event)


class WorkerPool:
    """``workers`` worker processes shared fairly by the requests (see the module)."""

    def __init__(self, workers: int, per_request: int, memory_mb: float) -> None:
        self.per_request = max(1, min(per_request, workers))
        self._workers = [_Worker(memory_mb) for _ in range(workers)]
        self._idle: list[_Worker] = []
        self._waiting: dict[object, deque[_Task]] = {}  # by request, in round-robin order
        self._busy: dict[object, int] = {}
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dfx-worker")
        self._closed = False
        self.start_seconds: float | None = None
        """How long starting the workers took (None before :meth:`start`)."""

    @property
    def size(self) -> int:
        """The number of worker processes."""
        return len(self._workers)

    @property
    def replaced(self) -> int:
        """Workers replaced so far (killed past a timeout or abandoned, recycled, or dead)."""
        return sum(max(0, worker.started - 1) for worker in self._workers)

    def pids(self) -> list[int]:
        """The process ids of the running workers."""
        return [w.process.pid for w in self._workers if w.process is not None]

    def start(self) -> None:
        """Start every worker (in parallel; blocks until they are ready)."""
        started = time.perf_counter()
        list(self._threads.map(_Worker.start, self._workers))
        self._idle = list(self._workers)
        self.start_seconds = time.perf_counter() - started

    def close(self) -> None:
        """Stop the workers (a task still running ends with them)."""
        self._closed = True
        self._threads.shutdown(wait=False, cancel_futures=True)
        for worker in self._workers:
            worker.stop()

    async def run(self, owner: object, timeout: float, function, *args):
        """``function(*args)`` in a worker, in ``owner``'s (a request's) fair share.

        TaskTimeout past ``timeout`` s of running, TaskFailed if it raised or its worker
        died; cancelling the caller kills the worker that runs it (or drops it unstarted).
        """
        loop = asyncio.get_running_loop()
        task = _Task(function, args, timeout, loop.create_future())
        self._waiting.setdefault(owner, deque()).append(task)
        self._dispatch()
        try:
            return await task.future
        except asyncio.CancelledError:
            task.cancel.set()
            raise

    def _dispatch(self) -> None:
        while self._idle and not self._closed:
            picked = self._next()
            if picked is None:
                return
            owner, task = picked
            worker = self._idle.pop()
            self._busy[owner] = self._busy.get(owner, 0) + 1
            running = asyncio.get_running_loop().run_in_executor(
                self._threads, worker.call, task.function, task.args, task.timeout, task.cancel
            )
            running.add_done_callback(
                lambda done, worker=worker, owner=owner, task=task: self._finished(
                    done, worker, owner, task
                )
            )

    def _next(self) -> tuple[object, _Task] | None:
        """The next task to run: the first waiting request under its share goes, then last."""
        for owner in list(self._waiting):
            if self._busy.get(owner, 0) >= self.per_request:
                continue
            queue = self._waiting.pop(owner)
            while queue and queue[0].future.done():  # given up before it started
                queue.popleft()
            if not queue:
                continue
            task = queue.popleft()
            if queue:
                self._waiting[owner] = queue  # to the back of the round
            return owner, task
        return None

    def _finished(self, done: asyncio.Future, worker: _Worker, owner, task: _Task) -> None:
        self._busy[owner] -= 1
        if not self._busy[owner]:
            del self._busy[owner]
        if done.cancelled():
            error = TaskFailed("the service is shutting down")
        else:
            error = done.exception()  # retrieved even when nobody waits any more
        if not task.future.done():
            if error is None:
                task.future.set_result(done.result())
            elif not isinstance(error, _Cancelled):
                task.future.set_exception(error)
        if worker.alive or self._closed:
            self._idle.append(worker)
            self._dispatch()
            return
        # Its replacement starts off the event loop; the worker serves again once it is up.
        starting = asyncio.get_running_loop().run_in_executor(self._threads, _revive, worker)
        starting.add_done_callback(lambda _, worker=worker: self._revived(worker))

    def _revived(self, worker: _Worker) -> None:
        self._idle.append(worker)
        self._dispatch()


def _revive(worker: _Worker) -> None:
    try:
        worker.start()
    except TaskFailed:  # tried again before its next task
        pass


def default_workers() -> int:
    """Worker processes by default: one per core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))
