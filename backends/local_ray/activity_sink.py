"""The Ray ingress's activity tracker: core's tracker, whose every experiment's activity is published to
the GCS for that experiment's scaling policy (the window controller on Ray).

Why this module exists: the request path only records arrivals and completions; on Ray the controller
that turns them into a pool's state runs in another process (Serve's controller). The ingress — one
replica, which sees every arrival — publishes an experiment's activity before its request goes to a
replica, so a policy that sees the replica busy or freshly idle always reads an activity that includes
that request — and its requests at the pool (`at_pool`: the handles' count, published again in the
background whenever it changes), which size a pool whose requests wait for replicas to start
(activity_store.py); completions are published in the background. Writes of one experiment coalesce: under
64 concurrent requests, one write carries every arrival that came while the previous one ran.
Times are emulated wall-clock seconds (`time.time() × HYBRID_TIME_SCALE`), which Serve's controller
reads the same on every node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from backends.local_ray.activity_store import ActivityStore, Published
from backends.local_ray.settings import RaySettings
from core.keepwarm.activity import ActivityTracker, emulated_clock
from core.keepwarm.decision import NamedPolicy
from core.keepwarm.policies import retention_s

log = logging.getLogger("hybrid_serve.ray.activity")

#: A write that failed (the GCS unreachable a moment) is tried again this long after (seconds): what it
#: carried may be the last word for a while — a count of requests at the pool going to 0 holds replicas.
RETRY_S = 1.0


class Publisher:
    """Writes an experiment's latest activity, one write at a time per experiment: a `publish` returns
    once a write that began after it was called is done (so it carries what was recorded before)."""

    def __init__(self, export: Callable[[str], Published | None], write: Callable[[Published], None]):
        self._export = export
        self._write = write
        self._running: dict[str, asyncio.Task[None]] = {}
        self._next: dict[str, asyncio.Task[None]] = {}

    async def publish(self, experiment_id: str) -> None:
        task = self._next.get(experiment_id)
        if task is None:  # none waiting to begin: one that begins after the write under way, if any
            task = self._next[experiment_id] = asyncio.ensure_future(
                self._write_after(experiment_id, self._running.get(experiment_id)))
        await asyncio.shield(task)

    def soon(self, experiment_id: str) -> None:
        """Publish in the background (no caller waits for it)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a synchronous caller): the next request publishes it
            return
        asyncio.ensure_future(self.publish(experiment_id))

    async def _write_after(self, experiment_id: str, running: asyncio.Task[None] | None) -> None:
        if running is not None:
            await asyncio.gather(running, return_exceptions=True)
        task = self._next.pop(experiment_id)
        self._running[experiment_id] = task
        try:
            record = self._export(experiment_id)  # taken now: it holds whatever was recorded before
            if record is not None:
                await asyncio.to_thread(self._write, record)
        except Exception:  # the GCS unreachable a moment: written again soon (or by the next request's write)
            log.exception("could not publish %s's activity; its pool keeps what it last read until a write "
                          "succeeds (again in %gs)", experiment_id, RETRY_S)
            asyncio.get_running_loop().call_later(RETRY_S, self.soon, experiment_id)
        finally:
            if self._running.get(experiment_id) is task:
                del self._running[experiment_id]


class PublishedActivity(ActivityTracker):
    """Core's tracker with the ingress's sink: `published(e)` before e's request goes to a replica;
    completions published in the background. It starts from what the GCS holds (an ingress restarting
    keeps every experiment's history, and the policy's memory)."""

    def __init__(self, settings: RaySettings, policy: NamedPolicy, store: ActivityStore,
                 at_pool: Callable[[str], int] = lambda _: 0):
        super().__init__(settings.activity_window, retention_s=retention_s(settings, policy),
                         clock=emulated_clock(settings.time_scale, time.time), learner=policy.learner)
        self.store = store
        #: The experiment's requests at its pool now (given to its handle, not answered yet).
        self.at_pool = at_pool
        self.publisher = Publisher(self.published_now, store.write)

    def published_now(self, experiment_id: str) -> Published | None:
        """What to publish of the experiment now: its durable activity and its requests at the pool."""
        record = self.export(experiment_id)
        return None if record is None else Published(record, self.at_pool(experiment_id))

    def take_in_published(self) -> None:
        """Start from every experiment's activity in the GCS (blocking: at the ingress's start). Requests an
        ingress before this one had in flight were answered or cut with it: their count goes."""
        for published in self.store.read_all():
            self.restore(published.activity)
            if published.in_flight:
                self.store.write(Published(published.activity))

    async def published(self, experiment_id: str) -> None:
        await self.publisher.publish(experiment_id)

    def record_completion(self, experiment_id: str, at: float | None = None) -> None:
        super().record_completion(experiment_id, at)
        self.publisher.soon(experiment_id)

    def record_cold_start(self, experiment_id: str, seconds: float) -> None:
        super().record_cold_start(experiment_id, seconds)
        self.publisher.soon(experiment_id)
