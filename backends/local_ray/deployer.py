"""Deploys an experiment's pool on its first request; swaps or deletes it when the registry changes.

Why this module exists: a registered experiment that is never requested should cost nothing — no
deployment, nothing for Serve's controller to poll — so hundreds start as fast as one. The ingress
deploys an experiment's pool (pool.py) when its first request arrives (single flight: concurrent
requests wait for one deploy, which a request that stops waiting does not stop), redeploys it when
its definition or resolved model changes (Serve starts replicas of the new model and lets requests
in flight finish on the old ones; requests that arrive meanwhile wait for the new model, so a change
is in force for every request after it, as on the other backends), and deletes it when the
experiment is retired — or parked: a pool that has idled at zero replicas with nothing
planned still costs Serve's controller a policy run every loop, so the ingress deletes it and its
next request deploys it again. Which pools exist is read back from Serve itself, so an ingress that
restarts knows them without any memory of its own.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable

from backends.local_ray.pool_changes import PoolChanges
from backends.local_ray.settings import RaySettings
from core.serving.registry import Experiment

#: (the experiment as its replicas read it, its resolved identity) → deployed (blocking).
DeployFn = Callable[[Experiment, "str | None"], None]
DeleteFn = Callable[[str], None]
#: Deploys and deletions under way at once, each on a thread of its own pool: a deploy waits seconds for
#: Serve's controller, and ten cold experiments deploy at once — on the event loop's default threads
#: they would hold up the ingress's other blocking calls (publishing an arrival, reading replica counts).
CHANGES_AT_ONCE = 16


class PoolDeployer:
    """Which experiments' pools are deployed, and when each is deployed, swapped or deleted; the changes
    themselves run in the background, one at a time per experiment (pool_changes.py)."""

    def __init__(self, settings: RaySettings, app_name: str,
                 for_replicas: Callable[[Experiment], Awaitable[Experiment]],
                 deploy: DeployFn | None = None, delete: DeleteFn | None = None):
        self.settings = settings
        self.app_name = app_name
        self._for_replicas = for_replicas
        self._deploy = deploy or self._serve_run
        self._delete = delete or self._serve_delete
        self._deployed: set[str] = set()
        self._deleting: set[str] = set()
        self._changes = PoolChanges()
        self._threads = ThreadPoolExecutor(CHANGES_AT_ONCE, thread_name_prefix="hybrid-pool-changes")

    def seen(self, experiment_ids: set[str]) -> None:
        """Pools Serve reports (deployed by this ingress, or by one before it)."""
        self._deployed |= experiment_ids - self._deleting

    def deployed(self, experiment_id: str) -> bool:
        return experiment_id in self._deployed

    async def ensure(self, experiment: Experiment, identity: str | None) -> None:
        """The experiment's pool exists, with its current model, once this returns: after the deploy
        or swap under way, if any (a swap: the request meets the new model), or deployed now."""
        pending = self._changes.pending(experiment.id)
        if pending is not None:
            await asyncio.wait({pending})  # not cancelled with this request; a failed swap was logged, the pool serves
        if experiment.id not in self._deployed:
            await asyncio.shield(self._changes.pending(experiment.id) or self._changes.track(
                experiment.id, self._locked_run(experiment, identity, only_if_missing=True)))

    def swap(self, experiment: Experiment, identity: str | None) -> None:
        """The experiment changed: a deployed pool (or one being deployed) is redeployed with the new
        model, in the background; its requests meanwhile wait for it (`ensure`)."""
        if experiment.id in self._deployed or self._changes.is_pending(experiment.id):
            self._changes.track(experiment.id, self._locked_run(experiment, identity))

    def retire(self, experiment_id: str) -> None:
        """The experiment was removed: its pool goes (in the background, after a deploy or swap under
        way; requests in flight finish)."""
        if experiment_id in self._deployed or self._changes.is_pending(experiment_id):
            self._delete_later(experiment_id, unless_redeployed=False)

    def park(self, experiment_id: str) -> bool:
        """The pool idles at zero with nothing planned: delete it (in the background) until its next
        request, which waits for the deletion and deploys it again. False when it is being changed."""
        if (experiment_id not in self._deployed or self._changes.is_pending(experiment_id)
                or self._changes.lock(experiment_id).locked()):
            return False
        self._delete_later(experiment_id, unless_redeployed=True)
        return True

    def _delete_later(self, experiment_id: str, unless_redeployed: bool) -> None:
        """No longer deployed as of now (nor taken for deployed while Serve still lists it); deleted
        in the background — unless, for `unless_redeployed`, a request deployed it again first."""
        self._deployed.discard(experiment_id)
        self._deleting.add(experiment_id)
        self._changes.spawn(self._locked_delete(experiment_id, unless_redeployed))

    async def _locked_delete(self, experiment_id: str, unless_redeployed: bool) -> None:
        async with self._changes.lock(experiment_id):  # a re-add waits for the deletion
            try:
                if unless_redeployed and (experiment_id in self._deployed or self._changes.is_pending(experiment_id)):
                    return  # a request deployed it again (or is deploying it) before the deletion began: it serves
                await self._in_thread(self._delete, experiment_id)
                self._deployed.discard(experiment_id)  # a deploy that was under way when it was retired
            finally:
                self._deleting.discard(experiment_id)

    async def _locked_run(self, experiment: Experiment, identity: str | None, only_if_missing: bool = False) -> None:
        async with self._changes.lock(experiment.id):
            if not (only_if_missing and experiment.id in self._deployed):
                await self._run(experiment, identity)

    async def _run(self, experiment: Experiment, identity: str | None) -> None:
        replica_view = await self._for_replicas(experiment)
        await self._in_thread(self._deploy, replica_view, identity)
        self._deployed.add(experiment.id)

    async def _in_thread(self, call: Callable[..., None], *args: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(self._threads, call, *args)

    async def settle(self) -> None:
        """Wait for background swaps and deletions (tests, shutdown)."""
        await self._changes.settle()

    def close(self) -> None:
        """The ingress stops: no deploy or deletion starts any more (one under way finishes)."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    def _serve_run(self, experiment: Experiment, identity: str | None) -> None:
        from backends.local_ray.pool import deploy_pool

        deploy_pool(self.settings, self.app_name, experiment, identity)

    def _serve_delete(self, experiment_id: str) -> None:
        from ray import serve

        from backends.local_ray.pool import pool_app_name

        serve.delete(pool_app_name(self.app_name, experiment_id), _blocking=True)
