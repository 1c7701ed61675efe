"""Each experiment's idle-gap history, and what a learning policy concludes from it.

Why this module exists: learning policies (the adaptive policy, the Shahrad et al. reference) decide
from the distribution of an experiment's idle gaps — the time between two consecutive requests.
`IdleHistogram` keeps it in one-minute bins over four hours (960 bytes of counters, bounded however
many requests arrive) with the gaps' summed length (their mean, beyond the range too). A `Learner`
turns a histogram into a `Plan`; `LearnedGaps` (owned by the activity tracker, one per experiment)
recomputes the plan only once the gaps, or the idle times of a minute or more among them, grew by
≥ 1/8 since the last computation — O(log n) recomputations over n requests, O(1) amortised per
request, and a busy experiment's sub-minute gaps cannot hold back what its idle times teach — and
hands out an immutable `Learned` view, so a policy never writes into the activity it reads.

An experiment's *burst gaps* are kept in a second histogram, made at its first: the time an extra
container would idle before the experiment needs it again (core.keepwarm.burst_levels), from which a
learner may choose a shorter window for the extra containers than for the last one. The plan also
depends on the experiment's measured cold start (core.keepwarm.cold_start_time), which changes far
more rarely than the gaps: a plan is recomputed whenever it does.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Protocol

BINS = 240  # one-minute bins: four hours


class IdleHistogram:
    """Counts of idle gaps by whole minutes (bin g holds gaps in [g, g+1) minutes), plus out-of-range."""

    __slots__ = ("counts", "out_of_range", "total", "seconds")

    def __init__(self) -> None:
        self.counts = array("I", [0]) * BINS  # exactly 960 bytes of counters (from bytes, 1,112 with slack)
        self.out_of_range = 0
        self.total = 0
        self.seconds = 0.0  # the gaps' summed length, out-of-range ones included

    @property
    def idle_times(self) -> int:
        """Gaps of a minute or more (a container idles between them), out-of-range ones included."""
        return self.total - self.counts[0]

    def add(self, gap_s: float, times: int = 1) -> None:
        """Count `times` gaps of `gap_s` seconds (several at once: a minute's burst in the simulator)."""
        minute = int(gap_s // 60)
        if minute >= BINS:
            self.out_of_range += times
        else:
            self.counts[minute] += times
        self.total += times
        self.seconds += gap_s * times

    def to_bytes(self) -> bytes:
        """A compact copy (≈ 1 KB) for shared storage, so a history outlives the process that learned it."""
        return (array("Q", (self.out_of_range, self.total)).tobytes() + array("d", (self.seconds,)).tobytes()
                + self.counts.tobytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> "IdleHistogram":
        """Read `to_bytes` back (also the older copies without the summed seconds, which count as 0)."""
        histogram = cls()
        header = array("Q")
        header.frombytes(data[:16])
        histogram.out_of_range, histogram.total = int(header[0]), int(header[1])
        body = data[16:]
        if len(body) == BINS * 4 + 8:
            seconds = array("d")
            seconds.frombytes(body[:8])
            histogram.seconds, body = float(seconds[0]), body[8:]
        counts = array("I")
        counts.frombytes(body)
        if len(counts) != BINS:
            raise ValueError(f"an idle histogram has {BINS} bins, not {len(counts)}")
        histogram.counts = counts
        return histogram

    def percentile_minutes(self, q: float) -> float:
        """The q-th percentile of in-range gaps, in minutes (upper edge of the bin that reaches it)."""
        in_range = self.total - self.out_of_range
        if in_range <= 0:
            return float(BINS)
        target, running = q / 100 * in_range, 0
        for minute, count in enumerate(self.counts):
            running += count
            if running >= target and count:
                return float(minute + 1)
        return float(BINS)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a learner concluded: keep one container `keep_min` minutes, after a pre-warm delay."""

    keep_min: int
    #: 0: keep warm right after the request; else let the pool go and bring it back this many minutes
    #: after the request arrived (for regular, cron-like experiments).
    prewarm_min: int = 0
    #: False: the history does not support a learned plan (the policy's fallback applies).
    representative: bool = True
    detail: str = ""
    #: Minutes an extra (burst) container is kept idle, shorter than `keep_min`; None: as long as the last.
    burst_keep_min: int | None = None


@dataclass(frozen=True, slots=True)
class Learned:
    """An immutable view of an experiment's learned plan and the history it came from."""

    gaps: int
    plan: Plan
    #: Of `gaps`, those of a minute or more.
    idle_times: int = 0
    #: Burst gaps the plan was computed from.
    burst_gaps: int = 0


class Learner(Protocol):
    #: Requests one container takes at once: what a burst gap's container level counts in.
    per_container: int

    def plan(self, histogram: IdleHistogram, bursts: IdleHistogram | None = None,
             cold_start_s: float | None = None) -> Plan:
        """The plan these histograms support (a pure function of the idle gaps, the burst gaps — None:
        no burst seen yet — and the measured cold start in seconds, None: not measured)."""


class LearnedGaps:
    """One experiment's histograms and its cached plan (the tracker holds it under its lock)."""

    __slots__ = ("histogram", "bursts", "_learner", "_learned", "_next_total", "_next_idle_times", "_next_bursts",
                 "_cold_start_s")

    def __init__(self, learner: Learner, histogram: IdleHistogram | None = None,
                 bursts: IdleHistogram | None = None) -> None:
        self.histogram = histogram or IdleHistogram()
        #: Burst gaps (None until the first: most experiments never run two requests at once).
        self.bursts = bursts
        self._learner = learner
        self._learned: Learned | None = None
        # recompute once any count reaches its mark
        self._next_total = self._next_idle_times = self._next_bursts = 0
        self._cold_start_s: float | None = None  # the measured cold start the plan was computed with

    def add(self, gap_s: float, times: int = 1) -> None:
        self.histogram.add(gap_s, times)

    def add_burst(self, gap_s: float, times: int = 1) -> None:
        self._burst_histogram().add(gap_s, times)

    def merge(self, other: IdleHistogram, bursts: IdleHistogram | None = None) -> None:
        """Add another history of the same experiment (learned elsewhere) to this one."""
        _add_into(self.histogram, other)
        if bursts is not None:
            _add_into(self._burst_histogram(), bursts)

    def steady_for(self) -> tuple[int, int]:
        """How many more gaps under a minute, and how many more burst gaps (the cold start unchanged), may
        be added with the plan recomputed at the last of them at the earliest: where `learned` next
        recomputes it ((0, 0): now)."""
        if self._learned is None:
            return 0, 0
        bursts = 0 if self.bursts is None else self.bursts.total
        return max(0, self._next_total - self.histogram.total), max(0, self._next_bursts - bursts)

    def _burst_histogram(self) -> IdleHistogram:
        """The burst gaps' histogram, made at the first."""
        if self.bursts is None:
            self.bursts = IdleHistogram()
        return self.bursts

    def learned(self, cold_start_s: float | None = None) -> Learned:
        """The plan, recomputed once the gaps, the idle times or the burst gaps grew by ≥ 1/8 since it
        was last computed, or the measured cold start (`cold_start_s`) changed."""
        hist = self.histogram
        total = hist.total
        idle_times = total - hist.counts[0]
        bursts = 0 if self.bursts is None else self.bursts.total
        if (self._learned is None or total >= self._next_total or idle_times >= self._next_idle_times
                or bursts >= self._next_bursts or cold_start_s != self._cold_start_s):
            self._learned = Learned(total, self._learner.plan(hist, self.bursts, cold_start_s), idle_times, bursts)
            self._cold_start_s = cold_start_s
            self._next_total, self._next_idle_times, self._next_bursts = _mark(total), _mark(idle_times), _mark(bursts)
        return self._learned


def _add_into(into: IdleHistogram, other: IdleHistogram) -> None:
    for minute, count in enumerate(other.counts):
        into.counts[minute] += count
    into.out_of_range += other.out_of_range
    into.total += other.total
    into.seconds += other.seconds


def _mark(count: int) -> int:
    """The count at which a plan computed at `count` is recomputed: grown by ≥ 1/8 (by one while small)."""
    return count + max(1, -(-count // 8))
