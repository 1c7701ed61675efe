"""Waiting for a line of a scaling event log (core.events) in tests and benchmarks that drive a backend.

Why this module exists: the Ray tests and benchmarks wait for a pool's `scale_to_zero` (or a
`scale_up` to so many replicas) the same way — poll the JSON-lines log, and on a timeout say which
of the experiment's events did come — so one helper serves them all.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from core.events import read_events


def wait_for_event(events: Path, experiment: str, event: str, after: float, timeout_s: float = 30,
                   where: Callable[[dict[str, Any]], bool] = lambda _: True) -> dict[str, Any]:
    """The experiment's first `event` after wall time `after` (and for which `where` holds), once it is logged."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        found = [e for e in read_events(events) if e["experiment"] == experiment and e["event"] == event
                 and e["time"] > after and where(e)] if events.exists() else []
        if found:
            return found[0]
        time.sleep(0.05)
    seen = [(e["event"], e.get("replicas"), round(e["time"] - after, 2)) for e in read_events(events)
            if e["experiment"] == experiment] if events.exists() else []
    raise AssertionError(f"no {event} event for {experiment} within {timeout_s}s; its events (replicas, s after): {seen}")
