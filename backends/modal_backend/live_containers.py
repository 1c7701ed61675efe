"""Which model containers run now, across the deployment: each one's heartbeat in the shared state.

Why this module exists: `MODAL_MAX_CONTAINERS` caps the whole deployment, Modal caps one pool at a
time, and no process on Modal sees every container (the client cannot list a pool's containers).
So each model container says that it lives: from its start (with a memory snapshot, its restore) it
writes `live/<container>` (its experiment and pool, and when) every `HEARTBEAT_S`, from a thread of its own
(an idle container runs none of our code otherwise), and removes the key when it stops. A container
killed without its exit hook stops beating: its record counts for `STALE_S` more, then no longer, and
the reconciler removes it. The reconciler shares the free slots among the pools from these counts
(pool_autoscalers.py); the ingress refuses a request that would start a container while every slot
is held (`LiveContainers.admit`), counting the cold starts it let through until their containers beat.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable

from backends.modal_backend.pools import PoolKey
from backends.modal_backend.state_store import StateStore
from core.keepwarm.container_budget import ContainerBudget
from core.serving.errors import Overloaded

log = logging.getLogger("hybrid_serve.modal.live_containers")

LIVE = "live/"
#: A model container writes its record this often (seconds).
HEARTBEAT_S = 15.0
#: A record not written for this long is a container gone without its exit hook: no longer counted.
STALE_S = 3 * HEARTBEAT_S
#: A request refused because every slot is held: come back after this long.
RETRY_AFTER_S = 30.0
#: The ingress waits this long for the counts, then goes on with its last reading.
READ_TIMEOUT_S = 5.0


def live_key(container: str) -> str:
    return LIVE + container


def pool_name(pool: PoolKey) -> str:
    """A pool's name in the counts: its experiment and definition's version."""
    return f"{pool.experiment_id}/{pool.version}"


class Heartbeat:
    """This container's `live/` record, written at `start` and every `interval_s` after from a daemon
    thread (each write on an event loop of its own), and removed at `stop`."""

    def __init__(self, store: StateStore, container: str, pool: PoolKey, interval_s: float = HEARTBEAT_S,
                 clock: Callable[[], float] = time.time):
        self.key = live_key(container)
        self._store = store
        self._record = {"experiment": pool.experiment_id, "pool": pool_name(pool)}
        self._interval_s = interval_s
        self._clock = clock
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-container-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                asyncio.run(self._store.put(self.key, {**self._record, "at": self._clock()}))
            except Exception as exc:  # the shared state a moment away: the next beat carries it
                log.warning("this container's heartbeat failed: %s: %s", type(exc).__name__, exc)
            self._stopped.wait(self._interval_s)

    async def stop(self) -> None:
        """The container stops: no beat after this, and its record goes (a beat under way finishes first)."""
        self._stopped.set()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 10)
        try:
            await self._store.pop(self.key)
        except Exception as exc:  # its record stops counting after STALE_S
            log.warning("could not remove this container's heartbeat: %s: %s", type(exc).__name__, exc)


async def running_containers(store: StateStore, keys: list[str], now: float, drop_stale: bool = False) -> dict[str, int]:
    """The containers beating now, by pool name; `drop_stale`: remove the records of containers gone
    without their exit hook (the reconciler's job)."""
    chosen = [k for k in keys if isinstance(k, str) and k.startswith(LIVE)]
    records = await asyncio.gather(*(store.get(k) for k in chosen), return_exceptions=True)
    running: dict[str, int] = {}
    for key, record in zip(chosen, records):
        if not isinstance(record, dict) or not isinstance(record.get("at"), (int, float)):
            continue  # unreadable now, or removed meanwhile
        if now - record["at"] <= STALE_S:
            running[record["pool"]] = running.get(record["pool"], 0) + 1
        elif drop_stale:
            try:
                await store.pop(key)
            except Exception as exc:  # removed by the next pass
                log.warning("could not remove the stale heartbeat %s: %s: %s", key, type(exc).__name__, exc)
    return running


class LiveContainers:
    """The ingress's view of the running containers (read at most every `ttl_s`) and its admission of
    requests that would start one: while every slot of the deployment is held, a request to a pool
    with no container is refused (503 + Retry-After), never queued behind windows that may last an hour.
    A cold start let through counts as its pool's container until the pool's heartbeat shows (or
    `starting_s` passed), so that two cold starts never take the same free slot."""

    def __init__(self, store: StateStore, budget: ContainerBudget, starting_s: float, ttl_s: float = 2.0,
                 clock: Callable[[], float] = time.time):
        self._store = store
        self.budget = budget
        self._starting_s = starting_s
        self._ttl_s = ttl_s
        self._clock = clock
        self._running: dict[str, int] = {}
        self._read_at: float | None = None
        self._starting: dict[str, float] = {}  # pool name → when this ingress let its cold start through
        self._lock = asyncio.Lock()

    async def running(self) -> dict[str, int]:
        """Containers by pool name: beating, and cold starts let through that have not beaten yet."""
        async with self._lock:
            return await self._current()

    async def admit(self, pool: PoolKey) -> None:
        """Let a request to `pool` through, or refuse it (`Overloaded`) when it would start a container
        beyond the deployment's cap. One admission at a time: a cold start let through is counted
        before the next request is looked at."""
        name = pool_name(pool)
        async with self._lock:
            running = await self._current()
            if running.get(name):
                return
            if not self.budget.admits(name, running):
                raise Overloaded(
                    f"{pool.experiment_id}: all {self.budget.total} containers of the deployment (MODAL_MAX_CONTAINERS) "
                    f"serve other experiments inside their windows; retry in {RETRY_AFTER_S:g}s",
                    retry_after_s=RETRY_AFTER_S)
            self._starting[name] = self._clock()

    async def _current(self) -> dict[str, int]:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._ttl_s:
            try:
                self._running = await asyncio.wait_for(self._read(now), READ_TIMEOUT_S)
                self._read_at = now
            except Exception as exc:  # the shared state a moment away (or slow): the last reading holds
                log.warning("reading the running containers failed: %s: %s", type(exc).__name__, exc)
        self._starting = {p: at for p, at in self._starting.items()
                          if not self._running.get(p) and now - at < self._starting_s}
        return {**self._running, **{p: 1 for p in self._starting}}


    async def _read(self, now: float) -> dict[str, int]:
        return await running_containers(self._store, await self._store.keys(), now)


def per_experiment(running: dict[str, int]) -> dict[str, int]:
    """Containers by experiment (every pool of it), from counts by pool name."""
    counts: dict[str, int] = {}
    for name, n in running.items():
        experiment = name.rsplit("/", 1)[0]
        counts[experiment] = counts.get(experiment, 0) + n
    return counts
