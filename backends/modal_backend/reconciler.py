"""The durable window reconciler: the one writer of every experiment pool's autoscaler on Modal.

Why this module exists: nothing that must happen later may live in an ingress container's memory —
ingress containers scale to zero, run side by side, and a deploy resets every override. The
reconciler runs as one Modal function with at most one container (scheduled every
`HYBRID_RECONCILE_INTERVAL_S`, and poked by ingresses after they publish arrivals); in each pass it

1. folds every ingress's new arrival batches into each experiment's durable activity (histograms
   included, so what the adaptive policy learned survives every container);
2. reads the registry from the shared state (re-read only when its stamp moved) and finds each
   experiment's *current pool* (pools.py): the pool of its current definition — for a moving MLflow
   source, the pool the ingresses' latest arrivals name (they resolved the alias);
3. drains every pool it applied a window to that is no longer current (the experiment changed or was
   removed): `update_autoscaler(min_containers=0, scaledown_window=2)` once, then forgets it — its
   containers finish the requests they hold and go; a removed experiment's activity is dropped;
4. asks core's policy for each experiment's decision and core's `plan_pool` (core.keepwarm.controller) for the autoscaler
   at this moment (`scaledown_window`, `min_containers`);
5. calls `update_autoscaler` on the current pool only where that differs from what is applied under
   the current deployment — so it is idempotent, repairs a deploy's reset, and raises and lowers
   pre-warms from shared state, whatever happens to ingress containers;
6. says when the next change is due, so `ReconcilerLoop` can wake for it (a pre-warm on time).

What it applied, to which pool, is in the `applied` key, so a restarted reconciler still drains.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from typing import Any, Awaitable, Callable

from backends.modal_backend.pools import PoolKey, pool_key
from backends.modal_backend.registry_store import DictRegistrySource
from backends.modal_backend.state_store import (ACTIVITY, APPLIED, ARRIVALS, CURSORS, StateStore, activity_key)
from core.keepwarm.activity import ActivityTracker
from core.keepwarm.controller import AppliedWindow, plan_pool
from core.keepwarm.policies import policy_from_settings
from core.keepwarm.shared_activity import ArrivalBatch, DurableActivity
from core.serving.live_registry import moves
from core.serving.registry import Experiment, Registry
from backends.modal_backend.settings import ModalSettings
from core.settings import MODAL_MIN_WINDOW_S

log = logging.getLogger("hybrid_serve.modal.reconciler")

#: `update(pool, scaledown_window, min_containers)`: Modal's update_autoscaler on that pool.
UpdateFn = Callable[[PoolKey, int, int], Awaitable[Any]]
#: A pool no longer current: no container pinned, idle ones go after this long (Modal's minimum).
DRAIN_WINDOW_S = MODAL_MIN_WINDOW_S
#: An ingress container's key that has not been written for this long, all of it folded, is removed.
STALE_ARRIVALS_S = 3600.0


class WindowReconciler:
    def __init__(self, settings: ModalSettings, registry: DictRegistrySource, store: StateStore, update: UpdateFn,
                 deployment: str, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.source = registry
        self.registry = Registry({})
        self._stamp: Any = None
        self._read = False
        self.store = store
        self.update = update
        self.deployment = deployment
        self.policy = policy_from_settings(settings)
        self._clock = clock

    async def reconcile(self) -> float | None:
        """One pass. Returns the seconds until the next autoscaler change is due (None: none pending)."""
        now = self._clock()
        await self._read_registry()  # a registry that cannot be read fails the pass: nothing is drained
        keys = await self.store.keys()
        tracker = ActivityTracker(self.settings.activity_window, retention_s=float("inf"), clock=lambda: now,
                                  learner=self.policy.learner)
        for key in (k for k in keys if k.startswith(ACTIVITY)):
            record = await self.store.get(key)
            if record is not None:
                tracker.restore(DurableActivity.from_dict(record))
        cursors: dict[str, int] = dict(await self.store.get(CURSORS) or {})
        served: dict[str, PoolKey] = {}
        touched = await self._fold_arrivals(tracker, [k for k in keys if k.startswith(ARRIVALS)], cursors, now, served)
        for experiment_id in touched - self._retired(touched):
            record = tracker.export(experiment_id)
            assert record is not None
            await self.store.put(activity_key(experiment_id), record.to_dict())
        for experiment_id in self._retired({k.removeprefix(ACTIVITY) for k in keys if k.startswith(ACTIVITY)}):
            await self.store.pop(activity_key(experiment_id))
        await self.store.put(CURSORS, cursors)
        return await self._apply(tracker, now, served)

    async def _read_registry(self) -> None:
        stamp = await self.source.stamp()
        if not self._read or stamp != self._stamp:
            self._stamp, self.registry = await self.source.read()
            self._read = True

    def _retired(self, experiment_ids: set[str]) -> set[str]:
        """Of these, the experiments no longer registered (an entry that fails validation is not retired)."""
        return {e for e in experiment_ids if self.registry.get(e) is None and e not in self.source.skipped}

    def _current_pool(self, experiment: Experiment | None, served: PoolKey | None, known: PoolKey | None) -> PoolKey | None:
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

    async def _fold_arrivals(self, tracker: ActivityTracker, keys: list[str], cursors: dict[str, int],
                             now: float, served: dict[str, PoolKey]) -> set[str]:
        """Fold every container's batches newer than its cursor, oldest first; drop dead containers' keys."""
        pending: list[tuple[float, str, ArrivalBatch, PoolKey | None]] = []
        for key in keys:
            container = key.removeprefix(ARRIVALS)
            published = await self.store.get(key) or {"written_at": 0.0, "batches": []}
            seen = cursors.get(container, 0)
            fresh = [entry for entry in published["batches"] if entry["seq"] > seen]
            for entry in fresh:
                batch = ArrivalBatch.from_dict(entry["batch"])
                pool = PoolKey.from_dict(entry["pool"]) if entry.get("pool") else None
                pending.append((batch.first_at, entry["experiment"], batch, pool))
            if fresh:
                cursors[container] = max(entry["seq"] for entry in fresh)
            elif now - published["written_at"] > STALE_ARRIVALS_S:
                await self.store.pop(key)
                cursors.pop(container, None)
        pending.sort(key=lambda item: item[0])
        for _, experiment_id, batch, pool in pending:
            tracker.fold(experiment_id, batch)
            if pool is not None:
                served[experiment_id] = pool  # the latest batch's pool
        return {experiment_id for _, experiment_id, _, _ in pending}

    async def _drain(self, applied: dict[str, dict[str, Any]], served: dict[str, PoolKey]) -> bool:
        """Drain (once) each pool applied before that is no longer its experiment's current pool."""
        changed = False
        for experiment_id, record in list(applied.items()):
            if experiment_id in self.source.skipped and self.registry.get(experiment_id) is None:
                continue  # an entry that does not validate: not retired, left as it is
            old = PoolKey.from_dict(record["pool"]) if record.get("pool") else None
            current = self._current_pool(self.registry.get(experiment_id), served.get(experiment_id), old)
            if old is not None and old == current:
                continue
            if old is not None:
                try:
                    await self.update(old, DRAIN_WINDOW_S, 0)
                except Exception as exc:  # drained by the next pass
                    log.warning("draining %s's pool %s failed: %s: %s", experiment_id, old.version, type(exc).__name__, exc)
                    continue
                log.info("drained %s's pool %s (no longer current)", experiment_id, old.version)
            del applied[experiment_id]
            changed = True
        return changed

    async def _apply(self, tracker: ActivityTracker, now: float, served: dict[str, PoolKey]) -> float | None:
        applied: dict[str, dict[str, Any]] = dict(await self.store.get(APPLIED) or {})
        next_change: float | None = None
        changed = await self._drain(applied, served)
        for activity in tracker.snapshot():
            experiment = self.registry.get(activity.experiment_id)
            if experiment is None:
                continue  # no longer registered: its pool is not ours to steer
            known = applied.get(experiment.id, {}).get("pool")
            pool = self._current_pool(experiment, served.get(experiment.id), PoolKey.from_dict(known) if known else None)
            if pool is None:
                continue  # a moving source's new definition has served no request yet
            state = plan_pool(activity, self.policy, self.settings.prewarm_lead_s)
            if state.changes_in_s is not None:
                next_change = state.changes_in_s if next_change is None else min(next_change, state.changes_in_s)
            current = applied.get(experiment.id)
            if current is not None and (current["window_s"], current["min_containers"], current["deployment"],
                                        current.get("pool")) == (state.scaledown_window_s, state.min_containers,
                                                                 self.deployment, pool.to_dict()):
                continue
            try:
                await self.update(pool, state.scaledown_window_s, state.min_containers)
            except Exception as exc:  # requests are unaffected; the next pass tries again
                log.warning("update_autoscaler(%s, scaledown_window=%s, min_containers=%s) failed: %s: %s",
                            experiment.id, state.scaledown_window_s, state.min_containers, type(exc).__name__, exc)
                continue
            applied[experiment.id] = {**asdict(AppliedWindow.of(state, now, self.deployment)), "pool": pool.to_dict()}
            changed = True
        if changed:
            await self.store.put(APPLIED, applied)
        return next_change


