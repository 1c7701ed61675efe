"""The ingress's deployment handles to the experiments' pools, opened on use and closed when idle.

Why this module exists: every open handle pushes its load to Serve's controller five times a second,
so the control plane's cost must follow the experiments in use, not those ever touched: a handle is
opened on an experiment's first request and closed once its pool has been at zero for `idle_s`. The
handles also count each experiment's requests at its pool — given to the handle, not yet answered —
and say when the count changes (`changed`): what the pool's scaling policy sizes it by
(activity_store.py).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from backends.local_ray.pool import deployment_name, pool_app_name


class Handles:
    def __init__(self, app_name: str, idle_s: float = 30.0, open_handle: Callable[[str, str], Any] | None = None):
        self.app_name = app_name
        self.idle_s = idle_s
        self._open = open_handle or self._serve_handle
        self._handles: dict[str, Any] = {}
        self._in_flight: dict[str, int] = {}
        self._last_used: dict[str, float] = {}
        #: Told the experiment whose count of requests at its pool changed.
        self.changed: Callable[[str], None] = lambda _: None

    @staticmethod
    def _serve_handle(experiment_id: str, app_name: str) -> Any:
        from ray import serve

        return serve.get_deployment_handle(deployment_name(experiment_id), pool_app_name(app_name, experiment_id),
                                           _check_exists=False, _record_telemetry=False)

    def acquire(self, experiment_id: str) -> Any:
        handle = self._handles.get(experiment_id)
        if handle is None:
            handle = self._handles[experiment_id] = self._open(experiment_id, self.app_name)
        self._in_flight[experiment_id] = self._in_flight.get(experiment_id, 0) + 1
        self.changed(experiment_id)
        return handle

    def in_flight(self, experiment_id: str) -> int:
        """The experiment's requests at its pool through this ingress (waiting for a replica or running)."""
        return self._in_flight.get(experiment_id, 0)

    def idle(self, experiment_id: str) -> bool:
        """No request of the experiment is on its way to a replica through this ingress."""
        return not self.in_flight(experiment_id)

    def release(self, experiment_id: str) -> None:
        self._in_flight[experiment_id] -= 1
        self._last_used[experiment_id] = time.monotonic()
        self.changed(experiment_id)

    def open_ids(self) -> list[str]:
        return list(self._handles)

    async def close_idle(self, at_zero: set[str]) -> None:
        now = time.monotonic()
        for experiment_id in [e for e in self._handles if e in at_zero and self.idle(e)
                              and now - self._last_used.get(e, now) >= self.idle_s]:
            await self._handles.pop(experiment_id).shutdown_async()

    async def drop(self, experiment_id: str) -> None:
        """The experiment's pool goes (retired): its handle with it."""
        handle = self._handles.pop(experiment_id, None)
        if handle is not None:
            await handle.shutdown_async()

    async def close(self) -> None:
        for handle in self._handles.values():
            await handle.shutdown_async()
        self._handles.clear()
