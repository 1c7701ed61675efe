"""One plain console line per event of the event log, for the console of `hybrid-serve serve`.

Why this module exists: an operator watching the main job wants to see, as it happens, when an
experiment's container starts cold, is pre-warmed, scales or goes to zero, and when the registry
changes — the experiment, the window and why — in plain English, without reading JSON. The events
are written in many processes (core.events); this module only turns one record into one line (no
colour codes: the same text on a terminal, in a pipe or in a file).
"""

from __future__ import annotations

import time
from typing import Any

from core.events import EventName

#: Each event's label, padded to one width so that the experiments line up.
LABELS = {
    EventName.REQUEST: "request",
    EventName.COLD_START: "cold start",
    EventName.PREWARM: "pre-warm",
    EventName.SCALE_UP: "scale up",
    EventName.SCALE_DOWN: "scale down",
    EventName.SCALE_TO_ZERO: "scale to zero",
    EventName.REGISTRY: "registry",
}
WIDTH = max(len(label) for label in LABELS.values())


def event_line(record: dict[str, Any], requests: bool = False) -> str | None:
    """The console line of one event record (a line of the log, parsed); None for a request unless
    `requests`, and for a record that names no known event."""
    try:
        event = EventName.of(str(record.get("event", "")))
    except ValueError:
        return None
    if event is EventName.REQUEST and not requests:
        return None
    at = record.get("time")
    clock = time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(at, (int, float)) else "--:--:--"
    return f"{clock} {LABELS[event].ljust(WIDTH)}  {record.get('experiment')}  {_details(event, record)}"


def _details(event: EventName, record: dict[str, Any]) -> str:
    window, why = _window(record), _why(record)
    if event is EventName.REGISTRY:
        kind, task, source = record.get("change") or record.get("reason"), record.get("task"), record.get("source")
        return f"{kind} ({task}, {source})" if task and source else str(kind)
    if event is EventName.COLD_START:
        return f"{_cold_start(record)}, {window} ({why})"
    if event is EventName.REQUEST:
        return f"{window} ({why})"
    if event is EventName.SCALE_TO_ZERO and isinstance(record.get("idle_s"), (int, float)):
        return f"after {_seconds(record['idle_s'])} idle ({window}, {why})"
    replicas, previous = record.get("replicas"), record.get("previous")
    change = f"{previous} → {replicas} replicas: " if replicas is not None and previous is not None else ""
    return f"{change}{record.get('reason') or why} ({window})"


def _cold_start(record: dict[str, Any]) -> str:
    total, replica, model = record.get("total_s"), record.get("replica_start_s"), record.get("model_load_s")
    if not isinstance(total, (int, float)):
        return "the container started"
    if isinstance(replica, (int, float)) and isinstance(model, (int, float)):
        return f"{_seconds(total)} (replica {_seconds(replica)} + model {_seconds(model)})"
    return f"{_seconds(total)} (model load)"


def _window(record: dict[str, Any]) -> str:
    window = record.get("window_s")
    return "no window yet" if not isinstance(window, (int, float)) else f"window {window:g} s"


def _why(record: dict[str, Any]) -> str:
    """The short reason: the plan's reason code where the log has one beside its prose."""
    return str(record.get("reason_code") or record.get("reason") or "no reason given")


def _seconds(value: float) -> str:
    return f"{value:.1f} s"
