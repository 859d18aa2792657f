"""Dynamic micro-batching: the items of concurrent requests, classified in shared batches.

Requests on the event loop :meth:`MicroBatcher.submit` their items and await the results;
worker threads take up to ``max_batch`` queued items at a time, waiting at most
``max_wait_s`` after the first for others to join, and run them in one call. They wait
only for items on their way (:meth:`MicroBatcher.announce`): a lone request does not
sit out ``max_wait_s`` for company that is not coming. The network
therefore never blocks the event loop (health checks answer while it works), and a busy
service answers with bigger batches instead of a longer queue of small ones.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


class QueueFull(Exception):
    """The queue holds ``max_queue`` items: the caller should retry after ``retry_after`` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The batcher is draining for shutdown and takes no new work."""


@dataclass
class _Entry:
    item: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    alone: bool = False
    """A job (a callable) that runs by itself, with no batch running beside it."""
    abandoned: bool = False
    """Its request gave up waiting (timeout, client gone): dropped if it has not started."""


class _SharedLock:
    """Many holders in shared mode, or one in exclusive mode (batches vs. explanations).

    Explanations hook into the network's layers, which would disturb a batch running beside
    them on another worker thread.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0  # exclusive holders to be: new batches let them go first

    def acquire(self, exclusive: bool) -> None:
        with self._condition:
            if exclusive:
                self._waiting += 1
                while self._exclusive or self._shared:
                    self._condition.wait()
                self._waiting -= 1
                self._exclusive = True
            else:
                while self._exclusive or self._waiting:
                    self._condition.wait()
                self._shared += 1

    def release(self, exclusive: bool) -> None:
        with self._condition:
            if exclusive:
                self._exclusive = False
            else:
                self._shared -= 1
            self._condition.notify_all()


class MicroBatcher:
    """Groups submitted items into batches for ``run_batch`` on ``workers`` threads.

    ``run_batch(items)`` returns one result per item, in order. At most ``max_queue`` items
    wait; :meth:`submit` raises :class:`QueueFull` beyond that. :meth:`close` lets the
    queued work finish (a graceful shutdown drains, it does not drop).
    """

    def __init__(
        self,
        run_batch: Callable[[list], Sequence],
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        workers: int = 1,
        name: str = "dfx-batcher",
    ) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._queue: deque[_Entry] = deque()
        self._condition = threading.Condition()
        self._lock = _SharedLock()
        self._closing = False
        self._announced = 0
        self._seconds_per_item = 0.05  # a first guess for Retry-After, refined as batches run
        self.batches = 0
        """Batches run so far."""
        self.items = 0
        """Items classified so far."""
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def queued(self) -> int:
        """Items waiting for a worker."""
        return len(self._queue)

    def _drop_abandoned(self) -> None:
        """Forget the queued items nobody waits for (called holding the condition)."""
        if any(entry.abandoned for entry in self._queue):
            self._queue = deque(entry for entry in self._queue if not entry.abandoned)

    async def submit(self, items: Sequence) -> list:
        """The results of ``items``, in order, once the batches that hold them have run.

        All or none are queued: :class:`QueueFull` when they do not fit, :class:`ShuttingDown`
        after :meth:`close`. An exception of ``run_batch`` is raised here.
        """
        loop = asyncio.get_running_loop()
        entries = [_Entry(item, loop.create_future(), loop) for item in items]
        self._put(entries)
        return list(await self._outcome(entries, asyncio.gather(*(e.future for e in entries))))

    async def _outcome(self, entries: list[_Entry], waiting):
        try:
            return await waiting
        except asyncio.CancelledError:
            with self._condition:
                for entry in entries:
                    entry.abandoned = True
            raise

    def announce(self, count: int) -> None:
        """``count`` items are on their way (being read or decoded): worth waiting for."""
        with self._condition:
            self._announced += count

    def withdraw(self, count: int) -> None:
        """Items announced earlier have arrived, or will not."""
        with self._condition:
            self._announced -= count
            self._condition.notify_all()

    async def run_alone(self, job: Callable[[], Any]) -> Any:
        """``job()`` on a worker thread, in turn with the batches and with no batch beside it."""
        loop = asyncio.get_running_loop()
        entry = _Entry(job, loop.create_future(), loop, alone=True)
        self._put([entry])
        return await self._outcome([entry], entry.future)

    def _put(self, entries: list[_Entry]) -> None:
        with self._condition:
            if self._closing:
                raise ShuttingDown("the service is shutting down")
            self._drop_abandoned()
            if len(self._queue) + len(entries) > self.max_queue:
                raise QueueFull(self.retry_after())
            self._queue.extend(entries)
            self._condition.notify_all()

    def retry_after(self) -> int:
        """Seconds until the queue has room again, as estimated from recent batches."""
        backlog = len(self._queue) * self._seconds_per_item / max(len(self._threads), 1)
        return max(1, math.ceil(backlog))

    def close(self, timeout: float | None = None) -> bool:
        """Take no new work, let the queued work finish; whether the workers ended in time."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return not any(thread.is_alive() for thread in self._threads)

    def _next(self) -> list[_Entry] | None:
        """The next batch (or job), or None once closed and empty."""
        with self._condition:
            self._drop_abandoned()
            while not self._queue:
                if self._closing:
                    return None
                self._condition.wait()
                self._drop_abandoned()
            first = self._queue.popleft()
            if first.alone:
                return [first]
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                if self._queue:
                    if self._queue[0].alone:
                        break
                    batch.append(self._queue.popleft())
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closing or self._announced <= 0:
                    break
                self._condition.wait(remaining)
            return batch

    def _work(self) -> None:
        while (batch := self._next()) is not None:
            alone = batch[0].alone
            started = time.perf_counter()
            self._lock.acquire(exclusive=alone)
            try:
                if alone:
                    outcomes = [(True, batch[0].item())]
                else:
                    results = self.run_batch([entry.item for entry in batch])
                    outcomes = [(True, result) for result in results]
            except Exception as error:  # the awaiting requests get it, the worker lives on
                outcomes = [(False, error)] * len(batch)
            finally:
                self._lock.release(exclusive=alone)
            if not alone:
                per_item = (time.perf_counter() - started) / len(batch)
                self._seconds_per_item = 0.8 * self._seconds_per_item + 0.2 * per_item
                self.batches += 1
                self.items += len(batch)
            for entry, (ok, value) in zip(batch, outcomes):
                try:
                    entry.loop.call_soon_threadsafe(_settle, entry.future, ok, value)
                except RuntimeError:  # its event loop has closed: nobody waits any more
                    pass


def _settle(future: asyncio.Future, ok: bool, value) -> None:
    if future.done():  # the request gave up waiting (timeout, client gone)
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
