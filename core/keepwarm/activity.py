"""Per-experiment request activity, the only input the keep-warm policy needs.

Why this module exists: the scaledown decision for experiment E depends on when E's requests
arrived. The tracker records arrivals and completions per experiment in O(1) amortized time,
answers "latest request", "the one before it" and "requests in the last activity window", keeps
whole-process statistics, and forgets an experiment once it has been idle longer than it can matter
(so memory stays bounded however many experiments come and go). Time comes from an injected clock,
so tests and the simulator drive it; it is thread-safe because HTTP workers share one tracker.

For a learning policy the tracker also keeps each experiment's idle-gap history (`LearnedGaps`,
core.keepwarm.histogram) and hands the policy an immutable view of what was learned: the policy
never writes into a snapshot.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

from core.keepwarm.histogram import IdleHistogram, Learned, LearnedGaps, Learner
from core.keepwarm.shared_activity import ArrivalBatch, DurableActivity

Clock = Callable[[], float]


def _latest_two(*times: float | None) -> tuple[float, float | None]:
    """The latest and the one before it among the given arrival times."""
    latest = sorted({t for t in times if t is not None})
    return latest[-1], (latest[-2] if len(latest) > 1 else None)


def emulated_clock(time_scale: float) -> Clock:
    """A monotonic clock running `time_scale` times faster: with it, core's policy sees emulated seconds."""
    if time_scale == 1:
        return time.monotonic
    return lambda: time.monotonic() * time_scale

#: The count of requests in the activity window is kept in this many time buckets per experiment,
#: so an experiment's memory is bounded however high its request rate (count exact to 1/64 window).
BUCKETS_PER_WINDOW = 64


@dataclass(frozen=True)
class ExperimentActivity:
    """A snapshot of one experiment's activity at `now` (times are the tracker clock's)."""

    experiment_id: str
    now: float
    last_request: float
    previous_request: float | None
    requests_in_window: int
    total_requests: int
    in_flight: int
    last_completion: float | None
    #: What the tracker's learner learned from the experiment's idle gaps (None: no learner).
    learned: Learned | None = None

    @property
    def idle_s(self) -> float:
        """Seconds since the experiment was last busy (0 while a request is in flight)."""
        if self.in_flight:
            return 0.0
        return max(0.0, self.now - max(self.last_request, self.last_completion or self.last_request))


@dataclass(frozen=True)
class ActivityStats:
    """Whole-process statistics."""

    total_requests: int
    total_completions: int
    tracked_experiments: int
    forgotten_experiments: int
    in_flight: int


