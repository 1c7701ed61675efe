"""The percentile of a list of numbers, one way for the whole project.

Why this module exists: the simulator (a p75 of the experiments' cold-start rates) and the bench
command (latency p50 / p95 / p99) both need numpy's default percentile without numpy on the serving
path; one function serves both, each saying what an empty list gives.
"""

from __future__ import annotations

import math
from typing import Sequence


def percentile(values: Sequence[float], q: float, empty: float = math.nan) -> float:
    """The `q`-th percentile (0..100) of `values`, linearly interpolated between the closest ranks (as
    numpy's default); `empty` for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not in 0..100")
    if not values:
        return empty
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
