"""Per-experiment request activity, the only input the keep-warm policy needs.

Why this module exists: the scaledown decision for experiment E depends on when E's requests
arrived. The tracker records arrivals and completions per experiment in O(1) amortized time,
answers "latest request", "the one before it" and "requests in the last activity window", keeps
whole-process statistics, and forgets an experiment once it has been idle longer than it can matter
(so memory stays bounded however many experiments come and go). Time comes from an injected clock,
so tests and the simulator drive it; it is thread-safe because HTTP workers share one tracker.

For a learning policy the tracker also keeps each experiment's idle-gap history (`LearnedGaps`,
core.keepwarm.histogram) and hands the policy an immutable view of what was learned: the policy
never writes into a snapshot. What is remembered of one experiment, and how each kind of news
changes it, is `ExperimentRecord`'s (core.keepwarm.experiment_record); the tracker finds, locks and
forgets records.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from core.keepwarm.experiment_record import ExperimentActivity, ExperimentRecord
from core.keepwarm.histogram import Learner
from core.keepwarm.shared_activity import ArrivalBatch, DurableActivity

__all__ = ["ActivityStats", "ActivityTracker", "Clock", "ExperimentActivity", "emulated_clock"]

Clock = Callable[[], float]


def emulated_clock(time_scale: float, source: Clock = time.monotonic) -> Clock:
    """`source` (a monotonic clock unless told; `time.time` where another process must read the same
    times) running `time_scale` times faster: with it, core's policy sees emulated seconds."""
    if time_scale == 1:
        return source
    return lambda: source() * time_scale


@dataclass(frozen=True)
class ActivityStats:
    """Whole-process statistics."""

    total_requests: int
    total_completions: int
    tracked_experiments: int
    forgotten_experiments: int
    in_flight: int


class ActivityTracker:
    """Thread-safe per-experiment activity with bounded memory and an injectable clock."""

    def __init__(self, activity_window_s: float, retention_s: float | None = None, clock: Clock = time.monotonic,
                 learner: Learner | None = None):
        if activity_window_s <= 0:
            raise ValueError("activity_window_s must be > 0")
        self.activity_window_s = float(activity_window_s)
        #: An experiment idle for longer than this is forgotten; it must cover the longest window a
        #: policy may hold and the activity window, so forgetting never changes a decision.
        self.retention_s = max(float(retention_s or 0.0), self.activity_window_s)
        self._clock = clock
        #: What a learning policy learns from each experiment's idle gaps (None: nothing is learned).
        self.learner = learner
        self._lock = threading.Lock()
        self._experiments: OrderedDict[str, ExperimentRecord] = OrderedDict()  # least recently touched first
        self._total_requests = self._total_completions = self._forgotten = 0

    def record_request(self, experiment_id: str, at: float | None = None) -> ExperimentActivity:
        """Record the arrival of one request and return the experiment's activity right after it."""
        with self._lock:
            now = self._clock() if at is None else at
            state = self._experiments.get(experiment_id)
            first = state is None
            if state is None:
                state = self._experiments[experiment_id] = ExperimentRecord(now, self.activity_window_s, self.learner)
            else:
                self._experiments.move_to_end(experiment_id)
            state.arrive(now, first)
            self._total_requests += 1
            self._forget_idle(now)
            return state.snapshot(experiment_id, now)

    def fold(self, experiment_id: str, batch: ArrivalBatch) -> None:
        """Take in arrivals another process saw (a reconciler folding every ingress's batches); see
        `ExperimentRecord.fold`. Completions of requests this tracker never heard of are ignored."""
        with self._lock:
            state = self._experiments.get(experiment_id)
            first = state is None
            if state is None:
                if not batch.count:
                    return
                state = self._experiments[experiment_id] = ExperimentRecord(
                    batch.first_at, self.activity_window_s, self.learner)
            state.fold(batch, first)
            self._experiments.move_to_end(experiment_id)
            self._total_requests += batch.count

    def absorb(self, record: DurableActivity) -> None:
        """Add an experiment's durable activity to what this tracker saw itself (an ingress starting
        after others learned the experiment's history)."""
        if self.restore(record):
            return
        with self._lock:
            state = self._experiments.get(record.experiment_id)
            if state is not None:
                state.absorb(record)

    def export(self, experiment_id: str) -> DurableActivity | None:
        """What must outlive this process of the experiment's activity (None: nothing remembered)."""
        with self._lock:
            state = self._experiments.get(experiment_id)
            return None if state is None else state.export(experiment_id)

    def restore(self, record: DurableActivity) -> bool:
        """Start from a durable record of an experiment this tracker has not seen yet (True if taken)."""
        with self._lock:
            if record.experiment_id in self._experiments:
                return False
            self._experiments[record.experiment_id] = ExperimentRecord.restored(
                record, self.activity_window_s, self.learner)
            return True

    def record_completion(self, experiment_id: str, at: float | None = None) -> None:
        """Record that one request of the experiment finished (its container may idle from here)."""
        with self._lock:
            now = self._clock() if at is None else at
            state = self._experiments.get(experiment_id)
            if state is None or not state.complete(now):
                return
            self._experiments.move_to_end(experiment_id)
            self._total_completions += 1

    def record_cold_start(self, experiment_id: str, seconds: float) -> None:
        """Record a measured cold start (real seconds: `ExperimentRecord.cold_started`)."""
        with self._lock:
            state = self._experiments.get(experiment_id)
            if state is not None:
                state.cold_started(seconds)

    def remembered(self) -> frozenset[str]:  # the ids remembered now: a snapshot without its activities
        with self._lock:
            return frozenset(self._experiments)

    def snapshot(self) -> list[ExperimentActivity]:
        """Every remembered experiment's activity now, most recently active last."""
        with self._lock:
            now = self._clock()
            self._forget_idle(now)
            return [s.snapshot(e, now) for e, s in self._experiments.items()]

    def stats(self) -> ActivityStats:
        with self._lock:
            return ActivityStats(total_requests=self._total_requests, total_completions=self._total_completions,
                                 tracked_experiments=len(self._experiments), forgotten_experiments=self._forgotten,
                                 in_flight=sum(s.in_flight for s in self._experiments.values()))

    def _forget_idle(self, now: float) -> None:
        """Forget experiments untouched for `retention_s` (lock held)."""
        self._forgotten += _forget_untouched(self._experiments, now, now - self.retention_s)


def _forget_untouched(experiments: OrderedDict[str, ExperimentRecord], now: float, horizon: float) -> int:
    """Drop the records (least recently touched first) untouched since `horizon`; one still busy is kept
    and looked at again later. Returns how many were dropped."""
    examined, forgotten, limit = 0, 0, len(experiments)
    while experiments and examined < limit:
        experiment_id, state = next(iter(experiments.items()))
        if state.touched > horizon:
            break
        examined += 1
        if state.in_flight:  # still busy: keep it, look again later
            state.touched = now
            experiments.move_to_end(experiment_id)
            continue
        del experiments[experiment_id]
        forgotten += 1
    return forgotten
