"""Micro-batching: concurrent requests for one experiment share one forward pass.

Why this module exists: on a GPU (and even on CPU) one forward pass over 32 inputs costs far less
than 32 passes over one. A `MicroBatcher` queues requests; its worker takes everything already
queued, waits at most `max_wait_s` for more while the batch has room, groups requests with equal
parameters, runs each group as one call on a worker thread, and hands each caller exactly its own
outputs. One pass runs at a time per batcher; requests that arrive meanwhile form the next batch.
When the batcher is idle and no wait is configured, a request runs at once, without a hand-off.

Under load and bad input it holds: at most `max_queue` requests wait (beyond that `QueueFull`, for
a 503 with Retry-After); a caller that gave up (cancelled: its client disconnected) is skipped
before its inputs run; a pass that fails is retried caller by caller, so one poisoned input fails
only its own request; `close()` refuses what waits and releases the model it holds; `drain()`
accepts nothing new but runs what waits before it lets the model go (a model swapped or evicted).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

BatchFn = Callable[[list[str], Any], list[Any]]


class QueueFull(Exception):
    """`max_queue` requests already wait for this batcher."""


class BatcherClosed(Exception):
    """The batcher was closed (its model evicted, or the server shutting down) before this ran."""


@dataclass(frozen=True)
class BatchResult:
    outputs: list[Any]
    queue_s: float  # from submission to the start of its forward pass
    inference_s: float  # the forward pass itself, timed on the thread that ran it
    batch_inputs: int  # inputs in the forward pass this request joined


@dataclass
class _Pending:
    inputs: list[str]
    params: Any
    key: Hashable
    enqueued: float
    future: asyncio.Future[BatchResult] = field(repr=False)


class MicroBatcher:
    """Batches `fn(inputs, params)` calls made concurrently from one event loop."""

    def __init__(self, fn: BatchFn, max_batch_size: int = 32, max_wait_s: float = 0.0, executor: Executor | None = None,
                 max_queue: int | None = None):
        self._fn: BatchFn | None = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._executor = executor
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._running = asyncio.Lock()
        self._waiting = 0  # callers queued and not given up
        self._closed = False
        self._draining = False

    async def submit(self, inputs: list[str], params: Any, key: Hashable | None = None) -> BatchResult:
        """Run `inputs` with `params` (possibly together with other callers') and return this caller's outputs."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._running = asyncio.Lock()
            self._worker = loop.create_task(self._run(), name="micro-batcher")
        pending = _Pending(list(inputs), params, key if key is not None else params, time.perf_counter(), loop.create_future())
        if self.max_wait_s == 0 and self._queue.empty() and not self._running.locked():
            # Idle and nothing to wait for: run now in this task, skipping the hand-off to the worker.
            async with self._running:
                await self._execute([pending])
            return await pending.future
        if self.max_queue is not None and self._waiting >= self.max_queue:
            raise QueueFull(f"{self._waiting} requests already wait")
        self._waiting += 1
        pending.future.add_done_callback(self._left_queue)
        self._queue.put_nowait(pending)
        return await pending.future

    def _left_queue(self, _: asyncio.Future[BatchResult]) -> None:
        self._waiting -= 1

    def close(self) -> None:
        """Refuse every caller still waiting, stop the worker and drop the function (and the model it
        holds). A pass already running finishes for its callers."""
        self._closed = True
        while self._queue is not None and not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(BatcherClosed("the batcher closed before this request ran"))
        if self._worker is not None and not self._running.locked():
            self._worker.cancel()
        self._fn = None

    def drain(self) -> None:
        """Accept no new caller; those already waiting still run, then the function (and the model
        it holds) is dropped. A pass already running finishes for its callers."""
        if self._closed:
            return
        self._closed = self._draining = True
        if self._queue is None or self._queue.empty():
            if self._worker is not None:
                self._worker.cancel()
            self._fn = None

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while not self._closed or (self._draining and not queue.empty()):
            first = await queue.get()
            async with self._running:  # requests queued while a pass runs are all taken by the next one
                batch = [first]
                size = len(first.inputs)
                deadline = time.perf_counter() + self.max_wait_s
                while size < self.max_batch_size:
                    if queue.empty():
                        remaining = deadline - time.perf_counter()
                        if remaining <= 0:
                            break
                        try:
                            item = await asyncio.wait_for(queue.get(), remaining)
                        except TimeoutError:
                            break
                    else:
                        item = queue.get_nowait()
                    batch.append(item)
                    size += len(item.inputs)
                for group in self._groups(batch):
                    await self._execute(group)
        if self._draining:
            self._fn = None

    def _groups(self, batch: list[_Pending]) -> list[list[_Pending]]:
        """Split by parameters, then into chunks of at most max_batch_size inputs (a big request runs alone)."""
        by_key: dict[Hashable, list[_Pending]] = {}
        for item in batch:
            by_key.setdefault(item.key, []).append(item)
        groups: list[list[_Pending]] = []
        for items in by_key.values():
            current: list[_Pending] = []
            count = 0
            for item in items:
                if current and count + len(item.inputs) > self.max_batch_size:
                    groups.append(current)
                    current, count = [], 0
                current.append(item)
                count += len(item.inputs)
            groups.append(current)
        return groups

    def _timed(self, fn: BatchFn, inputs: list[str], params: Any) -> tuple[list[Any], float]:
        """The batch function, timed on the thread that runs it (the pure model time, no hand-offs)."""
        start = time.perf_counter()
        outputs = fn(inputs, params)
        return outputs, time.perf_counter() - start

    async def _execute(self, group: list[_Pending]) -> None:
        live = [p for p in group if not p.future.done()]  # callers that gave up are skipped
        fn = self._fn
        if not live:
            return
        if fn is None:
            for p in live:
                p.future.set_exception(BatcherClosed("the batcher closed before this request ran"))
            return
        inputs = [text for p in live for text in p.inputs]
        started = time.perf_counter()
        try:
            outputs, elapsed = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._timed, fn, inputs, live[0].params
            )
        except Exception as exc:
            if len(live) == 1:
                if not live[0].future.done():
                    live[0].future.set_exception(exc)
                return
            for p in live:  # one caller's input broke the pass: run each alone, so only that caller fails
                await self._execute([p])
            return
        offset = 0
        for p in live:
            mine = outputs[offset : offset + len(p.inputs)]
            offset += len(p.inputs)
            if not p.future.done():
                p.future.set_result(BatchResult(mine, started - p.enqueued, elapsed, len(inputs)))
