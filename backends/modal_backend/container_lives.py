"""Modal containers' lives in the cost ledger: each model container counts its own, and publishes it to
the shared state; the ingress adds them up.

Why this module exists: on Modal no process sees every container — the reconciler only steers the
autoscalers, and the client cannot list a pool's containers. Each model container is the one witness
of its own life: it started (its process's start; with a memory snapshot, its restore), its model
was ready, its requests ran (busy), it stopped (`@modal.exit`). It keeps a one-container cost ledger
and writes its `UsageRecord` under `usage/<experiment>/<container>` — one writer per key, as the
shared state requires — when its first request ends, at most every `PUBLISH_S` while it serves, and
when it stops. `UsageReader` (the ingress) sums an experiment's containers' records and the total the
reconciler folded its stopped containers into (usage_folding.py).

A container publishes while it serves and when it stops, not while it idles: an idle container's
time shows when it next serves or stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator

from backends.modal_backend.state_store import StateStore
from core.keepwarm.cost_report import summed
from core.keepwarm.ledger import CostLedger, UsageRecord

log = logging.getLogger("hybrid_serve.modal.container_lives")

USAGE = "usage/"
#: A serving container publishes its record at most this often (seconds).
PUBLISH_S = 10.0


def usage_key(experiment_id: str, container: str) -> str:
    return f"{USAGE}{experiment_id}/{container}"


def container_id() -> str:
    """Modal's id of this container (its task), or a unique one outside Modal."""
    return os.environ.get("MODAL_TASK_ID") or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def process_started_at() -> float | None:
    """When this process started (Linux: its start in clock ticks after boot); None if unknown."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as boot:
            booted = next(int(line.split()[1]) for line in boot if line.startswith("btime "))
        return booted + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


class ContainerLife:
    """This container's life in a one-container ledger, published under its own key."""

    def __init__(self, experiment_id: str, store: StateStore, started_at: float, clock: Callable[[], float] = time.time,
                 container: str | None = None):
        self.experiment_id = experiment_id
        self.store = store
        self.container = container or container_id()
        self.ledger = CostLedger(clock)
        self._clock = clock
        self._published_at: float | None = None
        self.ledger.started(experiment_id, self.container, at=min(started_at, clock()))

    def ready(self) -> None:
        self.ledger.ready(self.container)

    @contextmanager
    def serving(self) -> Iterator[None]:
        self.ledger.request_started(self.container)
        try:
            yield
        finally:
            self.ledger.request_finished(self.container)

    async def publish_due(self) -> None:
        """After a request: publish if the last publication is `PUBLISH_S` old (or there was none)."""
        if self._published_at is None or self._clock() - self._published_at >= PUBLISH_S:
            await self.publish()

    async def stopped(self) -> None:
        self.ledger.stopped(self.container)
        await self.publish()

    async def publish(self) -> None:
        record = self.ledger.record(self.experiment_id)
        if record is None:
            return
        self._published_at = self._clock()
        try:
            await self.store.put(usage_key(self.experiment_id, self.container), record.to_json())
        except Exception as exc:  # the shared state unreachable a moment: the next publication carries it
            log.warning("could not publish this container's ledger record: %s: %s", type(exc).__name__, exc)


class UsageReader:
    """Every experiment's containers' records summed (the ingress's `usage`), read at most every `ttl_s`.
    A stopped container's record never changes again: it is read once. A record that cannot be read
    (the Dict a moment away, a damaged value) is left out of this reading only."""

    def __init__(self, store: StateStore, ttl_s: float = 5.0, clock: Callable[[], float] = time.time,
                 timeout_s: float = 10.0):
        self.store = store
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._read_at: float | None = None
        self._usage: dict[str, UsageRecord] = {}
        self._final: dict[str, UsageRecord] = {}  # stopped containers' records, by key
        self._usage_live: dict[str, UsageRecord] = {}  # running containers' latest records, by key
        self._lock = asyncio.Lock()

    async def usage(self) -> dict[str, UsageRecord]:
        async with self._lock:  # one reading at a time; the others take its result
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self.ttl_s:
                self._usage = await asyncio.wait_for(self._read(), self.timeout_s)
                self._read_at = now
            return self._usage

    async def _read(self) -> dict[str, UsageRecord]:
        from backends.modal_backend.usage_folding import read_totals  # the fold's module imports this one

        listed = await self.store.keys()
        totals = await read_totals(self.store, listed)
        folded = {key for total in totals.values() for key in total.folded_keys()}
        keys = [k for k in listed if k.startswith(USAGE) and k not in folded]  # in a total already: once
        fresh = [k for k in keys if k not in self._final]
        live = {k: v for k, v in self._usage_live.items() if k in keys}  # a record that fails now: the last read
        for key, record in zip(fresh, await asyncio.gather(*(self._get(k) for k in fresh))):
            if record is not None and record.containers == 0:
                self._final[key] = record
                live.pop(key, None)
            elif record is not None:
                live[key] = record
        self._usage_live = live
        records = [self._final[k] if k in self._final else self._usage_live.get(k) for k in keys]
        by_experiment: dict[str, list[UsageRecord]] = {}
        for record in records + [t.record for t in totals.values()]:
            if record is not None:
                by_experiment.setdefault(record.experiment_id, []).append(record)
        return {e: summed(rs, max(r.as_of for r in rs), e) for e, rs in by_experiment.items()}

    async def _get(self, key: str) -> UsageRecord | None:
        try:
            value = await self.store.get(key)
            return None if value is None else UsageRecord.from_json(value)
        except Exception as exc:
            log.warning("could not read the ledger record %s: %s: %s", key, type(exc).__name__, exc)
            return None
