"""One forward pass for a group of callers: their inputs as one call, each caller its own outputs.

Why this module exists: running a batch is where a micro-batcher can hurt its callers — a caller
that gave up must not cost compute, a poisoned input must fail only its own request, and each
caller must get exactly its own slice of the outputs with honest timings. A `ForwardPass` does
that for one group at a time, on the executor it was given (or, when the group is one request of
a model whose lone passes are short and that thread is idle, on the event loop itself:
core.serving.inference_thread); the batcher decides what forms a group.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from core.serving.inference_thread import INLINE_MAX_S, InferenceThread

#: How many of a model's latest lone passes decide whether its next one is short.
LONE_PASSES = 5

BatchFn = Callable[[list[str], Any], list[Any]]


class BatcherClosed(Exception):
    """The batcher was closed (its model evicted, or the server shutting down) before this ran."""


@dataclass(frozen=True)
class BatchResult:
    outputs: list[Any]
    queue_s: float  # from submission to the start of its forward pass
    inference_s: float  # the forward pass itself, timed on the thread that ran it
    batch_inputs: int  # inputs in the forward pass this request joined


@dataclass
class Pending:
    """One caller's request, waiting for its outputs (`future`)."""

    inputs: list[str]
    params: Any
    key: Hashable  # callers with equal keys may share a pass
    enqueued: float
    future: asyncio.Future[BatchResult] = field(repr=False)


class ForwardPass:
    """Runs `fn(inputs, params)` for groups of callers with equal parameters, on `executor`'s threads."""

    def __init__(self, fn: BatchFn, executor: Executor | None = None):
        self._fn: BatchFn | None = fn
        self._executor = executor
        #: Where a short pass may skip the hand-off: the inference thread (whose idleness is known); else None.
        self._thread = executor if isinstance(executor, InferenceThread) else None
        #: The latest pass of one caller alone: (its key, inputs, characters); None before the first.
        self._lone: tuple[Hashable, int, int] | None = None
        #: The seconds of the latest lone passes with that key (their upper median is the model's lone pass).
        self._lone_s: deque[float] = deque(maxlen=LONE_PASSES)
        #: That upper median is at most `INLINE_MAX_S` (decided when a lone pass ends, not at each request).
        self._lone_short = False

    def may_run_inline(self, caller: Pending) -> bool:
        """The caller's pass alone may run on the event loop: the inference thread is idle, and this model's
        lone passes are short — the upper median of the latest few, so that one slow pass (a busy
        machine) does not send the next ones to the thread — the latest with the same parameters (a
        generation's token budget is one) and at least as many inputs and characters: so this pass is
        no longer than those, about."""
        lone, thread = self._lone, self._thread
        return (self._lone_short and lone is not None and (caller.key is lone[0] or caller.key == lone[0])
                and len(caller.inputs) <= lone[1] and sum(map(len, caller.inputs)) <= lone[2]
                and thread is not None and thread.idle)

    def release(self) -> None:
        """Drop the function (and the model it holds): later groups are refused with `BatcherClosed`."""
        self._fn = None

    async def run(self, group: list[Pending], inline: bool = False) -> None:
        """Answer every caller of the group still waiting: one call over all their inputs, or — when
        that call fails — one call each, so that only the caller whose input broke it fails. `inline`:
        the call runs on the event loop (see `may_run_inline`)."""
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
            if inline:
                outputs, elapsed = _timed(fn, inputs, live[0].params)
            else:
                outputs, elapsed = await asyncio.get_running_loop().run_in_executor(
                    self._executor, _timed, fn, inputs, live[0].params
                )
        except Exception as exc:
            if len(live) == 1:
                if not live[0].future.done():
                    live[0].future.set_exception(exc)
                return
            for p in live:  # one caller's input broke the pass: run each alone, so only that caller fails
                await self.run([p])
            return
        if len(live) == 1:
            if self._lone is None or self._lone[0] != live[0].key:
                self._lone_s.clear()  # other parameters: another pass length
            self._lone = (live[0].key, len(inputs), sum(map(len, inputs)))
            self._lone_s.append(elapsed)
            self._lone_short = sorted(self._lone_s)[len(self._lone_s) // 2] <= INLINE_MAX_S
        offset = 0
        for p in live:
            mine = outputs[offset : offset + len(p.inputs)]
            offset += len(p.inputs)
            if not p.future.done():
                p.future.set_result(BatchResult(mine, started - p.enqueued, elapsed, len(inputs)))


def _timed(fn: BatchFn, inputs: list[str], params: Any) -> tuple[list[Any], float]:
    """The batch function, timed on the thread that runs it (the pure model time, no hand-offs)."""
    start = time.perf_counter()
    outputs = fn(inputs, params)
    return outputs, time.perf_counter() - start
