"""A bound on cold starts in flight at once, across experiments.

Why this module exists: every cold start loads torch and a model — seconds of full CPU each. Started
all at once on a small machine they share the cores and each takes many times as long (ten at once
took 30–94 s each on two cores instead of ~4.5 s), and none is ready sooner than if they had queued.
The ingress therefore lets a cold experiment's first request through only while fewer than `limit`
experiments are starting; the other requests for an experiment whose start is already under way
follow it without taking another slot. A slot frees as soon as one request of the start ends.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator


class NoStartSlot(Exception):
    """Every cold-start slot stayed taken for as long as the request may wait."""


class ColdStarts:
    def __init__(self, limit: int):
        self.limit = max(1, limit)
        self._slots = asyncio.Semaphore(self.limit)
        self._locks: dict[str, asyncio.Lock] = {}  # one per experiment ever started (as many as registered)
        self._holding: dict[str, object] = {}  # experiment → the start under way (a token per start)

    @property
    def starting(self) -> list[str]:
        return sorted(self._holding)

    @asynccontextmanager
    async def admit(self, experiment_id: str, cold: bool, timeout_s: float) -> AsyncIterator[None]:
        """Hold the request of a `cold` experiment until its start may begin, at most `timeout_s`
        (then NoStartSlot). Cancellation-safe: a request cancelled while it waits hands its turn on."""
        if not cold and experiment_id not in self._holding:
            yield
            return
        lock = self._locks.setdefault(experiment_id, asyncio.Lock())
        try:
            async with asyncio.timeout(timeout_s):
                await lock.acquire()
                try:
                    start = self._holding.get(experiment_id)
                    if start is None:
                        await self._slots.acquire()
                        start = self._holding[experiment_id] = object()
                finally:
                    lock.release()
        except TimeoutError:
            raise NoStartSlot(f"{self.limit} cold starts stayed under way for {timeout_s:g}s") from None
        try:
            yield
        finally:
            self._end(experiment_id, start)

    def _end(self, experiment_id: str, start: object) -> None:
        """The first request of a start to end frees its slot: the replica answered, or the start
        failed or timed out; the start's other requests end on a replica that runs by then (or fail too)."""
        if self._holding.get(experiment_id) is start:
            del self._holding[experiment_id]
            self._slots.release()
