"""What a request goes through on Ray before a replica may take it.

Why this module exists: a request for a cold experiment must not start a replica the deployment has
no slot for (MODAL_MAX_CONTAINERS: 503 at once), must take its turn among cold starts
(HYBRID_MAX_COLD_STARTS), and must find its pool deployed (a first request deploys it, a request
after a swap waits for the new model) — after its arrival is published, so that the pool's scaling
policy sees it before any replica does. The deploy comes before the turn: a pool deployed at zero
replicas starts nothing until its request reaches it, so the deploys of ten cold experiments overlap
and only their replica starts take turns (ten cold starts at once on two cores, ten warm workers:
the p50 went from 3.8× to 2.6–3.0× a lone one, the last from 6.6× to 4.3–4.9×). A pool parked
(idle_pools.py) while its request waited for a turn is deployed again when the turn comes. A
prediction and a streamed generation are admitted alike.
"""

from __future__ import annotations

import time
from typing import Awaitable, Callable, TypeVar

from backends.local_ray.cold_starts import ColdStarts, NoStartSlot
from backends.local_ray.deployer import PoolDeployer
from backends.local_ray.replica_slots import RETRY_AFTER_FULL_S, ReplicaSlots
from backends.local_ray.replica_watch import ReplicaWatch, live
from core.serving.errors import Overloaded
from core.serving.registry import Experiment

T = TypeVar("T")


class Admission:
    def __init__(self, timeout_s: float, publish: Callable[[str], Awaitable[None]], replicas: ReplicaWatch,
                 slots: ReplicaSlots, starts: ColdStarts, deployer: PoolDeployer, identity: Callable[[str], str | None]):
        self.timeout_s = timeout_s  # HYBRID_COLD_START_TIMEOUT_S: the whole wait, admission and start
        self.publish = publish
        self.replicas = replicas
        self.slots = slots
        self.starts = starts
        self.deployer = deployer
        self.identity = identity

    async def run(self, experiment: Experiment, call: Callable[[float, float], Awaitable[T]]) -> T:
        """`call(request_at, seconds left of the timeout)` once the request is admitted."""
        await self.publish(experiment.id)  # its policy sees this arrival before any replica does
        states = await self.replicas.current()
        cold = not live(states.get(experiment.id, {}))
        arrived = time.monotonic()
        try:
            with self.slots.taken(experiment.id, states):  # beyond MODAL_MAX_CONTAINERS: refused at once
                identity = self.identity(experiment.id)
                await self.deployer.ensure(experiment, identity)  # no turn needed: a pool at zero starts nothing
                async with self.starts.admit(experiment.id, cold, self._left_s(arrived)):
                    await self.deployer.ensure(experiment, identity)  # parked meanwhile? (else no wait at all)
                    return await call(time.time(), self._left_s(arrived))
        except NoStartSlot:
            raise Overloaded(f"{experiment.id}: {self.starts.limit} other experiments' cold starts (HYBRID_MAX_COLD_STARTS) "
                             f"kept every slot for the rest of its {self.timeout_s:g}s wait (its pool's deploy included); retry in {RETRY_AFTER_FULL_S:g}s",
                             retry_after_s=RETRY_AFTER_FULL_S) from None

    def _left_s(self, arrived: float) -> float:
        """What is left of the request's wait (HYBRID_COLD_START_TIMEOUT_S), at least a moment."""
        return max(0.1, self.timeout_s - (time.monotonic() - arrived))