@dataclass
class _State:
    last_request: float
    previous_request: float | None = None
    total_requests: int = 0
    in_flight: int = 0
    last_completion: float | None = None
    touched: float = 0.0
    buckets: deque[list[float | int]] = field(default_factory=deque)  # [bucket_start, count]
    gaps: LearnedGaps | None = None


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
        self._bucket_s = self.activity_window_s / BUCKETS_PER_WINDOW
        self._clock = clock
        #: What a learning policy learns from each experiment's idle gaps (None: nothing is learned).
        self.learner = learner
        self._lock = threading.Lock()
        self._experiments: OrderedDict[str, _State] = OrderedDict()  # least recently touched first
        self._total_requests = 0
        self._total_completions = 0
        self._forgotten = 0

    def record_request(self, experiment_id: str, at: float | None = None) -> ExperimentActivity:
        """Record the arrival of one request and return the experiment's activity right after it."""
        with self._lock:
            now = self._clock() if at is None else at
            state = self._experiments.get(experiment_id)
            if state is None:
                state = self._experiments[experiment_id] = self._new_state(now)
            else:
                if state.gaps is not None:
                    state.gaps.add(max(0.0, now - state.last_request))
                state.previous_request = state.last_request
                state.last_request = max(state.last_request, now)
                self._experiments.move_to_end(experiment_id)
            state.total_requests += 1
            state.in_flight += 1
            state.touched = now
            self._count(state, now)
            self._total_requests += 1
            self._forget_idle(now)
            return self._snapshot(experiment_id, state, now)

    def fold(self, experiment_id: str, batch: ArrivalBatch) -> None:
        """Take in arrivals another process saw (a reconciler folding every ingress's batches). A batch
        older than what is known (a late publication) still counts, without inventing the gap to it;
        a batch of completions only (`count` 0) moves only the latest completion."""
        with self._lock:
            state = self._experiments.get(experiment_id)
            if batch.count and state is None:
                state = self._experiments[experiment_id] = self._new_state(batch.first_at)
                state.last_request, state.previous_request = batch.last_at, batch.previous_at
            elif batch.count and state is not None and batch.first_at >= state.last_request:
                if state.gaps is not None:
                    state.gaps.add(batch.first_at - state.last_request)
                state.previous_request = batch.previous_at if batch.count > 1 else state.last_request
                state.last_request = batch.last_at
            elif batch.count and state is not None:  # out of order: keep the two latest arrivals of both
                state.last_request, state.previous_request = _latest_two(
                    state.previous_request, state.last_request, batch.previous_at, batch.last_at)
            if state is None:
                return  # completions of requests this tracker never heard of
            if state.gaps is not None:
                for minute, count in batch.gap_minutes.items():
                    for _ in range(count):
                        state.gaps.add(minute * 60.0)
            if batch.finished_at is not None:
                state.last_completion = max(state.last_completion or batch.finished_at, batch.finished_at)
            state.total_requests += batch.count
            state.touched = max(state.touched, batch.last_at, batch.finished_at or 0.0)
            self._experiments.move_to_end(experiment_id)
            if batch.count:
                self._count(state, batch.last_at, batch.count)
            self._total_requests += batch.count

    def absorb(self, record: DurableActivity) -> None:
        """Add an experiment's durable activity to what this tracker saw itself (an ingress starting
        after others learned the experiment's history)."""
        if self.restore(record):
            return
        with self._lock:
            state = self._experiments.get(record.experiment_id)
            if state is None:
                return
            state.last_request, state.previous_request = _latest_two(
                state.previous_request, state.last_request, record.previous_request, record.last_request)
            if record.last_completion is not None:
                state.last_completion = max(state.last_completion or record.last_completion, record.last_completion)
            state.total_requests += record.total_requests
            if state.gaps is not None and record.idle_gaps is not None:
                state.gaps.merge(IdleHistogram.from_bytes(record.idle_gaps))

    def export(self, experiment_id: str) -> DurableActivity | None:
        """What must outlive this process of the experiment's activity (None: nothing remembered)."""
        with self._lock:
            state = self._experiments.get(experiment_id)
            if state is None:
                return None
            return DurableActivity(experiment_id, state.last_request, state.previous_request, state.last_completion,
                                   state.total_requests, None if state.gaps is None else state.gaps.histogram.to_bytes())

    def restore(self, record: DurableActivity) -> bool:
        """Start from a durable record of an experiment this tracker has not seen yet (True if taken)."""
        with self._lock:
            if record.experiment_id in self._experiments:
                return False
            state = self._experiments[record.experiment_id] = self._new_state(record.last_request)
            state.previous_request, state.last_completion = record.previous_request, record.last_completion
            state.total_requests = record.total_requests
            state.touched = max(record.last_request, record.last_completion or 0.0)
            if self.learner is not None and record.idle_gaps is not None:
                state.gaps = LearnedGaps(self.learner, IdleHistogram.from_bytes(record.idle_gaps))
            return True

    def record_completion(self, experiment_id: str, at: float | None = None) -> None:
        """Record that one request of the experiment finished (its container may idle from here)."""
        with self._lock:
            now = self._clock() if at is None else at
            state = self._experiments.get(experiment_id)
            if state is None or state.in_flight == 0:
                return
            state.in_flight -= 1
            state.last_completion = now
            state.touched = now
            self._experiments.move_to_end(experiment_id)
            self._total_completions += 1

    def snapshot(self) -> list[ExperimentActivity]:
        """Every remembered experiment's activity now, most recently active last."""
        with self._lock:
            now = self._clock()
            self._forget_idle(now)
            return [self._snapshot(e, s, now) for e, s in self._experiments.items()]

    def stats(self) -> ActivityStats:
        with self._lock:
            return ActivityStats(
                total_requests=self._total_requests,
                total_completions=self._total_completions,
                tracked_experiments=len(self._experiments),
                forgotten_experiments=self._forgotten,
                in_flight=sum(s.in_flight for s in self._experiments.values()),
            )

    # --- internals (lock held) -------------------------------------------------------------------
    def _new_state(self, first_request: float) -> _State:
        gaps = None if self.learner is None else LearnedGaps(self.learner)
        return _State(last_request=first_request, touched=first_request, gaps=gaps)

    def _count(self, state: _State, now: float, requests: int = 1) -> None:
        start = now - (now % self._bucket_s)
        if state.buckets and state.buckets[-1][0] == start:
            state.buckets[-1][1] += requests
        elif not state.buckets or state.buckets[-1][0] < start:
            state.buckets.append([start, requests])
        else:  # an arrival older than the newest bucket (folded from elsewhere): count it there
            state.buckets[-1][1] += requests
        self._expire_buckets(state, now)

    def _expire_buckets(self, state: _State, now: float) -> None:
        while state.buckets and state.buckets[0][0] + self._bucket_s <= now - self.activity_window_s:
            state.buckets.popleft()

    def _forget_idle(self, now: float) -> None:
        horizon = now - self.retention_s
        examined, limit = 0, len(self._experiments)
        while self._experiments and examined < limit:
            experiment_id, state = next(iter(self._experiments.items()))
            if state.touched > horizon:
                break
            examined += 1
            if state.in_flight:  # still busy: keep it, look again later
                state.touched = now
                self._experiments.move_to_end(experiment_id)
                continue
            del self._experiments[experiment_id]
            self._forgotten += 1

    def _snapshot(self, experiment_id: str, state: _State, now: float) -> ExperimentActivity:
        self._expire_buckets(state, now)
        return ExperimentActivity(
            experiment_id=experiment_id,
            now=now,
            last_request=state.last_request,
            previous_request=state.previous_request,
            requests_in_window=int(sum(int(c) for _, c in state.buckets)),
            total_requests=state.total_requests,
            in_flight=state.in_flight,
            last_completion=state.last_completion,
            learned=None if state.gaps is None else state.gaps.learned(),
        )