class ReconcilerLoop:
    """Runs passes one at a time in the reconciler's single container: a scheduled `tick` keeps
    passing while changes fall due before the next tick (so a pre-warm starts on time); a `poke`
    (an ingress published arrivals) runs one pass, at most once per `min_gap_s`, coalescing pokes."""

    def __init__(self, reconciler: WindowReconciler, interval_s: float, min_gap_s: float,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.reconciler = reconciler
        self.interval_s = interval_s
        self.min_gap_s = min_gap_s
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._last_pass = float("-inf")
        self._poked = False

    async def _pass(self) -> float | None:
        self._last_pass = self._clock()
        try:
            return await self.reconciler.reconcile()
        except Exception:  # storage unreachable, ...: the next pass tries again
            log.exception("reconciler pass failed")
            return None

    async def tick(self) -> None:
        deadline = self._clock() + self.interval_s - 1.0
        while True:
            async with self._lock:
                self._poked = False
                next_change = await self._pass()
            if next_change is None or self._clock() + next_change >= deadline:
                return
            await self._sleep(max(0.5, next_change))

    async def poke(self) -> None:
        self._poked = True
        async with self._lock:
            if not self._poked:  # a pass after this poke already ran
                return
            wait = self._last_pass + self.min_gap_s - self._clock()
            if wait > 0:
                await self._sleep(wait)
            self._poked = False
            await self._pass()
