"""The deployment's replica slots, at the ingress: a request that would start an experiment's first
replica goes on only while a slot is free.

Why this module exists: `MODAL_MAX_CONTAINERS` caps the whole deployment, and Serve starts a pool's first
replica for a waiting request itself, past any scaling policy. So the ingress admits a cold experiment's
request only while the replicas running or starting — and the cold starts it let through, counted from
the moment they are admitted until their replica shows — leave a slot (core.keepwarm.container_budget);
the check and the count happen at once (no await between them), so 64 requests for 64 cold experiments
start exactly the free slots.

The scaling policies keep the pools within the cap as they grow (scaling.py): Serve's controller runs
every pool's policy one after another in its one process, and each grows only into the slots the
others' last decisions leave (`held_by_pool`). That table lives here, not in scaling.py: Serve pickles a
policy's module by value, so each pool's policy has its own copy of that module's globals.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from backends.local_ray.replica_watch import ReplicaStates, live
from core.keepwarm.container_budget import ContainerBudget
from core.serving.errors import Overloaded

#: A cold experiment refused because every slot is held: come back after this long (seconds).
RETRY_AFTER_FULL_S = 10.0

#: In Serve's controller: each pool's replicas as its policy last decided them (or runs, if more), by
#: application. A controller that restarts starts empty and is whole again after one tick of every pool.
_HELD: dict[str, dict[str, int]] = {}


def held_by_pool(app_name: str) -> dict[str, int]:
    """The application's table of replicas held by pool, shared by every pool's scaling policy."""
    return _HELD.setdefault(app_name, {})


class ReplicaSlots:
    def __init__(self, cap: int):
        #: Replicas across experiments (MODAL_MAX_CONTAINERS, within what the cluster holds); 0: no cap.
        self.cap = cap
        self._cold: dict[str, int] = {}  # experiment → its requests admitted cold, not ended yet

    def running(self, states: ReplicaStates) -> dict[str, int]:
        """Replicas by experiment: running or starting, and at least one for a cold start let through."""
        running = {e: live(s) for e, s in states.items()}
        for experiment_id in self._cold:
            running[experiment_id] = max(running.get(experiment_id, 0), 1)
        return running

    @contextmanager
    def taken(self, experiment_id: str, states: ReplicaStates) -> Iterator[None]:
        """For one request: refused (`Overloaded`, at once rather than queued behind windows that may last
        minutes) when it would start a replica while other experiments' replicas hold every slot."""
        running = self.running(states)
        if self.cap and not ContainerBudget(self.cap, self.cap).admits(experiment_id, running):
            raise Overloaded(f"{experiment_id}: all {self.cap} replica slots of the deployment (MODAL_MAX_CONTAINERS, "
                             f"within HYBRID_MAX_REPLICAS or what the cluster holds) hold other experiments' replicas "
                             f"inside their windows; retry in {RETRY_AFTER_FULL_S:g}s", retry_after_s=RETRY_AFTER_FULL_S)
        cold = not live(states.get(experiment_id, {}))
        if cold:
            self._cold[experiment_id] = self._cold.get(experiment_id, 0) + 1
        try:
            yield
        finally:
            if cold:
                self._cold[experiment_id] -= 1
                if not self._cold[experiment_id]:
                    del self._cold[experiment_id]
