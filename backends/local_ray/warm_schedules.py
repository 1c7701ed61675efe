"""Warm schedules on the Ray emulator, the ingress's part: publish each experiment's schedule, and deploy
a parked pool whose schedule comes due.

Why this module exists: a pool parked at zero (idle_pools.py), or never deployed, has no autoscaling
policy to run, so nothing would start its scheduled containers. The ingress follows the registry:
it publishes every experiment's schedule to the GCS for the pools' policies (schedule_store.py) and
checks every `CHECK_S` that each pool its schedule asks containers of now is deployed; the pool's
policy then pins what the schedule asks for (core.keepwarm.controller's `with_schedule`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from backends.local_ray.deployer import PoolDeployer
from backends.local_ray.schedule_store import ScheduleStore
from core.keepwarm.controller import PoolPlan
from core.serving.live_registry import moves
from core.serving.registry import Registry
from core.serving.registry_change import RegistryChange

log = logging.getLogger("hybrid_serve.ray.warm_schedules")

#: How often the ingress checks that every pool its schedule asks containers of is deployed (real s).
CHECK_S = 10.0


class WarmSchedules:
    """The ingress's part: publish each experiment's schedule as the registry changes, and deploy the
    pools whose schedule asks for containers now (the controller's plans) that are not deployed."""

    def __init__(self, store: ScheduleStore, deployer: PoolDeployer, plans: Callable[[], dict[str, PoolPlan]],
                 identity: Callable[[str], str | None]):
        self.store, self.deployer, self.plans, self.identity = store, deployer, plans, identity
        self.registry = Registry({})
        #: Experiments whose schedule is still to be published (a write failed: retried at each check).
        self.unpublished: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def registry_changed(self, change: RegistryChange, registry: Registry) -> None:
        self.registry = registry
        self.unpublished.update((*change.added, *change.changed, *change.rescheduled, *change.removed))
        await self.publish()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._keep())

    async def publish(self) -> None:
        """Write (or clear) each unpublished experiment's schedule; a failed write stays to be retried."""
        for experiment_id in sorted(self.unpublished):
            experiment = self.registry.get(experiment_id)
            try:
                await asyncio.to_thread(self.store.write, experiment_id, None if experiment is None else experiment.warm)
            except Exception:  # the GCS unreachable a moment: the next check writes it
                log.exception("could not publish %s's warm schedule", experiment_id)
                continue
            self.unpublished.discard(experiment_id)

    async def deploy_due(self) -> list[str]:
        """Deploy each pool its schedule asks containers of now and that is not deployed; the ids deployed."""
        deployed: list[str] = []
        if not self.registry.schedules():  # no schedule registered: no plan to make (every 10 s, for every experiment)
            return deployed
        for experiment_id, plan in self.plans().items():
            experiment = self.registry.get(experiment_id)
            if not plan.scheduled_containers or experiment is None or self.deployer.deployed(experiment_id):
                continue
            identity = self.identity(experiment_id)
            if moves(experiment) and identity is None:
                continue  # an alias not resolved yet: its first request deploys it
            await self.deployer.ensure(experiment, identity)
            deployed.append(experiment_id)
        return deployed

    async def _keep(self) -> None:
        while True:
            try:
                await self.publish()
                await self.deploy_due()
            except Exception:  # a deploy failing now is tried again at the next check
                log.exception("deploying the pools a warm schedule asks for failed")
            await asyncio.sleep(CHECK_S)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

