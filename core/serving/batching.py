"""Micro-batching: concurrent requests for one experiment share one forward pass.

Why this module exists: on a GPU (and even on CPU) one forward pass over 32 inputs costs far less
than 32 passes over one. A `MicroBatcher` queues requests; its worker takes everything already
queued, waits at most `max_wait_s` for more while the batch has room, groups requests with equal
parameters, runs each group as one call on a worker thread, and hands each caller exactly its own
outputs. One pass runs at a time per batcher; requests that arrive meanwhile form the next batch.
When the batcher is idle and no wait is configured, a request runs at once, without a hand-off to
the worker — and a short pass of a lone request without one to the inference thread either
(core.serving.inference_thread).

Under load and bad input it holds: at most `max_queue` requests wait (beyond that `QueueFull`, for
a 503 with Retry-After); a caller that gave up (cancelled: its client disconnected) is skipped
before its inputs run; a pass that fails is retried caller by caller, so one poisoned input fails
only its own request; `close()` refuses what waits and releases the model it holds; `drain()`
accepts nothing new but runs what waits before it lets the model go (a model swapped or evicted).
What forms a batch is `BatchForming`'s (core.serving.batch_forming), how a group runs `ForwardPass`'
(core.serving.forward_pass); the batcher owns the queue, its bound and its life.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import Any, Hashable

from core.serving.batch_forming import BatchForming
from core.serving.forward_pass import BatchFn, BatcherClosed, BatchResult, ForwardPass, Pending

__all__ = ["BatchFn", "BatchResult", "BatcherClosed", "MicroBatcher", "QueueFull"]


class QueueFull(Exception):
    """`max_queue` requests already wait for this batcher."""


class MicroBatcher:
    """Batches `fn(inputs, params)` calls made concurrently from one event loop."""

    def __init__(self, fn: BatchFn, max_batch_size: int = 32, max_wait_s: float = 0.0, executor: Executor | None = None,
                 max_queue: int | None = None):
        self._pass = ForwardPass(fn, executor)
        self._forming = BatchForming(max_batch_size, max_wait_s)
        self.max_queue = max_queue
        self._queue: asyncio.Queue[Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._running = asyncio.Lock()
        self._waiting = 0  # callers queued and not given up
        self._closed = False
        self._draining = False
        self._idle = True  # the worker waits for a request (it holds none)
        self._joining = 0  # callers giving others a turn before a pass on the event loop

    def _idle_now(self) -> bool:
        assert self._queue is not None
        return self._queue.empty() and not self._running.locked()

    async def submit(self, inputs: list[str], params: Any, key: Hashable | None = None) -> BatchResult:
        """Run `inputs` with `params` (possibly together with other callers') and return this caller's outputs."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._running = asyncio.Lock()
            self._worker = loop.create_task(self._run(), name="micro-batcher")
        pending = Pending(list(inputs), params, key if key is not None else params, time.perf_counter(), loop.create_future())
        if self._forming.max_wait_s == 0 and self._idle_now():
            # Idle and nothing to wait for: run now in this task, skipping the hand-off to the worker —
            # a short pass on this very loop, if the requests that came with this one leave it alone.
            inline, alone = self._pass.may_run_inline(pending), True
            if inline:
                self._joining += 1
                try:
                    await asyncio.sleep(0)  # one turn of the loop: requests that arrived with this one get here
                finally:
                    self._joining -= 1
                if self._closed and not self._draining:  # closed meanwhile: refused like every caller waiting
                    raise BatcherClosed("the batcher closed before this request ran")
                # Any came (one still gives a turn, or waits in the queue): all of them join one batch on the thread.
                alone = self._joining == 0 and self._idle_now()
                inline = alone and self._pass.may_run_inline(pending)
            if alone:  # (idle: checked above, with no await since)
                async with self._running:
                    await self._pass.run([pending], inline=inline)
                self._let_go_if_drained()  # drained meanwhile: this caller was the last one waiting
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
        if self._worker is not None and self._idle:  # one that holds requests refuses them and ends
            self._worker.cancel()
        self._pass.release()

    def drain(self) -> None:
        """Accept no new caller; those already waiting still run, then the function (and the model
        it holds) is dropped. A pass already running finishes for its callers."""
        if self._closed:
            return
        self._closed = self._draining = True
        self._let_go_if_drained()  # else the worker (or a caller giving a turn) ends after what it holds

    def _let_go_if_drained(self) -> None:
        """A draining batcher with nothing left to run — nothing queued, no caller giving the others a turn,
        its worker idle — stops the worker and drops the function."""
        if self._draining and self._joining == 0 and (self._queue is None or self._queue.empty()) and self._idle:
            if self._worker is not None:
                self._worker.cancel()
            self._pass.release()

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while not self._closed or (self._draining and not queue.empty()):
            self._idle = True
            first = await queue.get()
            self._idle = False
            async with self._running:  # requests queued while a pass runs are all taken by the next one
                for group in await self._forming.take(first, queue):
                    await self._pass.run(group)
        if self._draining:
            self._pass.release()
