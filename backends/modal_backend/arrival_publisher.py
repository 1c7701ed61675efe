"""An ingress container's arrivals on their way to the shared state, where the reconciler folds them.

Why this module exists: the reconciler alone applies windows, so every arrival an ingress records must
reach it — but never on the request's path. Arrivals gather here in one batch per experiment; a
background task writes them every `flush_s` under this container's own key (numbered, each naming the
pool it was served by, the last `KEEP_PUBLISHED_S` of them kept), then pokes the reconciler. A write
that fails is retried with the next flush; the container's decisions are unaffected.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from backends.modal_backend.pools import PoolKey
from backends.modal_backend.state_store import StateStore, arrivals_key
from core.keepwarm.burst_levels import BurstLevels
from core.keepwarm.shared_activity import ArrivalBatch

log = logging.getLogger("hybrid_serve.modal.ingress")

#: Batches older than this are dropped from a container's key (the reconciler folds far more often).
KEEP_PUBLISHED_S = 900.0


class ArrivalPublisher:
    """This container's batches not yet published, those published lately, and the flush under way."""

    def __init__(self, store: StateStore, poke: Callable[[], Awaitable[Any]], container: str, flush_s: float,
                 pool_of: Callable[[str], PoolKey | None], clock: Callable[[], float], per_container: int = 1):
        self._store = store
        self._poke = poke
        self.container = container
        self._flush_s = flush_s
        self._pool_of = pool_of
        self._wall = clock
        #: Requests one container takes at once (MODAL_CONCURRENT_INPUTS): the burst gaps' container levels.
        self.per_container = per_container
        self._batches: dict[str, ArrivalBatch] = {}
        #: Each experiment's requests in flight here, for the burst gaps its batches carry (kept across
        #: flushes; one per registered experiment at most).
        self._levels: dict[str, BurstLevels] = {}
        self._published: list[dict[str, Any]] = []
        self._seq = 0
        self._task: asyncio.Task[None] | None = None

    def arrived(self, experiment_id: str, at: float) -> None:
        batch = self._batches.get(experiment_id)
        if batch is None:
            batch = self._batches[experiment_id] = ArrivalBatch.starting(at)
        else:
            batch.arrive(at)
        levels = self._levels.get(experiment_id)
        if levels is None:
            levels = self._levels[experiment_id] = BurstLevels(self.per_container)
        burst_gap = levels.arrive(at)
        if burst_gap is not None:
            batch.burst(burst_gap)
        batch.width = levels.width

    def finished(self, experiment_id: str, at: float | None) -> None:
        finished = self._wall() if at is None else at
        self._batch_of(experiment_id, finished).finish(finished)
        levels = self._levels.get(experiment_id)
        if levels is not None:
            levels.complete(finished)

    def cold_started(self, experiment_id: str, seconds: float) -> None:
        """A container of the experiment answered its first request `seconds` after that request arrived."""
        self._batch_of(experiment_id, self._wall()).cold_started(seconds)

    def _batch_of(self, experiment_id: str, at: float) -> ArrivalBatch:
        """The experiment's batch, a batch of no arrivals (`count` 0) if none arrived since the last flush."""
        batch = self._batches.get(experiment_id)
        if batch is None:
            batch = self._batches[experiment_id] = ArrivalBatch(first_at=at, last_at=at, count=0)
        return batch

    def schedule(self, work: Awaitable[None] | None) -> None:
        """Run `work` (if any) in the background, and flush within `flush_s` unless a flush is due already."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a synchronous caller): published by the next async request
            if asyncio.iscoroutine(work):
                work.close()  # never run: closed, not left for the garbage collector to warn about
            return
        if work is not None:
            loop.create_task(work)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._flush_s)
        await self.flush()

    async def flush(self) -> None:
        """Publish the batches gathered since the last flush, then poke the reconciler."""
        batches, self._batches = self._batches, {}
        if not batches:
            return
        now = self._wall()
        for experiment_id, batch in batches.items():
            self._seq += 1
            pool = self._pool_of(experiment_id)
            self._published.append({"seq": self._seq, "experiment": experiment_id, "batch": batch.to_dict(), "at": now,
                                    "pool": pool.to_dict() if pool else None})
        self._published = [entry for entry in self._published if now - entry["at"] <= KEEP_PUBLISHED_S]
        try:
            await self._store.put(arrivals_key(self.container), {"written_at": now, "batches": self._published})
            await self._poke()
        except Exception as exc:  # published again with the next flush; decisions here are unaffected
            log.warning("publishing arrivals failed: %s: %s", type(exc).__name__, exc)
