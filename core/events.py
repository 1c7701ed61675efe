"""The scaling event log: one JSON line per event (time, experiment, event, window, reason).

Why this module exists: scale-to-zero happens in a controller process, decisions in the ingress,
cold starts in replicas; one append-only JSON-lines file (path from `HYBRID_EVENT_LOG`) puts them on
one timeline that a person can read (the console of `hybrid-serve serve` follows it:
core.event_console), a test can assert on, and the simulator can replay. Lines are
written with a single `write` on a file opened for appending, so processes never interleave lines.
Every event's name is one of `EventName`: a typo is an error where it is written, not a line that
no reader ever matches.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterable, TextIO

from core.recording import Limits, Recording, json_line, recording_for
from core.settings import Settings

log = logging.getLogger("hybrid_serve.events")


class EventName(StrEnum):
    """What happened; its value is what the log's `event` field holds."""

    REQUEST = "request"
    COLD_START = "cold_start"
    PREWARM = "prewarm"
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    SCALE_TO_ZERO = "scale_to_zero"
    #: An experiment added, changed or removed while the server runs (`change`, and its `task`, `source`).
    REGISTRY = "registry"

    @classmethod
    def of(cls, name: str) -> "EventName":
        """The event named `name`; a name that is none of them is refused (ValueError, naming them all)."""
        if type(name) is cls:  # already one of them (the request path's case): nothing to look up
            return name
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unknown event name {name!r}: one of {', '.join(e.value for e in cls)}") from None


#: The events that start, stop or resize containers (neither a request's arrival nor a registry change).
SCALING_EVENTS = tuple(e for e in EventName if e not in (EventName.REQUEST, EventName.REGISTRY))


class EventLog:
    """The append-only JSON-lines log at `path` (None: nothing is written, names are still checked); the
    scaling events also go to the traffic `recording` when one is kept (a request is recorded there at
    its completion, with its duration, by core.serving.traffic; a registry change is the log's alone)."""

    def __init__(self, path: str | Path | None, recording: Recording | None = None, requests: bool = True):
        self.path = Path(path) if path else None
        self.recording = recording
        #: Whether a request's arrival gets a line (the console's private log leaves them out unless it prints them).
        self.requests = requests
        self._lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings: Settings) -> "EventLog":
        """HYBRID_EVENT_LOG's log (with requests as HYBRID_EVENT_LOG_REQUESTS says), beside the traffic
        recording of HYBRID_TRAFFIC_*."""
        return cls(settings.event_log, recording_for(settings), settings.event_log_requests)

    def write(self, experiment: str, event: EventName, window_s: float | None = None, reason: str | None = None, **extra: Any) -> None:
        event = EventName.of(event)  # refused even when no log is kept: a wrong name fails in every test
        if (self.path is None or (event is EventName.REQUEST and not self.requests)) and (
                self.recording is None or event not in SCALING_EVENTS):
            return  # nothing to write it to (a request's own record is core.serving.traffic's)
        record = {"time": time.time(), "experiment": experiment, "event": event.value, "window_s": window_s, "reason": reason, **extra}
        if self.recording is not None and event in SCALING_EVENTS:
            try:
                self.recording.append(record)
            except OSError as exc:  # a full or unwritable disk loses a record, never the event's work
                log.warning("traffic recording: could not write to %s: %s", self.recording.directory, exc)
        if self.path is None:
            return
        line = json_line(record).encode()
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


def recorded_arrivals(records: Iterable[dict[str, Any]], since: float | None = None) -> list[tuple[float, str, float | None]]:
    """The arrivals the window policy saw in traffic-recording lines — (time, experiment, duration in
    seconds or None), in time order. A request refused before the policy saw it (its input, a 422 or
    413) planned no window and is left out; one the policy saw is kept whatever its answer (a 503, a
    client that hung up): it held a container all the same. Scaling events are not requests."""
    out = []
    for record in records:
        if record.get("event") != EventName.REQUEST.value or record.get("window_s") is None:
            continue
        at, duration = record.get("time"), record.get("duration_s")
        if not isinstance(at, (int, float)) or (since is not None and at < since):
            continue
        out.append((float(at), str(record.get("experiment")), float(duration) if isinstance(duration, (int, float)) else None))
    out.sort(key=lambda r: r[0])  # a recording writes each request when it ends, not when it came
    return out


def export_requests(source: str | Path, out: TextIO) -> int:
    """Write the requests of an event log (a file) or of a traffic recording (a folder) as
    `timestamp,experiment_id[,duration_ms]` CSV in time order (the simulator's `csv` format); a
    recording's requests carry their duration, and those the window policy never saw (refused for
    their input) are left out (`recorded_arrivals`). Returns how many were written."""
    source = Path(source)
    if source.is_dir():
        requests = recorded_arrivals(Recording(source, Limits(0, 0)).read())
    else:
        requests = [(e["time"], e["experiment"], None) for e in read_events(source) if e["event"] is EventName.REQUEST]
        requests.sort(key=lambda r: r[0])
    timed = bool(requests) and all(duration is not None for _, _, duration in requests)
    out.write("timestamp,experiment_id,duration_ms\n" if timed else "timestamp,experiment_id\n")
    for at, experiment, duration in requests:
        out.write(f"{at:.6f},{experiment},{duration * 1000:.3f}\n" if timed else f"{at:.6f},{experiment}\n")
    return len(requests)
