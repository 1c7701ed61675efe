"""The scaling event log: one JSON line per event (time, experiment, event, window, reason).

Why this module exists: scale-to-zero happens in a controller process, decisions in the ingress,
cold starts in replicas; one append-only JSON-lines file (path from `HYBRID_EVENT_LOG`) puts them on
one timeline that a person can read, a test can assert on, and the simulator can replay. Lines are
written with a single `write` on a file opened for appending, so processes never interleave lines.
Every event's name is one of `EventName`: a typo is an error where it is written, not a line that
no reader ever matches.
"""

from __future__ import annotations

import json
import os
import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO


class EventName(StrEnum):
    """What happened; its value is what the log's `event` field holds."""

    REQUEST = "request"
    COLD_START = "cold_start"
    PREWARM = "prewarm"
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    SCALE_TO_ZERO = "scale_to_zero"

    @classmethod
    def of(cls, name: str) -> "EventName":
        """The event named `name`; a name that is none of them is refused (ValueError, naming them all)."""
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unknown event name {name!r}: one of {', '.join(e.value for e in cls)}") from None


#: The events that start, stop or resize containers (every one but a request's arrival).
SCALING_EVENTS = tuple(e for e in EventName if e is not EventName.REQUEST)


class EventLog:
    """The append-only JSON-lines log at `path` (None: nothing is written, names are still checked)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()

    def write(self, experiment: str, event: EventName, window_s: float | None = None, reason: str | None = None, **extra: Any) -> None:
        event = EventName.of(event)  # refused even when no log is kept: a wrong name fails in every test
        if self.path is None:
            return
        record = {"time": time.time(), "experiment": experiment, "event": event.value, "window_s": window_s, "reason": reason, **extra}
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All events of a log, in file order, each `event` an `EventName` (equal to its string); a line
    naming no known event is refused (ValueError naming the file and line)."""
    events = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            try:
                record["event"] = EventName.of(record.get("event", ""))
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
            events.append(record)
    return events


def export_requests(events_path: str | Path, out: TextIO) -> int:
    """Write the log's requests as `timestamp,experiment_id` CSV (the simulator's `csv` format)."""
    out.write("timestamp,experiment_id\n")
    count = 0
    for event in read_events(events_path):
        if event["event"] is EventName.REQUEST:
            out.write(f"{event['time']:.6f},{event['experiment']}\n")
            count += 1
    return count
