"""The window reconciler's second job: apply each experiment's plan to its current pool's autoscaler,
and drain the pools that are no longer current.

Why this module exists: `update_autoscaler` is the only lever there is, a deploy resets it, and a
changed or removed experiment leaves a pool behind. So each pass drains (once) every pool it applied a
window to that is no longer its experiment's current pool (pools.py), asks core's `plan_pool` for each
current pool's autoscaler at this moment — with the experiment's warm schedule on top (`with_schedule`;
a scheduled experiment with no remembered request gets its first request's plan and the schedule) —
and calls `update_autoscaler` only where that differs from
what is applied under the current deployment — idempotent, and repairing a deploy's reset. What it
applied, to which pool, is in the shared state's `applied` key, so a restarted reconciler still drains.
Folding arrivals into activity is the other job (arrival_folding.py).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Any, Awaitable, Callable

from backends.modal_backend.live_containers import pool_name
from backends.modal_backend.pools import PoolKey, pool_key
from backends.modal_backend.registry_view import RegistryView
from backends.modal_backend.state_store import APPLIED, GRANTS, StateStore
from core.keepwarm.activity import ActivityTracker, ExperimentActivity
from core.keepwarm.container_budget import ContainerBudget
from core.keepwarm.cold_start_time import PrewarmLead
from core.keepwarm.controller import AppliedWindow, PoolPlan, scheduled_plan
from core.keepwarm.decision import NamedPolicy
from core.serving.live_registry import moves
from core.serving.registry import Experiment
from core.settings import MODAL_MIN_WINDOW_S

log = logging.getLogger("hybrid_serve.modal.reconciler")

#: `update(pool, scaledown_window, min_containers, max_containers)`: Modal's update_autoscaler on that
#: pool (`max_containers` None: left as it is).
UpdateFn = Callable[[PoolKey, int, int, "int | None"], Awaitable[Any]]
#: A pool no longer current: no container pinned, idle ones go after this long (Modal's minimum).
DRAIN_WINDOW_S = MODAL_MIN_WINDOW_S


def current_pool(experiment: Experiment | None, served: PoolKey | None, known: PoolKey | None) -> PoolKey | None:
    """The pool the experiment's requests go to now; None when unknown (removed, or a moving source
    whose new definition has not served a request yet)."""
    if experiment is None:
        return None
    if not moves(experiment):
        return pool_key(experiment, None)
    for pool in (served, known):  # the ingresses resolved the alias: the latest pool they named
        if pool is not None and pool.serves(experiment):
            return pool
    return None


def current_pools(registry: RegistryView, tracker: ActivityTracker, applied: dict[str, dict[str, Any]],
              served: dict[str, PoolKey]) -> list[tuple[ExperimentActivity | None, Experiment, PoolKey]]:
    """Each registered experiment's activity and current pool (a moving source's new definition that
    has served no request yet has none); with no activity remembered, those with a warm schedule, and
    those it pinned containers of (a schedule removed since)."""
    current: list[tuple[ExperimentActivity | None, Experiment, PoolKey]] = []
    remembered = {a.experiment_id: a for a in tracker.snapshot()}
    pinned = [e for e, record in applied.items() if record.get("min_containers")]
    for experiment_id in dict.fromkeys([*remembered, *registry.registry.schedules(), *pinned]):
        experiment = registry.get(experiment_id)
        if experiment is None:
            continue  # no longer registered: its pool is not ours to steer
        known = applied.get(experiment.id, {}).get("pool")
        pool = current_pool(experiment, served.get(experiment.id), PoolKey.from_dict(known) if known else None)
        if pool is not None:
            current.append((remembered.get(experiment_id), experiment, pool))
    return current


@dataclass
class PoolAutoscalers:
    """Every experiment pool's autoscaler, as this deployment's reconciler applies it."""

    registry: RegistryView
    store: StateStore
    update: UpdateFn
    deployment: str
    policy: NamedPolicy
    #: How early a pre-warm starts (HYBRID_PREWARM_LEAD_S, or the experiment's measured cold start if longer).
    prewarm_lead: PrewarmLead
    #: The deployment's containers (MODAL_MAX_CONTAINERS) and one experiment's, shared out among the pools.
    budget: ContainerBudget
    activity_window_s: float

    async def apply(self, tracker: ActivityTracker, now: float, served: dict[str, PoolKey],
                    running: dict[str, int]) -> float | None:
        """Drain, then apply every current pool's plan and its share of the deployment's containers
        (`running`: the containers running or starting, by pool name), and publish the shares granted.
        Returns the seconds until the next change is due."""
        applied: dict[str, dict[str, Any]] = dict(await self.store.get(APPLIED) or {})
        next_change: float | None = None
        changed = await self._drain(applied, served)
        current = current_pools(self.registry, tracker, applied, served)
        running = dict(running)
        for record in applied.values():  # a pre-warm pinned by the last pass: its container starts
            if record.get("min_containers") and record.get("pool"):
                name = pool_name(PoolKey.from_dict(record["pool"]))
                running[name] = max(running.get(name, 0), record["min_containers"])
        plans = {e.id: self._within_cap(scheduled_plan(e.id, a, self.policy, self.prewarm_lead, e.warm, now),
                                        pool_name(p), running) for a, e, p in current}
        grants = self._grants(current, running)
        try:  # the ingresses hold these slots for the pools; the windows go on whatever happens to it
            await self.store.put(GRANTS, {"at": now, "pools": grants})
        except Exception as exc:  # the last grants age out (the ingresses then count containers only)
            log.warning("publishing the pools' grants failed: %s: %s", type(exc).__name__, exc)
        for activity, experiment, pool in current:
            state = plans[experiment.id]
            if state.next_change_s is not None:
                next_change = state.next_change_s if next_change is None else min(next_change, state.next_change_s)
            max_containers = self.budget.modal_limit(grants[pool_name(pool)])
            if state.min_containers > max_containers:  # Modal refuses min > max
                state = replace(state, min_containers=max_containers)
            record = applied.get(experiment.id)
            if record is not None and (record["window_s"], record["min_containers"], record["deployment"],
                                       record.get("pool"), record.get("max_containers")) == (
                    state.scaledown_window_s, state.min_containers, self.deployment, pool.to_dict(), max_containers):
                continue
            try:
                await self.update(pool, state.scaledown_window_s, state.min_containers, max_containers)
            except Exception as exc:  # requests are unaffected; the next pass tries again
                log.warning("update_autoscaler(%s, scaledown_window=%s, min_containers=%s, max_containers=%s) failed: "
                            "%s: %s", experiment.id, state.scaledown_window_s, state.min_containers, max_containers,
                            type(exc).__name__, exc)
                continue
            applied[experiment.id] = {**asdict(AppliedWindow.of(state, now, self.deployment)), "pool": pool.to_dict(),
                                      "max_containers": max_containers}
            changed = True
        if changed:
            await self.store.put(APPLIED, applied)
        return next_change

    def _within_cap(self, plan: PoolPlan, name: str, running: dict[str, int]) -> PoolPlan:
        """A pre-warm (or a spell's width) starts containers no request (no ingress admission) asked for: each
        takes a free slot of the deployment (counted in `running` from here on), or waits for one. Two windows'
        hold keeps the pool's last running container and starts none: with none, the pool keeps the one window."""
        have = running.get(name, 0)
        if plan.min_containers <= have:
            return plan
        if plan.holds_only:
            return replace(plan, min_containers=0, scaledown_window_s=plan.window_s)
        granted = have + min(plan.min_containers - have, self.budget.free(running))
        if granted < plan.min_containers:
            log.info("%s's pre-warm of %d waits for %d: every container of the deployment (MODAL_MAX_CONTAINERS) "
                     "is held", name, plan.min_containers, plan.min_containers - granted)
        running[name] = granted
        return replace(plan, min_containers=granted)

    def _grants(self, current: list[tuple[ExperimentActivity | None, Experiment, PoolKey]], running: dict[str, int]) -> dict[str, int]:
        """The slots each current pool may hold: its own, and the deployment's free slots dealt out among the
        pools with a request inside the activity window, the most recent first (container_budget.py)."""
        recent = sorted((a for a, _, _ in current if a is not None and a.idle_s < self.activity_window_s),
                        key=lambda a: a.idle_s)
        pools = {e.id: pool_name(p) for _, e, p in current}
        return self.budget.grants(running, list(pools.values()), [pools[a.experiment_id] for a in recent])

    async def _drain(self, applied: dict[str, dict[str, Any]], served: dict[str, PoolKey]) -> bool:
        """Drain (once) each pool applied before that is no longer its experiment's current pool."""
        changed = False
        for experiment_id, record in list(applied.items()):
            if self.registry.invalid(experiment_id):
                continue  # an entry that does not validate: not retired, left as it is
            old = PoolKey.from_dict(record["pool"]) if record.get("pool") else None
            current = current_pool(self.registry.get(experiment_id), served.get(experiment_id), old)
            if old is not None and old == current:
                continue
            if old is not None:
                try:
                    await self.update(old, DRAIN_WINDOW_S, 0, None)
                except Exception as exc:  # drained by the next pass
                    log.warning("draining %s's pool %s failed: %s: %s", experiment_id, old.version, type(exc).__name__, exc)
                    continue
                log.info("drained %s's pool %s (no longer current)", experiment_id, old.version)
            del applied[experiment_id]
            changed = True
        return changed
