"""The result of a load phase (answers by status, latencies, throughput).

Why this module exists: `hybrid-serve bench` and the project's load benchmark (`benchmarks/load.py`)
summarise closed-loop load the same way, so their figures mean the same thing.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from core.percentile import percentile


@dataclass
class LoadResult:
    """What a closed-loop load phase saw: its length, each answered request's latency, every status."""

    seconds: float
    latencies: list[float] = field(default_factory=list)  # of answered (200) requests, seconds
    statuses: Counter[int] = field(default_factory=Counter)  # -1: no answer (connection error, timeout)
    #: Inputs in the batch each answered request ran in (the server's `batch_inputs`), where it says.
    batch_inputs: list[int] = field(default_factory=list)
    #: Answers that waited for a cold start (a new replica under load): not in `latencies`.
    cold_answers: int = 0

    @property
    def throughput(self) -> float:
        """Answered (200) requests per second."""
        return self.statuses[200] / self.seconds if self.seconds > 0 else math.nan

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    def percentile_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    @property
    def mean_batch_inputs(self) -> float:
        return sum(self.batch_inputs) / len(self.batch_inputs) if self.batch_inputs else math.nan

    def to_json(self) -> dict[str, object]:
        """The figures with their units in their names (NaN, where nothing was answered, as null)."""
        return {
            "duration_s": round(self.seconds, 3),
            "requests": sum(self.statuses.values()),
            "answered": self.statuses[200],
            "errors": self.errors,
            "statuses": {str(status): n for status, n in sorted(self.statuses.items())},
            "cold_answers": self.cold_answers,
            "throughput_rps": finite(self.throughput),
            "latency_ms": {f"p{q}": finite(self.percentile_ms(q)) for q in (50, 95, 99)}
            | {"mean": finite(sum(self.latencies) / len(self.latencies) * 1000 if self.latencies else math.nan)},
            "mean_batch_inputs": finite(self.mean_batch_inputs),
        }


def finite(value: float | None, digits: int = 3) -> float | None:
    """`value` rounded, or None for a missing or NaN figure (JSON has no NaN)."""
    if value is None or math.isnan(value):
        return None
    return round(value, digits)
