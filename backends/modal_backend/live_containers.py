"""Which model containers run now, across the deployment: each one's heartbeat in the shared state.

Why this module exists: `MODAL_MAX_CONTAINERS` caps the whole deployment, Modal caps one pool at a
time, and no process on Modal sees every container (the client cannot list a pool's containers).
So each model container says that it lives: from its start (with a memory snapshot, its restore) it
writes `live/<container>` (its experiment and pool, and when) every `HEARTBEAT_S`, from a thread of its own
(an idle container runs none of our code otherwise), and removes the key when it stops. A container
killed without its exit hook stops beating: its record counts for `STALE_S` more, then no longer, and
the reconciler removes it. The reconciler shares the free slots among the pools from these counts
(pool_autoscalers.py) and publishes what it granted each pool (`grants`); the ingress refuses a request
that would start a container while every slot is held or granted (`LiveContainers.admit`), counting
the cold starts it let through until their containers beat — and publishing them
(`starting/<ingress container>`), so that the reconciler and the other ingress containers count them too.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from backends.modal_backend.pools import PoolKey
from backends.modal_backend.state_store import GRANTS, LIVE, STARTING, StateStore, live_key, starting_key
from core.keepwarm.container_budget import ContainerBudget
from core.serving.errors import Overloaded

log = logging.getLogger("hybrid_serve.modal.live_containers")

#: A model container writes its record this often (seconds).
HEARTBEAT_S = 15.0
#: A record not written for this long is a container gone without its exit hook: no longer counted.
STALE_S = 3 * HEARTBEAT_S
#: A request refused because every slot is held: come back after this long.
RETRY_AFTER_S = 30.0
#: The ingress waits this long for the counts, then goes on with its last reading.
READ_TIMEOUT_S = 5.0


def pool_name(pool: PoolKey) -> str:
    """A pool's name in the counts: its experiment and definition's version."""
    return f"{pool.experiment_id}/{pool.version}"


def experiment_of(name: str) -> str:
    """The experiment of a pool's name (`pool_name`)."""
    return name.rsplit("/", 1)[0]


class Heartbeat:
    """This container's `live/` record, written at `start` and every `interval_s` after from a daemon
    thread (each write on an event loop of its own, given at most `interval_s`), and removed at `stop`."""

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
                asyncio.run(asyncio.wait_for(self._store.put(self.key, {**self._record, "at": self._clock()}),
                                             self._interval_s))
            except Exception as exc:  # the shared state a moment away (or slow): the next beat carries it
                log.warning("this container's heartbeat failed: %s: %s", type(exc).__name__, exc)
            self._stopped.wait(self._interval_s)

    async def stop(self) -> None:
        """The container stops: no beat after this, and its record goes — once a beat under way is over
        (one still going after its time: the record is left to go stale, never written after its removal)."""
        self._stopped.set()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, self._interval_s + 1)
        if self._thread.is_alive():
            log.warning("a heartbeat still under way: this container's record goes stale in %gs", STALE_S)
            return
        try:
            await self._store.pop(self.key)
        except Exception as exc:  # its record stops counting after STALE_S
            log.warning("could not remove this container's heartbeat: %s: %s", type(exc).__name__, exc)


@dataclass
class Reading:
    """What the shared state says runs: containers beating, by pool name, and the pools whose cold start
    an ingress let through that do not beat yet."""

    beating: dict[str, int] = field(default_factory=dict)
    starting: set[str] = field(default_factory=set)

    def running(self) -> dict[str, int]:
        """Containers by pool name: those beating, and one for each pool still starting."""
        return {**{pool: 1 for pool in self.starting}, **self.beating}


