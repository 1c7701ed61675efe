"""Each served request, recorded: when, which experiment, status, duration, cold or warm, queue wait.

Why this module exists: the advice `hybrid-serve recommend` gives, and the dashboard's timeline, come
from an endpoint's own traffic. The request path hands every finished request of a registered
experiment to `Traffic.request`; it goes, as one line, to the recording (core.recording: bounded,
rotating, on by default) and into per-minute counts of the last hour that the dashboard reads
without touching the disk. Only what is listed above is kept — never a request's inputs or outputs.
A record is written at the event loop's next turn — after the request's answer went out, together
with the other records of that turn — so that the disk is off the request's own time; whatever reads
the recording through `records` gets them all. A recording that cannot be written (a full disk) costs
a warning, never a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any, Callable, Iterator

from core.events import EventName
from core.recording import Recording

log = logging.getLogger("hybrid_serve.traffic")

MINUTE_S = 60.0
#: The per-minute counts cover the last hour (and the minute under way).
KEPT_MINUTES = 61


class Traffic:
    """The request records of one server (its recording: None when recording is off)."""

    def __init__(self, recording: Recording | None, clock: Callable[[], float] = time.time):
        self.recording = recording
        self.clock = clock
        #: experiment → minute start → [requests, those that waited for a cold start, the last window planned in it]
        self._minutes: dict[str, dict[float, list[Any]]] = defaultdict(dict)
        self._warned = False
        #: Records of this turn of the event loop, written together at its next turn (or by `flush`).
        self._pending: list[dict[str, Any]] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop whose next turn writes them
        if recording is not None:
            for record in recording.read(since=clock() - KEPT_MINUTES * MINUTE_S):  # what a restart left
                if record.get("event") == EventName.REQUEST.value and isinstance(record.get("experiment"), str):
                    self._count(record)

    def request(self, experiment_id: str, arrived_at: float, status: int, duration_s: float, *, cold: bool,
                queue_wait_s: float | None, inputs: int, window_s: float | None, reason: str | None) -> None:
        """Record one finished request (`arrived_at`: its arrival, epoch seconds)."""
        record = {
            "time": round(arrived_at, 6), "experiment": experiment_id, "event": EventName.REQUEST.value,
            "status": status, "duration_s": round(duration_s, 6), "cold": cold,
            "queue_wait_s": None if queue_wait_s is None else round(queue_wait_s, 6),
            "inputs": inputs, "window_s": window_s, "reason": reason,
        }
        self._count(record)
        if self.recording is None:
            return
        self._pending.append(record)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop here: written now (with any a finished loop left behind)
            self.flush()
            return
        if self._flush_on is not loop:  # written at this loop's next turn, after this request's answer went out
            self._flush_on = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the records not written yet (one system call for all of them)."""
        self._flush_on = None
        pending, self._pending = self._pending, []
        if not pending or self.recording is None:
            return
        try:
            self.recording.extend(pending)
        except OSError as exc:
            if not self._warned:  # once: a full disk must not flood the log at every request
                log.warning("traffic recording: could not write to %s (%s); requests are served, not recorded",
                            self.recording.directory, exc)
                self._warned = True

    def _count(self, record: dict[str, Any]) -> None:
        minute = record["time"] // MINUTE_S * MINUTE_S
        minutes = self._minutes[record["experiment"]]
        counts = minutes.get(minute)
        if counts is None:
            counts = minutes[minute] = [0, 0, None]
            oldest = self.clock() // MINUTE_S * MINUTE_S - (KEPT_MINUTES - 1) * MINUTE_S
            for old in [m for m in minutes if m < oldest]:
                del minutes[old]
        counts[0] += 1
        counts[1] += bool(record.get("cold"))
        counts[2] = record.get("window_s", counts[2])

    def per_minute(self, since: float) -> dict[str, list[dict[str, Any]]]:
        """Per experiment, each minute since `since` (at most the last hour) with a request: its start
        (epoch seconds), requests, those that waited for a cold start (several may wait for one start;
        the cost ledger and `hybrid_cold_starts_total` count the starts), and the window planned at its
        last request."""
        out: dict[str, list[dict[str, Any]]] = {}
        start = since // MINUTE_S * MINUTE_S
        for experiment_id, minutes in self._minutes.items():
            rows = [{"minute": m, "requests": c[0], "cold_requests": c[1], "window_s": c[2]}
                    for m, c in sorted(minutes.items()) if m >= start]
            if rows:
                out[experiment_id] = rows
        return out

    def records(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """The recording's requests and scaling events (every writer's) since `since`; none when off."""
        self.flush()
        return iter(()) if self.recording is None else self.recording.read(since)
