"""What the ingress knows of its pools' replicas: counts by state, read from Serve's controller in the
background.

Why this module exists: cold-start admission, `/health`, `/experiments` and `/metrics` all need each
pool's replica counts, and none may wait for a controller call on its path. `ReplicaWatch` reads
them every `STATUS_INTERVAL_S` (the first time before it answers) and hands each reading to the jobs
that follow it (closing idle handles, parking idle pools); `model_status` turns one pool's counts into
the typed status core reports.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from backends.local_ray.pool import deployment_name, pool_app_name
from core.serving.model_status import ModelState, ModelStatus

#: The ingress reads replica counts from Serve's controller this often.
STATUS_INTERVAL_S = 1.0

ReplicaStates = dict[str, dict[str, int]]


def serve_replica_states(app_name: str) -> ReplicaStates:
    """Replica counts by state of every deployed pool of the application, from Serve's controller
    (blocking). Serve's raw instance details, not `serve.status()`: the latter rebuilds (and
    cloudpickles) every deployment's configuration on each call, five times the cost — a third of
    the ingress's CPU under load."""
    from ray.serve.context import _get_global_client

    prefix = pool_app_name(app_name, "")
    out: ReplicaStates = {}
    for name, app in (_get_global_client().get_serve_details().get("applications") or {}).items():
        if not name.startswith(prefix) or str(getattr(app.get("status"), "value", app.get("status"))) == "DELETING":
            continue  # another app's, or one going (an ingress restarted mid-deletion must not adopt it)
        experiment_id = name[len(prefix):]
        deployment = (app.get("deployments") or {}).get(deployment_name(experiment_id)) or {}
        counts: dict[str, int] = {}
        for replica in deployment.get("replicas", []):
            state = str(getattr(replica.get("state"), "value", replica.get("state")))
            counts[state] = counts.get(state, 0) + 1
        out[experiment_id] = counts
    return out


def live(states: dict[str, int]) -> int:
    """Replicas running or starting."""
    return states.get("RUNNING", 0) + states.get("STARTING", 0)


def model_status(states: dict[str, int], last_cold_start: dict[str, float] | None, error: str | None) -> ModelStatus:
    """One pool's status from its replica counts (a failed load, last heard of, wins)."""
    running, starting, stopping = states.get("RUNNING", 0), states.get("STARTING", 0), states.get("STOPPING", 0)
    if running and stopping:
        state = ModelState.SCALING_DOWN
    elif running:
        state = ModelState.WARM
    elif starting:
        state = ModelState.STARTING
    elif stopping:
        state = ModelState.SCALING_DOWN
    else:
        state = ModelState.COLD
    return ModelStatus(ModelState.FAILED if error else state, replicas=running, last_cold_start=last_cold_start,
                       last_error=error, replica_states=states)


class ReplicaWatch:
    """The replica counts last read; `followers` get each reading's pools at zero (in the watcher)."""

    def __init__(self, app_name: str, read_states: Callable[[str], ReplicaStates] = serve_replica_states,
                 seen: Callable[[set[str]], None] = lambda ids: None):
        self.app_name = app_name
        self._read_states = read_states
        self._seen = seen
        self.states: ReplicaStates = {}
        self.followers: list[Callable[[set[str]], Awaitable[None]]] = []
        self._watcher: asyncio.Task[None] | None = None

    async def current(self) -> ReplicaStates:
        """Replica counts by state per experiment, as the background watcher last read them."""
        if self._watcher is None or self._watcher.done():
            await self._read()  # the first time (or after a failure), read once before answering
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return self.states

    def running(self, experiment_id: str) -> None:
        """A replica of the experiment answered: it runs, whatever was last read."""
        states = self.states.setdefault(experiment_id, {})
        states["RUNNING"] = max(1, states.get("RUNNING", 0))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL_S)
            try:
                await self._read()
                at_zero = {e for e, states in self.states.items() if not live(states)}
                for follow in self.followers:
                    await follow(at_zero)
            except Exception:  # the controller restarting, ...: keep the last state, read again later
                continue

    async def _read(self) -> None:
        self.states = await asyncio.to_thread(self._read_states, self.app_name)
        self._seen(set(self.states))

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
