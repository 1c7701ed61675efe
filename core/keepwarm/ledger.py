"""The cost ledger: container-seconds per experiment, by what each container was doing.

Why this module exists: hybrid-serve trades idle GPU money against cold starts, experiment by
experiment, and an operator can only judge that trade if both sides are counted where they happen.
A backend reports each container's lifecycle — started (a cold start begins, for a request or as a
pre-warm), ready (its model is loaded), a request started or finished on it, stopped — and the ledger
turns those facts into seconds in four states:

- `cold_start`: started, model not loaded yet;
- `busy`: serving at least one request;
- `warm_idle`: loaded and idle, kept by its window;
- `prewarmed`: loaded and idle before its first request, having been started ahead of traffic.

Seconds are kept in one-minute buckets (for "the last hour" and "today") and as totals since the
ledger started; a container still running counts up to the moment the ledger is read. The clock is
injected, so tests and the simulator drive it; `UsageRecord` is the JSON form a controller that runs
elsewhere (a Ray policy, a Modal container) publishes and an ingress reads back.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Callable, Iterable

#: One bucket of the minute series (seconds).
BUCKET_S = 60
#: Buckets older than this are dropped (a day and a margin: "today" needs at most 24 hours).
KEEP_S = 26 * 3600


class ContainerState(StrEnum):
    COLD_START = "cold_start"
    BUSY = "busy"
    WARM_IDLE = "warm_idle"
    PREWARMED = "prewarmed"


STATES: tuple[ContainerState, ...] = tuple(ContainerState)


def _zero() -> dict[ContainerState, float]:
    return {state: 0.0 for state in STATES}


@dataclass
class UsageRecord:
    """One experiment's container-seconds: since the ledger started (`total`) and per minute (`minutes`:
    the minute's index since the epoch → seconds by state), up to `as_of`."""

    experiment_id: str
    as_of: float
    total: dict[ContainerState, float] = field(default_factory=_zero)
    minutes: dict[int, dict[ContainerState, float]] = field(default_factory=dict)
    #: Containers running at `as_of`.
    containers: int = 0

    def add(self, state: ContainerState, start: float, end: float) -> None:
        """Count [start, end) in `state`, split over the minutes it spans."""
        if not end > start or not math.isfinite(end - start):  # a non-finite time from a report: nothing
            return
        self.total[state] += end - start
        t = max(start, end - KEEP_S)  # older minutes would be pruned anyway (and a bad start costs no loop)
        while t < end:
            minute = int(t // BUCKET_S)
            cut = min(end, (minute + 1) * BUCKET_S)
            self.minutes.setdefault(minute, _zero())[state] += cut - t
            t = cut

    def between(self, start: float, end: float) -> dict[ContainerState, float]:
        """Seconds by state within [start, end) (to the minute: a partly covered minute counts in full
        for `start`'s minute, and up to `as_of` for the last)."""
        first, last = int(start // BUCKET_S), int(end // BUCKET_S)
        out = _zero()
        for minute, seconds in self.minutes.items():
            if first <= minute <= last:
                for state, value in seconds.items():
                    out[state] += value
        return out

    def copy(self, as_of: float | None = None) -> "UsageRecord":
        return UsageRecord(self.experiment_id, self.as_of if as_of is None else as_of, dict(self.total),
                           {m: dict(s) for m, s in self.minutes.items()}, self.containers)

    def prune(self, now: float) -> None:
        oldest = int((now - KEEP_S) // BUCKET_S)
        for minute in [m for m in self.minutes if m < oldest]:
            del self.minutes[minute]

    def to_json(self) -> dict[str, Any]:
        return {"experiment_id": self.experiment_id, "as_of": self.as_of, "containers": self.containers,
                "total": {s.value: v for s, v in self.total.items()},
                "minutes": {str(m): {s.value: v for s, v in secs.items() if v} for m, secs in self.minutes.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "UsageRecord":
        record = cls(str(data["experiment_id"]), float(data["as_of"]), containers=int(data.get("containers", 0)))
        for state, value in data.get("total", {}).items():
            record.total[ContainerState(state)] = float(value)
        for minute, secs in data.get("minutes", {}).items():
            bucket = record.minutes.setdefault(int(minute), _zero())
            for state, value in secs.items():
                bucket[ContainerState(state)] = float(value)
        return record


@dataclass
class _Container:
    experiment_id: str
    state: ContainerState
    since: float
    in_flight: int = 0
    served: bool = False
    prewarm: bool = False
    busy_seen: float = 0.0  # `sampled`: the container's busy seconds counted so far

    def idle_state(self) -> ContainerState:
        return ContainerState.PREWARMED if self.prewarm and not self.served else ContainerState.WARM_IDLE


class CostLedger:
    """Container lifecycles in, seconds by experiment and state out. Thread-safe; `clock` is wall time.

    Every method takes the container's id (unique among running containers) and, optionally, when it
    happened (`at`, default: now). Facts about a container the ledger does not know are ignored — a
    request on a container started before the ledger, a stop reported twice — never an error."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._containers: dict[str, _Container] = {}
        self._records: dict[str, UsageRecord] = {}

    # --- lifecycle -----------------------------------------------------------------------------
    def started(self, experiment_id: str, container: str, prewarm: bool = False, at: float | None = None, busy_seen: float = 0.0) -> None:
        """A container began its cold start (`prewarm`: ahead of traffic; `busy_seen`: busy seconds counted already)."""
        at = self.now(at)
        with self._lock:
            self._close(container, at)
            self._record(experiment_id)
            self._containers[container] = _Container(experiment_id, ContainerState.COLD_START, at, prewarm=prewarm, busy_seen=busy_seen)

    def ready(self, container: str, at: float | None = None) -> None:
        """Its model is loaded: busy if requests wait for it, else idle."""
        self._move(container, self.now(at), lambda c: ContainerState.BUSY if c.in_flight else c.idle_state())

    def request_started(self, container: str, at: float | None = None) -> None:
        def start(c: _Container) -> ContainerState:
            c.in_flight += 1
            c.served = True
            return c.state if c.state is ContainerState.COLD_START else ContainerState.BUSY
        self._move(container, self.now(at), start)

    def request_finished(self, container: str, at: float | None = None) -> None:
        def finish(c: _Container) -> ContainerState:
            c.in_flight = max(0, c.in_flight - 1)
            if c.state is ContainerState.COLD_START or c.in_flight:
                return c.state
            return c.idle_state()
        self._move(container, self.now(at), finish)

    def sampled(self, container: str, busy_s: float, in_flight: int, served: bool, at: float | None = None) -> None:
        """For a controller that samples its containers instead of seeing each request: the container
        had been busy `busy_s` seconds in all (its own count) and runs `in_flight` requests now. The
        busy seconds not counted yet are counted at the end of the interval (what does not fit in it — a
        report newer than the last sample's — carries to the next), the rest as idle."""
        at = self.now(at)
        with self._lock:
            c = self._containers.get(container)
            if c is None or c.state is ContainerState.COLD_START or at <= c.since:
                return
            busy = min(max(0.0, busy_s - c.busy_seen), at - c.since)
            record = self._record(c.experiment_id)
            record.add(c.idle_state(), c.since, at - busy)
            record.add(ContainerState.BUSY, at - busy, at)
            c.busy_seen, c.since, c.in_flight = c.busy_seen + busy, at, in_flight
            c.served = c.served or served or busy > 0
            c.state = ContainerState.BUSY if in_flight else c.idle_state()

    def restore(self, record: UsageRecord) -> None:
        """Carry on from a record published before (a controller that restarted): its seconds so far."""
        with self._lock:
            self._records[record.experiment_id] = replace(record.copy(), containers=0)

    def stopped(self, container: str, at: float | None = None) -> None:
        with self._lock:
            self._close(container, self.now(at))

    def stop_all(self, at: float | None = None) -> None:
        for container in list(self._containers):
            self.stopped(container, self.now(at))

    # --- reading (records: every experiment up to `now`, or `only` a page of them: each snapshot costs) ---
    def record(self, experiment_id: str, now: float | None = None) -> UsageRecord | None:
        """The experiment's usage up to `now` (running containers counted to then); None: never seen."""
        return self.records(now, [experiment_id]).get(experiment_id)

    def records(self, now: float | None = None, only: Iterable[str] | None = None) -> dict[str, UsageRecord]:
        with self._lock:
            now, chosen = self.now(now), self._records if only is None else {e: self._records[e] for e in only if e in self._records}
            running = _by_experiment(self._containers.values())  # grouped once: not experiments × containers
            return {e: self._snapshot(r, now, running.get(e, ())) for e, r in chosen.items()}

    def now(self, at: float | None = None) -> float:
        """`at`, or when None the ledger's clock now (the clock every `at` is given in)."""
        return self._clock() if at is None else at

    # --- internals -----------------------------------------------------------------------------
    def _record(self, experiment_id: str) -> UsageRecord:
        record = self._records.get(experiment_id)
        if record is None:
            record = self._records[experiment_id] = UsageRecord(experiment_id, self._clock())
        return record

    def _move(self, container: str, at: float, change: Callable[[_Container], ContainerState]) -> None:
        with self._lock:
            c = self._containers.get(container)
            if c is None:
                return
            state = change(c)
            if state is not c.state:
                self._record(c.experiment_id).add(c.state, c.since, at)
                c.state, c.since = state, max(c.since, at)

    def _close(self, container: str, at: float) -> None:
        c = self._containers.pop(container, None)
        if c is not None:
            record = self._record(c.experiment_id)
            record.add(c.state, c.since, at)
            record.prune(at)

    def _snapshot(self, base: UsageRecord, now: float, running: Iterable[_Container]) -> UsageRecord:
        copy = base.copy(as_of=now)
        for c in running:
            copy.add(c.state, c.since, now)
            copy.containers += 1
        copy.prune(now)
        return copy


def _by_experiment(containers: Iterable[_Container]) -> dict[str, list[_Container]]:
    out: dict[str, list[_Container]] = {}
    for c in containers:
        out.setdefault(c.experiment_id, []).append(c)
    return out