async def running_containers(store: StateStore, keys: list[str], now: float, starting_s: float,
                             drop_stale: bool = False, skip: str | None = None) -> Reading:
    """The containers beating now and the cold starts ingresses let through less than `starting_s` ago
    (`skip`: an ingress's own list, which it knows better). `drop_stale`: remove the records of containers
    gone without their exit hook and ingresses' lists with nothing recent (the reconciler's job)."""
    chosen = [k for k in keys if isinstance(k, str) and k.startswith((LIVE, STARTING)) and k != skip]
    records = await asyncio.gather(*(store.get(k) for k in chosen), return_exceptions=True)
    reading, stale = Reading(), []
    for key, record in zip(chosen, records):
        if not isinstance(record, dict):
            continue  # unreadable now, or removed meanwhile
        if _stale(key, record, now, starting_s):
            stale.append(key)
        elif key.startswith(STARTING):
            reading.starting |= {pool for pool, at in record.items() if isinstance(at, (int, float)) and now - at < starting_s}
        else:
            reading.beating[record["pool"]] = reading.beating.get(record["pool"], 0) + 1
    reading.starting -= set(reading.beating)
    for key in stale if drop_stale else []:
        try:
            if _stale(key, await store.get(key), now, starting_s):  # its writer may have written it since
                await store.pop(key)
        except Exception as exc:  # removed by the next pass
            log.warning("could not remove the stale record %s: %s: %s", key, type(exc).__name__, exc)
    return reading


def _stale(key: str, record: Any, now: float, starting_s: float) -> bool:
    """A `live/` record not written for STALE_S (or malformed), or a `starting/` list with nothing recent."""
    if not isinstance(record, dict):
        return record is not None
    if key.startswith(STARTING):
        return not any(isinstance(at, (int, float)) and now - at < starting_s for at in record.values())
    at = record.get("at")
    return not (isinstance(at, (int, float)) and isinstance(record.get("pool"), str) and now - at <= STALE_S)


def read_grants(value: Any, now: float, fresh_s: float) -> dict[str, int]:
    """The slots the reconciler's last pass granted each pool (its containers and its share of the free
    ones), unless that pass is `fresh_s` old (a reconciler that stopped grants nothing)."""
    if not isinstance(value, dict) or not isinstance(value.get("at"), (int, float)) or now - value["at"] > fresh_s:
        return {}
    return {pool: int(n) for pool, n in dict(value.get("pools") or {}).items()}


