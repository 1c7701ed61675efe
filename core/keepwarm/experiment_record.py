"""What is remembered of one experiment's requests, and the snapshot a policy decides on.

Why this module exists: an experiment's activity changes five ways — a request arrives here, one
completes, a container's cold start is measured, another process's arrivals are folded in (Modal's
reconciler), a durable record from an earlier process is taken in — and each must keep the latest two
arrivals, the count in the activity window, the learned idle and burst gaps and the measured cold start
consistent, whatever order they come in. `ExperimentRecord` is that
one experiment's state and those rules; the tracker only finds records, locks and forgets them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from core.keepwarm.burst_levels import SPELL_BREAK_S, BurstLevels
from core.keepwarm.cold_start_time import measured, merged
from core.keepwarm.histogram import IdleHistogram, Learned, LearnedGaps, Learner
from core.keepwarm.shared_activity import ArrivalBatch, DurableActivity
from core.keepwarm.window_count import WindowCount


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
    #: The most requests in flight at once in its latest spell (core.keepwarm.burst_levels; 0: not kept,
    #: no learner): how many containers a pre-warm brings back.
    width: int = 0
    #: Its measured cold start in seconds of real time (core.keepwarm.cold_start_time; None: none measured).
    cold_start_s: float | None = None

    @property
    def idle_s(self) -> float:
        """Seconds since the experiment was last busy (0 while a request is in flight)."""
        if self.in_flight:
            return 0.0
        return max(0.0, self.now - max(self.last_request, self.last_completion or self.last_request))


def _histogram(data: bytes | None) -> IdleHistogram | None:
    return None if data is None else IdleHistogram.from_bytes(data)


def _latest_two(*times: float | None) -> tuple[float, float | None]:
    """The latest and the one before it among the given arrival times."""
    latest = sorted({t for t in times if t is not None})
    return latest[-1], (latest[-2] if len(latest) > 1 else None)


def _learn_from_batch(record: "ExperimentRecord", batch: ArrivalBatch) -> None:
    """What a batch teaches besides its arrivals: the idle and burst gaps among them, and the cold starts
    its process measured."""
    if record.gaps is not None:
        for minute, count in batch.gap_minutes.items():
            record.gaps.add(minute * 60.0, count)
        for minute, count in batch.burst_gap_minutes.items():
            record.gaps.add_burst(minute * 60.0, count)
    if batch.cold_start_s is not None:
        record.cold_start_s = measured(record.cold_start_s, batch.cold_start_s)


class ExperimentRecord:
    """One experiment's activity (not thread-safe: its tracker holds the lock)."""

    __slots__ = ("last_request", "previous_request", "total_requests", "in_flight", "last_completion", "touched",
                 "in_window", "gaps", "levels", "cold_start_s")

    def __init__(self, first_request: float, window_s: float, learner: Learner | None = None,
                 gaps: IdleHistogram | None = None, bursts: IdleHistogram | None = None):
        self.last_request = first_request
        self.previous_request: float | None = None
        self.last_completion: float | None = None
        self.total_requests = self.in_flight = 0
        #: When it last changed: an experiment untouched for the tracker's retention is forgotten.
        self.touched = first_request
        self.in_window = WindowCount(window_s)
        self.gaps = None if learner is None else LearnedGaps(learner, gaps, bursts)
        #: Requests in flight by level, for the burst gaps a learner learns (None: nothing is learned).
        self.levels = None if learner is None else BurstLevels(learner.per_container)
        self.cold_start_s: float | None = None

    @classmethod
    def restored(cls, record: DurableActivity, window_s: float, learner: Learner | None) -> "ExperimentRecord":
        """The record a durable one describes (an experiment this process has not seen yet)."""
        state = cls(record.last_request, window_s, learner, _histogram(record.idle_gaps), _histogram(record.burst_gaps))
        state.previous_request, state.last_completion = record.previous_request, record.last_completion
        state.total_requests, state.cold_start_s = record.total_requests, record.cold_start_s
        if state.levels is not None:
            state.levels.widen(record.width)
        state.touched = max(record.last_request, record.last_completion or 0.0)
        return state

    def arrive(self, now: float, first: bool) -> None:
        """A request arrived at `now` (`first`: the one this record was made for)."""
        if not first:
            if self.gaps is not None:
                self.gaps.add(max(0.0, now - self.last_request))
            self.previous_request = self.last_request
            self.last_request = max(self.last_request, now)
        self.total_requests += 1
        self.in_flight += 1
        self.touched = now
        self.in_window.add(now)
        if self.levels is not None and (burst_gap := self.levels.arrive(now)) is not None:
            self.gaps.add_burst(burst_gap)  # type: ignore[union-attr]  # learning: both or neither

    def complete(self, now: float) -> bool:
        """One of its requests finished at `now`; False when none was in flight."""
        if self.in_flight == 0:
            return False
        self.in_flight -= 1
        if self.levels is not None:
            self.levels.complete(now)
        self.last_completion = self.touched = now
        return True

    def cold_started(self, seconds: float) -> None:  # a container's first answer, `seconds` after its request arrived
        self.cold_start_s = measured(self.cold_start_s, seconds)

    def fold(self, batch: ArrivalBatch, first: bool) -> None:
        """Take in arrivals another process saw. A batch older than what is known (a late publication)
        still counts, without inventing the gap to it; a batch of completions only (`count` 0) moves
        only the latest completion; the batch's width widens the experiment's. `first`: this record was
        made for the batch."""
        if self.levels is not None and batch.width:  # the publisher's width: its latest spell's or the one before
            latest = max(self.last_request, self.last_completion or self.last_request)
            self.levels.widen(batch.width, new_spell=not first and batch.first_at - latest >= SPELL_BREAK_S)
        if batch.count and first:
            self.last_request, self.previous_request = batch.last_at, batch.previous_at
        elif batch.count and batch.first_at >= self.last_request:
            if self.gaps is not None:
                self.gaps.add(batch.first_at - self.last_request)
            self.previous_request = batch.previous_at if batch.count > 1 else self.last_request
            self.last_request = batch.last_at
        elif batch.count:  # out of order: keep the two latest arrivals of both
            self.last_request, self.previous_request = _latest_two(
                self.previous_request, self.last_request, batch.previous_at, batch.last_at)
        _learn_from_batch(self, batch)
        if batch.finished_at is not None:
            self.last_completion = max(self.last_completion or batch.finished_at, batch.finished_at)
        self.total_requests += batch.count
        self.touched = max(self.touched, batch.last_at, batch.finished_at or 0.0)
        if batch.count:
            self.in_window.add(batch.last_at, batch.count)

    def absorb(self, record: DurableActivity) -> None:
        """Add the experiment's durable activity to what this process saw itself."""
        self.last_request, self.previous_request = _latest_two(
            self.previous_request, self.last_request, record.previous_request, record.last_request)
        if record.last_completion is not None:
            self.last_completion = max(self.last_completion or record.last_completion, record.last_completion)
        self.total_requests += record.total_requests
        self.cold_start_s = merged(self.cold_start_s, record.cold_start_s)
        if self.levels is not None:
            self.levels.widen(record.width)
        if self.gaps is not None and record.idle_gaps is not None:
            self.gaps.merge(IdleHistogram.from_bytes(record.idle_gaps), _histogram(record.burst_gaps))

    def export(self, experiment_id: str) -> DurableActivity:
        """What must outlive this process of the experiment's activity."""
        gaps = self.gaps
        return DurableActivity(experiment_id, self.last_request, self.previous_request, self.last_completion,
                               self.total_requests, None if gaps is None else gaps.histogram.to_bytes(),
                               None if gaps is None or gaps.bursts is None else gaps.bursts.to_bytes(),
                               0 if self.levels is None else self.levels.width, self.cold_start_s)

    def snapshot(self, experiment_id: str, now: float) -> ExperimentActivity:
        return ExperimentActivity(
            experiment_id=experiment_id,
            now=now,
            last_request=self.last_request,
            previous_request=self.previous_request,
            requests_in_window=self.in_window.total(now),
            total_requests=self.total_requests,
            in_flight=self.in_flight,
            last_completion=self.last_completion,
            learned=None if self.gaps is None else self.gaps.learned(self.cold_start_s),
            width=0 if self.levels is None else self.levels.width,
            cold_start_s=self.cold_start_s,
        )


def arrive_run(record: ExperimentRecord, time_of: Callable[[int], float], lo: int, hi: int) -> None:
    """Requests arrived at `time_of(lo)` .. `time_of(hi - 1)` (increasing, each under a minute after
    the one before, the first under a minute after the latest known): what `arrive` makes of them one
    by one, at once — but for the burst levels, which the caller feeds one by one. A replay's minute
    run; the gaps' summed length may differ from one by one in its last bits."""
    count, last = hi - lo, time_of(hi - 1)
    if record.gaps is not None:
        record.gaps.add((last - record.last_request) / count, count)
    record.previous_request = time_of(hi - 2) if count > 1 else record.last_request
    record.last_request = record.touched = last
    record.total_requests += count
    record.in_flight += count
    record.in_window.add_run(time_of, lo, hi)


def complete_run(record: ExperimentRecord, count: int, last_at: float) -> None:
    """`count` of its requests finished, the last at `last_at` (all arrived; the burst levels, as for
    `arrive_run`, the caller's)."""
    record.in_flight -= count
    record.last_completion = last_at if record.last_completion is None else max(record.last_completion, last_at)
    record.touched = max(record.touched, last_at)
