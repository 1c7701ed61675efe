"""The scaling event log: one JSON line per event (time, experiment, event, window, reason).

Why this module exists: scale-to-zero happens in a controller process, decisions in the ingress,
cold starts in replicas; one append-only JSON-lines file (path from `HYBRID_EVENT_LOG`) puts them on
one timeline that a person can read, a test can assert on, and the simulator can replay. Lines are
written with a single `write` on a file opened for appending, so processes never interleave lines.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, TextIO


class EventLog:
    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()

    def write(self, experiment: str, event: str, window_s: float | None = None, reason: str | None = None, **extra: Any) -> None:
        if self.path is None:
            return
        record = {"time": time.time(), "experiment": experiment, "event": event, "window_s": window_s, "reason": reason, **extra}
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All events of a log, in file order."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def export_requests(events_path: str | Path, out: TextIO) -> int:
    """Write the log's requests as `timestamp,experiment_id` CSV (the simulator's `csv` format)."""
    out.write("timestamp,experiment_id\n")
    count = 0
    for event in read_events(events_path):
        if event.get("event") == "request":
            out.write(f"{event['time']:.6f},{event['experiment']}\n")
            count += 1
    return count
