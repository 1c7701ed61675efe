"""The window reconciler's first job: fold every ingress's new arrival batches into each experiment's
durable activity.

Why this module exists: ingress containers publish their arrivals under their own keys of the shared
state and may go at any moment; what they saw must outlive them. In each pass the reconciler restores
every experiment's durable activity (histograms included, so what the adaptive policy learned survives
every container), folds in the batches newer than each container's cursor, oldest first, and writes the
activity back before the cursors — so a pass that dies half-way folds the same batches again, never
loses them. Applying windows to pools is the other job (pool_autoscalers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from backends.modal_backend.pools import PoolKey
from backends.modal_backend.state_store import ACTIVITY, ARRIVALS, CURSORS, StateStore, activity_key
from core.keepwarm.activity import ActivityTracker
from core.keepwarm.histogram import Learner
from core.keepwarm.shared_activity import ArrivalBatch, DurableActivity

#: An ingress container's key that has not been written for this long, all of it folded, is removed.
STALE_ARRIVALS_S = 3600.0


@dataclass
class FoldedArrivals:
    """One pass's fold: every experiment's activity with the new arrivals, the cursors moved past them."""

    activity: ActivityTracker
    #: Per ingress container, the last batch number folded.
    cursors: dict[str, int]
    #: The experiments that got new arrivals.
    touched: set[str]
    #: Per experiment, the pool its latest folded batch was served by.
    served: dict[str, PoolKey]
    #: The experiments with a durable activity record.
    stored: set[str]


class ArrivalFolding:
    """Reads the durable activity and the ingresses' batches from `store`, and writes them back folded."""

    def __init__(self, store: StateStore, activity_window_s: float, learner: Learner | None):
        self._store = store
        self._activity_window_s = activity_window_s
        self._learner = learner

    async def fold(self, keys: list[str], now: float) -> FoldedArrivals:
        """The durable activity of the store's `keys`, with every container's batches newer than its cursor."""
        tracker = ActivityTracker(self._activity_window_s, retention_s=float("inf"), clock=lambda: now,
                                  learner=self._learner)
        for key in (k for k in keys if k.startswith(ACTIVITY)):
            record = await self._store.get(key)
            if record is not None:
                tracker.restore(DurableActivity.from_dict(record))
        cursors: dict[str, int] = dict(await self._store.get(CURSORS) or {})
        served: dict[str, PoolKey] = {}
        touched = await self._fold_batches(tracker, [k for k in keys if k.startswith(ARRIVALS)], cursors, now, served)
        stored = {k.removeprefix(ACTIVITY) for k in keys if k.startswith(ACTIVITY)}
        return FoldedArrivals(tracker, cursors, touched, served, stored)

    async def save(self, folded: FoldedArrivals, retired: Callable[[set[str]], set[str]]) -> None:
        """Write the touched experiments' activity, drop the `retired` experiments', then move the cursors."""
        for experiment_id in folded.touched - retired(folded.touched):
            record = folded.activity.export(experiment_id)
            assert record is not None
            await self._store.put(activity_key(experiment_id), record.to_dict())
        for experiment_id in retired(folded.stored):
            await self._store.pop(activity_key(experiment_id))
        await self._store.put(CURSORS, folded.cursors)

    async def _fold_batches(self, tracker: ActivityTracker, keys: list[str], cursors: dict[str, int],
                            now: float, served: dict[str, PoolKey]) -> set[str]:
        """Fold every container's batches newer than its cursor, oldest first; drop dead containers' keys."""
        pending: list[tuple[float, str, ArrivalBatch, PoolKey | None]] = []
        for key in keys:
            container = key.removeprefix(ARRIVALS)
            published = await self._store.get(key) or {"written_at": 0.0, "batches": []}
            seen = cursors.get(container, 0)
            fresh = [entry for entry in published["batches"] if entry["seq"] > seen]
            for entry in fresh:
                batch = ArrivalBatch.from_dict(entry["batch"])
                pool = PoolKey.from_dict(entry["pool"]) if entry.get("pool") else None
                pending.append((batch.first_at, entry["experiment"], batch, pool))
            if fresh:
                cursors[container] = max(entry["seq"] for entry in fresh)
            elif now - published["written_at"] > STALE_ARRIVALS_S:
                await self._store.pop(key)
                cursors.pop(container, None)
        pending.sort(key=lambda item: item[0])
        for _, experiment_id, batch, pool in pending:
            tracker.fold(experiment_id, batch)
            if pool is not None:
                served[experiment_id] = pool  # the latest batch's pool
        return {experiment_id for _, experiment_id, _, _ in pending}
