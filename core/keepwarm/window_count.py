"""The count of an experiment's requests in the activity window, in bounded memory.

Why this module exists: the hybrid policy extends a window for an experiment with enough requests
in the activity window, and that count must stay cheap however high the request rate: a list of
arrival times would grow with the traffic. The count is kept in `BUCKETS_PER_WINDOW` time buckets
instead — exact to 1/64 of the window, never more than 65 buckets per experiment.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

#: The count of requests in the activity window is kept in this many time buckets per experiment,
#: so an experiment's memory is bounded however high its request rate (count exact to 1/64 window).
BUCKETS_PER_WINDOW = 64


class WindowCount:
    """Requests in the last `window_s`, counted per bucket of `window_s / BUCKETS_PER_WINDOW`."""

    __slots__ = ("window_s", "_bucket_s", "_buckets", "_total")

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._bucket_s = window_s / BUCKETS_PER_WINDOW
        self._buckets: deque[list[float | int]] = deque()  # [bucket_start, count], oldest first
        self._total = 0  # the buckets' counts summed: read per request, so never summed again

    def __len__(self) -> int:
        """Buckets held (the memory it takes)."""
        return len(self._buckets)

    def add(self, at: float, requests: int = 1) -> None:
        """Count `requests` arriving at `at`; one older than the newest bucket (folded from
        elsewhere) counts there."""
        start = at - (at % self._bucket_s)
        if self._buckets and self._buckets[-1][0] == start:
            self._buckets[-1][1] += requests
        elif not self._buckets or self._buckets[-1][0] < start:
            self._buckets.append([start, requests])
        else:
            self._buckets[-1][1] += requests
        self._total += requests
        self._expire(at)

    def add_run(self, time_of: Callable[[int], float], lo: int, hi: int) -> None:
        """Count requests arriving at `time_of(lo)` .. `time_of(hi - 1)` (increasing, about evenly
        spaced) as `add` would one by one: a bucket's requests at once."""
        bucket_s = self._bucket_s
        spacing = (time_of(hi - 1) - time_of(lo)) / (hi - 1 - lo) if hi - 1 > lo else bucket_s
        i = lo
        while i < hi:
            at = time_of(i)
            start = at - (at % bucket_s)
            j = min(hi, i + 1 + max(0, int((start + bucket_s - at) / spacing) if spacing > 0 else hi))  # about the next bucket's first
            while j > i + 1 and (t := time_of(j - 1)) - (t % bucket_s) != start:
                j -= 1
            while j < hi and (t := time_of(j)) - (t % bucket_s) == start:
                j += 1
            self.add(time_of(j - 1), j - i)
            i = j

    def total(self, now: float) -> int:
        """Requests in the window ending at `now`."""
        self._expire(now)
        return int(self._total)

    def _expire(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] + self._bucket_s <= now - self.window_s:
            self._total -= self._buckets.popleft()[1]
