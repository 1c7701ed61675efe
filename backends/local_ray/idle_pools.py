"""Pools that idle at zero replicas with nothing planned are deleted until their next request.

Why this module exists: Serve's controller runs every deployed pool's policy each loop, so a hundred
pools at zero would cost most of a core at rest. A pool that has had no replica for
`HYBRID_IDLE_POOL_TTL_S`, has nothing planned (no pre-warm ahead or running: the window controller's
plan) and no request on its way through the ingress is deleted; its next request deploys it again.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from backends.local_ray.deployer import PoolDeployer
from backends.local_ray.handles import Handles
from core.keepwarm.controller import PoolPlan

log = logging.getLogger("hybrid_serve.ray.idle_pools")


class IdlePools:
    def __init__(self, ttl_s: float, deployer: PoolDeployer, handles: Handles,
                 plans: Callable[[], dict[str, PoolPlan]]):
        self.ttl_s = ttl_s
        self.deployer = deployer
        self.handles = handles
        #: Every remembered experiment's plan now (the ingress's window controller).
        self.plans = plans
        #: Since when (monotonic) each deployed pool has had no replica.
        self.empty_since: dict[str, float] = {}

    def served(self, experiment_id: str) -> None:
        """A request was served just now: the pool's time at zero starts again."""
        self.empty_since.pop(experiment_id, None)

    async def park(self, at_zero: set[str]) -> None:
        """Delete the pools at zero for `ttl_s` with nothing planned (after a replica-count reading)."""
        now = time.monotonic()
        for experiment_id in set(self.empty_since) - at_zero:
            del self.empty_since[experiment_id]
        if not self.ttl_s:
            return
        due = [e for e in at_zero if now - self.empty_since.setdefault(e, now) >= self.ttl_s
               and self.deployer.deployed(e) and self.handles.idle(e)]
        if not due:
            return
        try:  # the plans read once per pass
            plans = self.plans()
        except Exception:
            log.exception("could not read the pools' plans; idle pools stay deployed")
            return
        for experiment_id in due:
            plan = plans.get(experiment_id)
            if plan is not None and not plan.nothing_ahead:
                continue  # a pre-warm is ahead or running
            if self.deployer.park(experiment_id):
                self.empty_since.pop(experiment_id, None)
                await self.handles.drop(experiment_id)