class LiveContainers:
    """The ingress's view of the running containers and its admission of requests that would start one:
    while every slot of the deployment is held — by containers running or starting, or granted to a pool
    by the reconciler that has the requests to grow into it — a request to a pool with none is refused
    (503 + Retry-After), never queued behind windows that may last an hour. A request to a running pool
    never waits for the shared state (the reading, at most `ttl_s` old, is renewed in the background);
    one that would start a container is decided on a fresh reading. A cold start let through counts as its pool's container until the pool
    beats (or `starting_s` passed), here at once and, published, in the reconciler and the other ingress
    containers."""

    def __init__(self, store: StateStore, budget: ContainerBudget, starting_s: float, grants_s: float,
                 container: str = "ingress", demand: Callable[[str], int] = lambda pool: 0, ttl_s: float = 2.0,
                 clock: Callable[[], float] = time.time):
        self._store = store
        #: The containers a pool's requests under way at this ingress need (by pool name).
        self._demand = demand
        self.budget = budget
        self._starting_s = starting_s
        self._grants_s = grants_s
        self._key = starting_key(container)
        self._ttl_s = ttl_s
        self._clock = clock
        self._reading_now = Reading()
        self._grants: dict[str, int] = {}
        self._read_at: float | None = None
        self._starting: dict[str, float] = {}  # pool name → when this ingress let its cold start through
        self._reading: asyncio.Task[None] | None = None
        self._publishing: asyncio.Task[None] | None = None
        self._unpublished = False

    async def running(self) -> dict[str, int]:
        """Containers by pool name: beating, and cold starts let through whose containers do not beat yet."""
        await self._fresh()
        return self._containers()

    async def admit(self, pool: PoolKey) -> None:
        """Let a request to `pool` through, or refuse it (`Overloaded`) when it would start a container
        beyond the deployment's cap. From the last reading to the count of a cold start let through
        nothing waits: admissions are decided one at a time."""
        name = pool_name(pool)
        if self._containers().get(name):
            self._renew()  # in the background: a running pool's request never waits for it
        else:
            await self._fresh()
        if self._containers().get(name):  # running or starting: no new container
            return
        held = self._counts(name)
        if not held.get(name) and not self.budget.admits(name, held):  # (a slot granted to it is its own)
            raise Overloaded(
                f"{pool.experiment_id}: all {self.budget.total} containers of the deployment (MODAL_MAX_CONTAINERS) "
                f"serve other experiments inside their windows; retry in {RETRY_AFTER_S:g}s", retry_after_s=RETRY_AFTER_S)
        self._starting[name] = self._clock()
        self._publish()

    def _containers(self) -> dict[str, int]:
        """Containers by pool: beating, or starting (this ingress's own cold starts until their pool beats)."""
        now, beating = self._clock(), self._reading_now.beating
        self._starting = {p: at for p, at in self._starting.items() if not beating.get(p) and now - at < self._starting_s}
        return {**self._reading_now.running(), **{p: 1 for p in self._starting if p not in beating}}

    def _counts(self, asking: str | None = None) -> dict[str, int]:
        """The slots each pool holds: its containers running or starting, and of the slots the reconciler
        granted it to grow into, those its requests under way here need — all of them for the `asking`
        pool (a slot granted to a pool with nothing running is its cold start's)."""
        held = self._containers()
        for pool, granted in self._grants.items():
            held[pool] = max(held.get(pool, 0), granted if pool == asking else min(granted, self._demand(pool)))
        return held
    async def _fresh(self) -> None:
        """A reading at most `ttl_s` old, waited for at most READ_TIMEOUT_S (then the last one holds)."""
        reading = self._renew()
        if reading is not None:
            try:
                await asyncio.wait_for(asyncio.shield(reading), READ_TIMEOUT_S)
            except TimeoutError:
                log.warning("the running containers were not read within %gs: the last reading holds", READ_TIMEOUT_S)

    def _renew(self) -> asyncio.Task[None] | None:
        """The reading under way, started when the last one is `ttl_s` old; None while it is recent."""
        if self._reading is None or self._reading.done():
            if self._read_at is not None and self._clock() - self._read_at < self._ttl_s:
                return None
            self._reading = asyncio.get_running_loop().create_task(self._read())
        return self._reading

    async def _read(self) -> None:
        now = self._clock()
        try:
            keys = await self._store.keys()
            self._reading_now = await running_containers(self._store, keys, now, self._starting_s, skip=self._key)
            self._grants = read_grants(await self._store.get(GRANTS) if GRANTS in keys else None, now, self._grants_s)
        except Exception as exc:  # the shared state a moment away: the last reading holds until the next try
            log.warning("reading the running containers failed: %s: %s", type(exc).__name__, exc)
        finally:
            self._read_at = now  # a failed reading is tried again `ttl_s` later, not by every request

    def _publish(self) -> None:
        """This ingress's cold starts under way, written under its own key (the latest list last)."""
        self._unpublished = True
        if self._publishing is None or self._publishing.done():
            self._publishing = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self._unpublished:
            self._unpublished = False
            try:
                await self._store.put(self._key, dict(self._starting))
            except Exception as exc:  # the next cold start publishes the list again
                log.warning("publishing this ingress's cold starts failed: %s: %s", type(exc).__name__, exc)


def per_experiment(running: dict[str, int]) -> dict[str, int]:
    """Containers by experiment (every pool of it), from counts by pool name."""
    counts: dict[str, int] = {}
    for name, n in running.items():
        counts[experiment_of(name)] = counts.get(experiment_of(name), 0) + n
    return counts
