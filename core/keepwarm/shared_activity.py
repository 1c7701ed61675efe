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

from dataclasses import asdict, dataclass, field
from typing import Any


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

    @classmethod
    def starting(cls, at: float) -> "ArrivalBatch":
        return cls(first_at=at, last_at=at)

    def arrive(self, at: float) -> None:
        minute = int(max(0.0, at - self.last_at) // 60)
        self.gap_minutes[minute] = self.gap_minutes.get(minute, 0) + 1
        self.previous_at, self.last_at = self.last_at, max(self.last_at, at)
        self.count += 1

    def finish(self, at: float) -> None:
        self.finished_at = at if self.finished_at is None else max(self.finished_at, at)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArrivalBatch":
        return cls(**{**data, "gap_minutes": {int(k): int(v) for k, v in data.get("gap_minutes", {}).items()}})


@dataclass(frozen=True)
class DurableActivity:
    """What must survive of one experiment's activity: the latest two requests, the latest completion,
    the count and the learned idle-gap histogram (`IdleHistogram.to_bytes()`, ≈ 1 KB)."""

    experiment_id: str
    last_request: float
    previous_request: float | None
    last_completion: float | None
    total_requests: int
    idle_gaps: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DurableActivity":
        return cls(**data)
