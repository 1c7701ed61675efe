"""Activity shared by every ingress container, through a `modal.Dict`, off the request path.

Why this module exists: Modal may run several ingress containers; each sees only its own requests.
`SharedActivityTracker` is core's tracker that, for each local arrival, schedules a background
exchange with a shared store (one `modal.Dict` key per experiment: the latest arrival, wall time):
it merges what other containers published into its own state (`merge_remote`), then publishes its
own arrival. Decisions never wait for the network; a request seen elsewhere a moment ago still
counts as recent activity for the next one here. The store's get/put are injected: a dict in tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from core.keepwarm.activity import ActivityTracker, ExperimentActivity
from core.keepwarm.histogram import Learner

log = logging.getLogger("hybrid_serve.modal.activity")


class SharedActivityTracker(ActivityTracker):
    def __init__(
        self,
        activity_window_s: float,
        retention_s: float,
        get: Callable[[str], Awaitable[Any]],
        put: Callable[[str, float], Awaitable[Any]],
        clock: Callable[[], float] = time.time,
        learner: Learner | None = None,
    ):
        super().__init__(activity_window_s, retention_s=retention_s, clock=clock, learner=learner)
        self._get = get
        self._put = put
        self._pending: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def record_request(self, experiment_id: str, at: float | None = None) -> ExperimentActivity:
        activity = super().record_request(experiment_id, at)
        self._pending[experiment_id] = activity.last_request
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a synchronous caller): publish at the next async request
            return activity
        if self._task is None or self._task.done():
            self._task = loop.create_task(self.sync())
        return activity

    async def sync(self) -> None:
        """Exchange pending arrivals with the store: merge others' latest, publish ours if newer."""
        while self._pending:
            experiment_id, ours = self._pending.popitem()
            try:
                theirs = await self._get(experiment_id)
                if theirs is not None and float(theirs) != ours:
                    self.merge_remote(experiment_id, float(theirs))
                if theirs is None or float(theirs) < ours:
                    await self._put(experiment_id, ours)
            except Exception as exc:  # the shared store only refines decisions: local ones stand
                log.warning("shared activity sync for %s failed: %s: %s", experiment_id, type(exc).__name__, exc)
