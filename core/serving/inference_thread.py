"""The one thread that runs forward passes, and whether a short one may run without it.

Why this module exists: passes run on one thread so that experiments do not fight over the cores,
and so that the event loop keeps answering while a model runs. Handing a pass to that thread and
back costs two thread wake-ups (about 0.1 ms here) — nothing beside a 20 ms pass, a third of the
API's own overhead beside a 1 ms one. So a lone pass that is short — its model's latest lone passes
took at most `INLINE_MAX_S` (their upper median: one slow pass on a busy machine changes nothing), the
latest with the same parameters and at least as many inputs and characters (core.serving.forward_pass)
— for a batcher with nothing else to do, while this thread is idle, may
run on the event loop itself: it holds the loop about as long as a few requests' own handling. The thread
counts what it was given and has not finished, so that such a pass never runs beside another.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

#: A pass may run on the event loop when the previous lone pass of its model took at most this long.
INLINE_MAX_S = 0.005


class InferenceThread(ThreadPoolExecutor):
    """A single worker thread that knows whether it is idle (nothing given to it is unfinished)."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="inference")
        self._count_lock = threading.Lock()  # work finishes on the worker, or (cancelled) on the caller's thread
        self._given = 0
        self._done = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        with self._count_lock:
            self._given += 1
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: Future[Any]) -> None:
        with self._count_lock:
            self._done += 1

    @property
    def idle(self) -> bool:
        """Nothing given to the thread is running or waiting."""
        return self._done >= self._given
