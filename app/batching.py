"""Micro-batching: concurrent requests are gathered into one call that runs off the event loop.

A request `submit`s one item and awaits its result. One collector task takes the first waiting
item and everything already queued; while more items are known to be on their way (requests inside
`expecting()`, i.e. still decoding) it waits for them up to `max_wait_ms`, up to `max_batch` items.
A lone request is therefore not delayed. The batch goes to `process` in a dedicated worker thread;
while that thread works the event loop keeps accepting requests, which queue up for the next
batch, so batches grow by themselves under load.

Requests are decoded and preprocessed (`prepare`) in a small pool of their own, beside the encoder: the next
batch is decoded while one encodes. The pool is small on purpose (one thread per 8 cores by default). The
encoder's math runs in a team of OpenMP threads, one per core, that meet at a barrier after every operation; 16
decoding threads at once (Starlette's thread pool at concurrency 16) left each member waiting for the CPU at
every barrier, and ViT-B-32 bf16 took 2.9 s for a batch of 14 with 4 busy decoders, 8.4 s with 16, against
0.4-0.8 s with none or one (2-core box, measured in one process).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from encoder.workers import available_cpus

from .metrics import Metrics

log = logging.getLogger("app.batching")
T = TypeVar("T")
R = TypeVar("R")
P = TypeVar("P")


def default_prepare_threads(cores: int | None = None) -> int:
    """Decoding threads beside the encoder: one per 8 cores, at least one (a thread decodes ~250 sketches/s)."""
    return max(1, (cores or available_cpus()) // 8)


class BatcherClosedError(RuntimeError):
    """The batcher is stopping or stopped; the request should be retried later (503)."""


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class Batched(Generic[R]):
    """A result together with how long its item waited in the queue and the size of its batch."""

    value: R
    queue_ms: float
    batch_size: int


class MicroBatcher(Generic[T, R]):
    """Gathers `submit`ted items into batches for `process(items) -> results` (same length, same order)."""

    def __init__(
        self,
        process: Callable[[list[T]], list[R]],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        metrics: Metrics | None = None,
        prepare_threads: int | None = None,
    ) -> None:
        self.process = process
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.metrics = metrics
        self.prepare_threads = prepare_threads or default_prepare_threads()
        self._queue: asyncio.Queue[_Pending[T, R]] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._prepare_executor: ThreadPoolExecutor | None = None
        self._expected = 0  # items being prepared that will be submitted soon
        self._forming: list[_Pending[T, R]] = []  # the batch being gathered: out of the queue, not yet encoding

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        # One thread: the model runs one batch at a time, always from the same thread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self._prepare_executor = ThreadPoolExecutor(max_workers=self.prepare_threads, thread_name_prefix="prepare")
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        waiting, self._forming = list(self._forming), []
        if self._queue is not None:
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
            self._queue = None
        for pending in waiting:  # queued, or gathered into a batch that never reached the encoder
            if not pending.future.done():
                pending.future.set_exception(BatcherClosedError("The service is shutting down."))
        for executor in (self._executor, self._prepare_executor):
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
        self._executor = self._prepare_executor = None

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    @contextmanager
    def expecting(self) -> Iterator[None]:
        """Announce an item that is being prepared, so a forming batch waits for it (up to max_wait)."""
        self._expected += 1
        try:
            yield
        finally:
            self._expected -= 1

    async def prepare(self, fn: Callable[..., P], *args: object) -> P:
        """``fn(*args)`` (decode + preprocess an item) in the preparation pool, announced as an item on its way."""
        with self.expecting():
            return await self.beside(fn, *args)

    async def beside(self, fn: Callable[..., P], *args: object) -> P:
        """``fn(*args)`` in the preparation pool: other decoding (thumbnails) that must not crowd the encoder."""
        if self._prepare_executor is None:
            raise BatcherClosedError("The encoder is not running.")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._prepare_executor,
                                                                    functools.partial(fn, *args))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling() == 0:  # not this request's: stop() dropped the queued work
                raise BatcherClosedError("The service is shutting down.") from None
            raise

    async def submit(self, item: T) -> Batched[R]:
        """Queue `item` and wait for its result (exceptions raised by `process` are re-raised here)."""
        if self._queue is None or self._task is None or self._task.done():
            raise BatcherClosedError("The encoder is not running.")
        pending: _Pending[T, R] = _Pending(item, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        self._report_depth()
        return await pending.future

    def _report_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.depth)

    async def _gather(self) -> list[_Pending[T, R]]:
        assert self._queue is not None
        self._forming = batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self._expected == 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        self._report_depth()
        self._forming = []
        # Requests whose client went away are not worth encoding.
        return [p for p in batch if not p.future.done()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            started = time.perf_counter()
            if self.metrics is not None:
                self.metrics.batch_size.observe(len(batch))
            try:
                results = await loop.run_in_executor(self._executor, self.process, [p.item for p in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch process returned {len(results)} results for {len(batch)} items")
            except asyncio.CancelledError:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(BatcherClosedError("The service is shutting down."))
                raise
            except Exception as error:  # noqa: BLE001 - handed to every waiting request
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(error)
                continue
            for p, result in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result(Batched(result, (started - p.enqueued) * 1000.0, len(batch)))
