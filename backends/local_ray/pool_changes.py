"""The changes of experiments' pools under way on Ray: deploys, swaps and deletions in the background.

Why this module exists: a pool changes while requests arrive for it, and each change takes Serve
seconds. So every change runs in the background, one at a time per experiment (a lock: a re-add waits
for the deletion before it); the latest deploy or swap of an experiment is its *pending* change, which
its requests wait for (so a change is in force for every request after it); a change that fails is
logged; and a shutdown (or a test) can wait until every change has settled. What to change, and when,
is the deployer's (deployer.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable

log = logging.getLogger("hybrid_serve.ray.deployer")


class PoolChanges:
    """Each experiment's lock and pending change, and every background change not yet settled."""

    def __init__(self) -> None:
        #: The deploy or swap of an experiment's pool under way: its requests wait for it.
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()

    def pending(self, experiment_id: str) -> asyncio.Task[None] | None:
        return self._pending.get(experiment_id)

    def is_pending(self, experiment_id: str) -> bool:
        return experiment_id in self._pending

    def lock(self, experiment_id: str) -> asyncio.Lock:
        """One change of an experiment's pool at a time (a deploy, a swap, a deletion)."""
        return self._locks.setdefault(experiment_id, asyncio.Lock())

    def track(self, experiment_id: str, work: Awaitable[None]) -> asyncio.Task[None]:
        """`work` as the experiment's pending change (the latest one wins), in the background."""
        async def tracked() -> None:
            try:
                await work
            finally:
                if self._pending.get(experiment_id) is task:
                    del self._pending[experiment_id]

        task = self.spawn(tracked())
        self._pending[experiment_id] = task
        return task

    def spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        """`work` in the background (`settle` waits for it); a failure is logged (and a deploy's also
        reaches the requests waiting for it)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("changing an experiment's pool failed", exc_info=task.exception())

    async def settle(self) -> None:
        """Wait for background swaps and deletions (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
