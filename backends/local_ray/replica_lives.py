"""A pool's replicas in the cost ledger, as the scaling policy sees them tick by tick.

Why this module exists: on Ray the one place that sees every replica of a pool start, run and stop is
the pool's autoscaling policy in Serve's controller (every control-loop tick, a tenth of a second).
`ReplicaLives` turns each tick's view — the replicas running, their reports (ready time, busy seconds
in all, requests in flight), the replicas the decision keeps — into core's ledger facts: a replica's
cold start runs from Ray's start of its actor (else the tick its start was decided) to its model's
ready time; its busy seconds are its own count; a replica the policy started as a pre-warm is idle as
`prewarmed` until its first request; it stops on the tick it leaves the running set. The record is
published to the GCS every `PUBLISH_S` (and on each stop) for the ingress to show.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from backends.local_ray.usage_store import UsageStore
from core.keepwarm.ledger import CostLedger

if TYPE_CHECKING:  # the policy (scaling.py) imports this module
    from backends.local_ray.scaling import ReplicaReport

log = logging.getLogger("hybrid_serve.ray.replica_lives")

#: The policy publishes its experiment's ledger record at least this often while replicas run (seconds).
PUBLISH_S = 2.0


class ReplicaLives:
    def __init__(self, experiment_id: str, store: UsageStore | None, clock: Callable[[], float]):
        self.experiment_id = experiment_id
        self.store = store
        self.ledger = CostLedger(clock)
        #: (decided at, pre-warm) of each replica starting, oldest first: the next to run takes the first.
        self._starting: list[tuple[float, bool]] = []
        self._running: set[str] = set()
        #: Replicas started for a waiting request, model ready (at), that request not yet delivered: their
        #: cold start lasts until it is (Serve routes a queued request only once it sees the replica run).
        self._awaited: dict[str, float] = {}
        self._published_at: float | None = None
        #: A restarted controller's record was counted up to here: replicas running since are counted from it.
        self._resumed_at: float | None = None
        #: The record published before was read (or there is no store): only then is one published, so
        #: that a GCS unreachable at the start never overwrites the experiment's history with a new one.
        self._loaded = store is None
        if store is not None:
            self._load()

    def _load(self) -> None:
        assert self.store is not None
        try:
            saved = self.store.read(self.experiment_id)
        except Exception:  # the GCS unreachable a moment: read again on the next tick
            log.exception("could not read %s's ledger record", self.experiment_id)
            return
        if saved is not None:  # a controller that restarted carries on
            self.ledger.restore(saved)
            self._resumed_at = saved.as_of
        self._loaded = True

    def observe(self, now: float, running: list[str], reports: list["ReplicaReport"], target: int, prewarm: bool,
                waiting: bool = False) -> None:
        """One tick: `running` replica ids, their `reports`, the replicas the pool is given now (`target`),
        whether this tick's decision starts a pre-warm, and whether requests wait (Serve's load figure)."""
        if not self._loaded:
            self._load()
        by_id = {r.replica: r for r in reports}
        stopped = self._running - set(running)
        for replica in running:  # a replica joins the ledger with its first report (its start and ready times)
            report = by_id.get(replica)
            if replica not in self._running and report is not None:
                self._join(replica, report, now, waiting)
        for replica in stopped:
            self.ledger.stopped(replica, at=now)
            self._awaited.pop(replica, None)
        for replica, ready in list(self._awaited.items()):
            report = by_id.get(replica)
            if report is not None and (report.served or (report.busy_s or 0) > 0):  # its first request came
                self.ledger.ready(replica, at=max(ready, now - (report.busy_s or 0.0)))
                del self._awaited[replica]
            elif not waiting:  # nothing waits (the request went elsewhere, or gave up): idle since ready
                self.ledger.ready(replica, at=ready)
                del self._awaited[replica]
        self._running = (self._running - stopped) | set(by_id) & set(running)
        for report in reports:
            if report.busy_s is not None and report.replica in self._running:
                self.ledger.sampled(report.replica, report.busy_s, report.in_flight, report.served, at=now)
        starting = max(0, target - len(self._running))  # a replica running but not reported yet holds its slot
        while len(self._starting) < starting:
            self._starting.append((now, prewarm))
            prewarm = False
        del self._starting[starting:]
        if stopped or (self._running and (self._published_at is None or now - self._published_at >= PUBLISH_S)):
            self.publish(now)

    def _join(self, replica: str, report: "ReplicaReport", now: float, waiting: bool) -> None:
        decided, prewarmed = self._starting.pop(0) if self._starting else (now, False)
        ready = report.ready_at or now
        start = min(report.started_at if report.started_at is not None else decided, ready)  # Ray's actor start
        if self._resumed_at is not None and start < self._resumed_at:  # counted before the restart, busy time too
            start, ready = self._resumed_at, max(ready, self._resumed_at)
            self.ledger.started(self.experiment_id, replica, at=start, busy_seen=report.busy_s or 0.0)
        else:
            self.ledger.started(self.experiment_id, replica, prewarm=prewarmed, at=start)
            if waiting and not prewarmed and not report.served:
                self._awaited[replica] = ready
                return
        self.ledger.ready(replica, at=ready)

    def publish(self, now: float) -> None:
        record = self.ledger.record(self.experiment_id, now)
        if self.store is None or record is None or not self._loaded:
            return
        try:
            self.store.write(record)
            self._published_at = now
        except Exception:
            log.exception("could not publish %s's ledger record", self.experiment_id)
