"""A warm schedule on a trace's clock: when, in the replay's seconds, containers are held and how many.

Why this module exists: the servers put an experiment's warm schedule on top of its plan
(core.keepwarm.controller's `with_schedule`); to price one, fine mode needs the same windows as
spans of the trace — seconds after the trace's start, which is a wall-clock moment (`start_unix`)
for the schedule's days and hours — and two quick questions for every container it looks at: is
one whose window ends at `t` held longer (`held_until`), and which spans began since the last look
(`starting`). Spans are merged into non-overlapping segments (the most containers any window asks
for), each opened `lead_s` early as on the servers; made a week at a time as the replay advances.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import datetime, timezone

from core.keepwarm.warm_schedule import WarmWindow

_WEEK_S = 7 * 24 * 3600.0
#: The default start of a trace whose times are relative (the 2019 sample's minutes): a Monday, 00:00 UTC.
DEFAULT_TRACE_START = datetime(2019, 7, 15, tzinfo=timezone.utc)


class WarmSpans:
    """The held segments of `windows` over a trace starting at `start_unix`: starts, ends, containers."""

    def __init__(self, windows: tuple[WarmWindow, ...], start_unix: float, lead_s: float = 0.0):
        self.windows, self.start_unix, self.lead_s = windows, start_unix, lead_s
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.containers: list[int] = []
        self._through = -1.0  # trace seconds the segments are made for
        self.ensure(0.0)

    def ensure(self, t: float) -> None:
        """Make the segments through trace time `t` (and a week beyond)."""
        if t < self._through:
            return
        through = t + _WEEK_S
        raw: set[tuple[float, float, int]] = set()
        around = self.start_unix
        while around - self.start_unix < through + _WEEK_S:
            for window in self.windows:
                for start, end in window.spans(around):
                    raw.add((start - self.start_unix - self.lead_s, end - self.start_unix, window.containers))
            around += _WEEK_S
        self.starts, self.ends, self.containers = _merged(sorted(s for s in raw if s[1] > 0))
        self._through = through

    def held_until(self, until: float) -> float:
        """A container kept until `until` under the plan is held to the end of the segment (and of any
        adjoining ones) `until` falls in; `until` itself outside every segment."""
        self.ensure(until)
        i = bisect_right(self.starts, until) - 1
        while 0 <= i < len(self.ends) and self.starts[i] <= until < self.ends[i]:
            until = self.ends[i]
            i += 1
        return until

    def containers_at(self, t: float) -> int:
        """How many containers the schedule holds at trace time `t` (0: none)."""
        self.ensure(t)
        i = bisect_right(self.starts, t) - 1
        return self.containers[i] if i >= 0 and t < self.ends[i] else 0

    def starting(self, after: float, through: float) -> list[tuple[float, int]]:
        """The segments that open in (`after`, `through`]: their start and containers."""
        self.ensure(through)
        first, last = bisect_right(self.starts, after), bisect_right(self.starts, through)
        return [(self.starts[i], self.containers[i]) for i in range(first, last)]


def _merged(spans: list[tuple[float, float, int]]) -> tuple[list[float], list[float], list[int]]:
    """Non-overlapping segments where the count is constant: the most containers any span asks for."""
    edges = sorted({t for start, end, _ in spans for t in (max(0.0, start), end)})
    starts, ends, counts = [], [], []
    for a, b in zip(edges, edges[1:]):
        n = max((c for start, end, c in spans if start <= a and b <= end), default=0)
        if not n:
            continue
        if ends and ends[-1] == a and counts[-1] == n:
            ends[-1] = b
        else:
            starts.append(a)
            ends.append(b)
            counts.append(n)
    return starts, ends, counts
