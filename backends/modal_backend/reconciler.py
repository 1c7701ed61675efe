"""The durable window reconciler: the one writer of every experiment pool's autoscaler on Modal.

Why this module exists: nothing that must happen later may live in an ingress container's memory —
ingress containers scale to zero, run side by side, and a deploy resets every override. The
reconciler runs as one Modal function with at most one container (scheduled every
`HYBRID_RECONCILE_INTERVAL_S`, and poked by ingresses after they publish arrivals); in each pass it

1. folds every ingress's new arrival batches into each experiment's durable activity (histograms
   included, so what the adaptive policy learned survives every container);
2. asks core's policy for each experiment's decision and core's `desired_state` for the autoscaler
   at this moment (`scaledown_window`, `min_containers`);
3. calls `update_autoscaler` only where that differs from what is applied under the current
   deployment — so it is idempotent, repairs a deploy's reset, and raises and lowers pre-warms from
   shared state, whatever happens to ingress containers;
4. says when the next change is due, so `ReconcilerLoop` can wake for it (a pre-warm on time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from typing import Any, Awaitable, Callable

from backends.modal_backend.state_store import (ACTIVITY, APPLIED, ARRIVALS, CURSORS, StateStore, activity_key)
from core.keepwarm.activity import ActivityTracker
from core.keepwarm.appliers import AppliedWindow
from core.keepwarm.autoscaler import desired_state
from core.keepwarm.policies import policy_from_settings
from core.keepwarm.shared_activity import ArrivalBatch, DurableActivity
from core.serving.registry import Experiment, Registry
from core.settings import Settings

log = logging.getLogger("hybrid_serve.modal.reconciler")

#: `update(experiment, scaledown_window, min_containers)`: Modal's update_autoscaler on that pool.
UpdateFn = Callable[[Experiment, int, int], Awaitable[Any]]
#: An ingress container's key that has not been written for this long, all of it folded, is removed.
STALE_ARRIVALS_S = 3600.0


class WindowReconciler:
    def __init__(self, settings: Settings, registry: Registry, store: StateStore, update: UpdateFn, deployment: str,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.registry = registry
        self.store = store
        self.update = update
        self.deployment = deployment
        self.policy = policy_from_settings(settings)
        self._clock = clock

    async def reconcile(self) -> float | None:
        """One pass. Returns the seconds until the next autoscaler change is due (None: none pending)."""
        now = self._clock()
        keys = await self.store.keys()
        tracker = ActivityTracker(self.settings.activity_window, retention_s=float("inf"), clock=lambda: now,
                                  learner=self.policy.learner)
        for key in (k for k in keys if k.startswith(ACTIVITY)):
            record = await self.store.get(key)
            if record is not None:
                tracker.restore(DurableActivity.from_dict(record))
        cursors: dict[str, int] = dict(await self.store.get(CURSORS) or {})
        touched = await self._fold_arrivals(tracker, [k for k in keys if k.startswith(ARRIVALS)], cursors, now)
        for experiment_id in touched:
            record = tracker.export(experiment_id)
            assert record is not None
            await self.store.put(activity_key(experiment_id), record.to_dict())
        await self.store.put(CURSORS, cursors)
        return await self._apply(tracker, now)

    async def _fold_arrivals(self, tracker: ActivityTracker, keys: list[str], cursors: dict[str, int],
                             now: float) -> set[str]:
        """Fold every container's batches newer than its cursor, oldest first; drop dead containers' keys."""
        pending: list[tuple[float, str, ArrivalBatch]] = []
        for key in keys:
            container = key.removeprefix(ARRIVALS)
            published = await self.store.get(key) or {"written_at": 0.0, "batches": []}
            seen = cursors.get(container, 0)
            fresh = [entry for entry in published["batches"] if entry["seq"] > seen]
            for entry in fresh:
                batch = ArrivalBatch.from_dict(entry["batch"])
                pending.append((batch.first_at, entry["experiment"], batch))
            if fresh:
                cursors[container] = max(entry["seq"] for entry in fresh)
            elif now - published["written_at"] > STALE_ARRIVALS_S:
                await self.store.pop(key)
                cursors.pop(container, None)
        pending.sort(key=lambda item: item[0])
        for _, experiment_id, batch in pending:
            tracker.fold(experiment_id, batch)
        return {experiment_id for _, experiment_id, _ in pending}

    async def _apply(self, tracker: ActivityTracker, now: float) -> float | None:
        applied: dict[str, dict[str, Any]] = dict(await self.store.get(APPLIED) or {})
        next_change: float | None = None
        changed = False
        for activity in tracker.snapshot():
            experiment = self.registry.get(activity.experiment_id)
            if experiment is None:
                continue  # no longer registered: its pool is not ours to steer
            decision = self.policy.decide(activity)
            state = desired_state(decision.window_s, decision.prewarm_after_s, activity.idle_s, self.settings.prewarm_lead_s)
            if state.changes_in_s is not None:
                next_change = state.changes_in_s if next_change is None else min(next_change, state.changes_in_s)
            current = applied.get(experiment.id)
            if current is not None and (current["window_s"], current["min_containers"], current["deployment"]) == (
                    state.scaledown_window_s, state.min_containers, self.deployment):
                continue
            try:
                await self.update(experiment, state.scaledown_window_s, state.min_containers)
            except Exception as exc:  # requests are unaffected; the next pass tries again
                log.warning("update_autoscaler(%s, scaledown_window=%s, min_containers=%s) failed: %s: %s",
                            experiment.id, state.scaledown_window_s, state.min_containers, type(exc).__name__, exc)
                continue
            applied[experiment.id] = asdict(AppliedWindow(state.scaledown_window_s, decision.reason.value,
                                                          decision.prewarm_after_s, state.min_containers, now,
                                                          self.deployment))
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
