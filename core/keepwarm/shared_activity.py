"""Activity that crosses processes: batches of arrivals one process publishes, and an experiment's
durable activity another process keeps.

Why this module exists: on Modal, requests arrive at ingress containers that come and go, while the
decision must be made from all of them and outlive every one (a pre-warm due in an hour, an idle-gap
histogram learned over a day). An ingress summarises its arrivals per experiment in `ArrivalBatch`es
(exact for the policies: the first, the last two arrivals, the count, and the idle gaps between
them by minute); one reconciler folds every container's batches into an activity tracker and keeps
each experiment's `DurableActivity` in shared storage. Both are plain data (dicts of numbers and
bytes), safe to store and to read back by another version of the code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from core.keepwarm.cold_start_time import measured


@dataclass
class ArrivalBatch:
    """One process's arrivals of one experiment since its last publication."""

    first_at: float
    last_at: float
    previous_at: float | None = None  # the arrival before `last_at` within this batch
    count: int = 1
    #: Idle gaps between the batch's own arrivals, by whole minutes (almost always {0: count - 1}).
    gap_minutes: dict[int, int] = field(default_factory=dict)
    finished_at: float | None = None  # the latest completion of a request of this experiment
    #: Burst gaps (core.keepwarm.burst_levels) of the batch's arrivals, by whole minutes.
    burst_gap_minutes: dict[int, int] = field(default_factory=dict)
    #: The most requests in flight at once in this process's latest spell of the experiment.
    width: int = 0
    #: The cold starts this process measured of the experiment, as one estimate (core.keepwarm.cold_start_time).
    cold_start_s: float | None = None

    @classmethod
    def starting(cls, at: float) -> "ArrivalBatch":
        return cls(first_at=at, last_at=at)

    def arrive(self, at: float) -> None:
        _count_minute(self.gap_minutes, max(0.0, at - self.last_at))
        self.previous_at, self.last_at = self.last_at, max(self.last_at, at)
        self.count += 1

    def burst(self, gap_s: float) -> None:
        """One of the batch's arrivals reached a level of requests in flight left `gap_s` before."""
        _count_minute(self.burst_gap_minutes, gap_s)

    def finish(self, at: float) -> None:
        self.finished_at = at if self.finished_at is None else max(self.finished_at, at)

    def cold_started(self, seconds: float) -> None:
        self.cold_start_s = measured(self.cold_start_s, seconds)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArrivalBatch":
        return cls(**{**_known(cls, data), "gap_minutes": _minutes(data.get("gap_minutes")),
                      "burst_gap_minutes": _minutes(data.get("burst_gap_minutes"))})


def _count_minute(counts: dict[int, int], gap_s: float) -> None:
    """Count one gap of `gap_s` seconds in its whole minute."""
    minute = int(gap_s // 60)
    counts[minute] = counts.get(minute, 0) + 1


def _minutes(counts: dict[Any, Any] | None) -> dict[int, int]:
    """A minutes → count mapping read back (JSON keys are strings)."""
    return {int(k): int(v) for k, v in (counts or {}).items()}


@dataclass(frozen=True)
class DurableActivity:
    """What must survive of one experiment's activity: the latest two requests, the latest completion,
    the count, the learned idle-gap and burst-gap histograms (`IdleHistogram.to_bytes()`, ≈ 1 KB each),
    the latest spell's width and the measured cold start."""

    experiment_id: str
    last_request: float
    previous_request: float | None
    last_completion: float | None
    total_requests: int
    idle_gaps: bytes | None = None
    burst_gaps: bytes | None = None
    #: The most requests in flight at once in its latest spell (what a pre-warm brings back).
    width: int = 0
    #: Its measured cold start, seconds (core.keepwarm.cold_start_time; None: none measured).
    cold_start_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DurableActivity":
        return cls(**_known(cls, data))


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The fields of `cls` in `data`: a record a newer version wrote, with fields this one lacks, still reads."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
