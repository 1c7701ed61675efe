"""The durable window reconciler: the one writer of every experiment pool's autoscaler on Modal.

Why this module exists: nothing that must happen later may live in an ingress container's memory —
ingress containers scale to zero, run side by side, and a deploy resets every override. The
reconciler runs as one Modal function with at most one container (scheduled every
`HYBRID_RECONCILE_INTERVAL_S`, and poked by ingresses after they publish arrivals); in each pass it

1. reads the registry from the shared state, re-read only when its stamp moved (registry_view.py);
2. folds every ingress's new arrival batches into each experiment's durable activity (histograms
   included, so what the adaptive policy learned survives every container; arrival_folding.py);
3. finds each experiment's *current pool* (pools.py): the pool of its current definition — for a moving
   MLflow source, the pool the ingresses' latest arrivals name (they resolved the alias);
4. drains every pool it applied a window to that is no longer current (the experiment changed or was
   removed): `update_autoscaler(min_containers=0, scaledown_window=2)` once, then forgets it — its
   containers finish the requests they hold and go; a removed experiment's activity is dropped;
5. asks core's policy for each experiment's decision and core's `plan_pool` (core.keepwarm.controller) for the autoscaler
   at this moment (`scaledown_window`, `min_containers`), and shares the deployment's containers
   (`MODAL_MAX_CONTAINERS`) among the pools from the containers beating now and the cold starts under
   way (`max_containers`: live_containers.py, core.keepwarm.container_budget) — a pre-warm takes a free
   slot or waits for one —, removing the records of containers gone;
6. calls `update_autoscaler` on the current pool only where that differs from what is applied under
   the current deployment — so it is idempotent, repairs a deploy's reset, and raises and lowers
   pre-warms from shared state, whatever happens to ingress containers (steps 3–6: pool_autoscalers.py);
7. folds stopped containers' cost-ledger records into one durable total per experiment (usage_folding.py),
   and once a day reads every lasting entry, so modal's 7-day expiry never drops one (keep_alive.py);
8. says when the next change is due, so `ReconcilerLoop` can wake for it (a pre-warm on time).

What it applied, to which pool, is in the `applied` key, so a restarted reconciler still drains.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from backends.modal_backend.arrival_folding import ArrivalFolding
from backends.modal_backend.keep_alive import keep_alive
from backends.modal_backend.live_containers import running_containers
from backends.modal_backend.pool_autoscalers import PoolAutoscalers, UpdateFn
from backends.modal_backend.registry_store import DictRegistrySource
from backends.modal_backend.registry_view import RegistryView
from backends.modal_backend.settings import ModalSettings
from backends.modal_backend.state_store import StateStore
from backends.modal_backend.usage_folding import fold_usage
from core.keepwarm.cold_start_time import PrewarmLead
from core.keepwarm.container_budget import ContainerBudget
from core.keepwarm.policies import policy_from_settings

log = logging.getLogger("hybrid_serve.modal.reconciler")


class WindowReconciler:
    """One pass at a time: read the registry, fold the arrivals (arrival_folding.py), then steer the
    pools' autoscalers (pool_autoscalers.py) — the two jobs share the pass's registry view and clock."""

    def __init__(self, settings: ModalSettings, registry: DictRegistrySource, store: StateStore, update: UpdateFn,
                 deployment: str, clock: Callable[[], float] = time.time):
        policy = policy_from_settings(settings)
        self.registry = RegistryView(registry)
        self.store = store
        self.arrivals = ArrivalFolding(store, settings.activity_window, policy.learner)
        self.autoscalers = PoolAutoscalers(self.registry, store, update, deployment, policy, PrewarmLead(settings.prewarm_lead_s),
                                           ContainerBudget.of(settings), settings.activity_window)
        self.starting_s = settings.cold_start_timeout_s
        self._clock = clock

    async def reconcile(self) -> float | None:
        """One pass. Returns the seconds until the next autoscaler change is due (None: none pending)."""
        now = self._clock()
        await self.registry.refresh()  # a registry that cannot be read fails the pass: nothing is drained
        keys = await self.store.keys()
        await fold_usage(self.store, keys, now)  # the cost ledger: stopped containers into durable totals
        folded = await self.arrivals.fold(keys, now)
        await self.arrivals.save(folded, self.registry.retired)
        # the containers beating now, and the cold starts ingresses let through whose containers do not beat yet
        reading = await running_containers(self.store, keys, now, self.starting_s, drop_stale=True)
        next_change = await self.autoscalers.apply(folded.activity, now, folded.served, reading.running())
        try:  # modal drops entries untouched for 7 days: read them daily, after the windows are applied
            await keep_alive(self.store, keys, now)
        except Exception as exc:  # the next pass tries again
            log.warning("keeping the shared state alive failed: %s: %s", type(exc).__name__, exc)
        return next_change


class ReconcilerLoop:
    """Runs passes one at a time in the reconciler's single container: a scheduled `tick` keeps
    passing while changes fall due before the next tick (so a pre-warm starts on time); a `poke`
    (an ingress published arrivals) runs one pass, at most once per `min_gap_s`, coalescing pokes: at
    most one poke waits for the next pass, and every other poke returns at once, merged into it (its
    arrivals were published before it, so that pass reads them) — pokes never pile up as inputs
    waiting in the reconciler's one container."""

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
        self._poke_waiting = False
        #: A poke that took over from a cancelled waiting one (kept so it is not collected mid-pass).
        self._handed_over: asyncio.Future[None] | None = None

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
        if self._poke_waiting:  # the waiting poke's pass starts after this one: merged into it
            return
        self._poke_waiting = True
        try:
            await self._lock.acquire()
        except asyncio.CancelledError:  # the pokes merged into this one still need their pass
            self._poke_waiting = False
            if self._poked:
                self._handed_over = asyncio.ensure_future(self.poke())
            raise
        self._poke_waiting = False  # it holds the lock: the next poke waits for the next pass
        try:
            if not self._poked:  # a pass that started after this poke already ran
                return
            wait = self._last_pass + self.min_gap_s - self._clock()
            if wait > 0:
                await self._sleep(wait)
            self._poked = False
            await self._pass()
        finally:
            self._lock.release()
