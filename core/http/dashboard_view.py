"""The dashboard's data: one page of experiments, each with its row of `/experiments`, why its window is
what it is, the time left before scale-down, its last cold start, today's cost, and its last hour.

Why this module exists: the dashboard must stay fast with a thousand experiments, so the search and the
paging happen here, on the server, and only the page's rows are built — from the same row builder as
`/experiments` (`StateViews.row`), read once per answer (`StateViews.row_sources`). The last hour of
each row is a timeline of one-minute points: replicas from the cost ledger's one-minute buckets
(container-seconds in the minute / the minute's seconds), and requests, cold starts and the window from
the request path's traffic recorder (`path.traffic`, which every request path has).
"""

from __future__ import annotations

from typing import Any

from core.keepwarm.cost_report import measured
from core.keepwarm.ledger import BUCKET_S, UsageRecord
from core.http.views import NEVER_LOADED, RowSources, StateViews, read_usage
from core.serving.model_status import ModelStatus
from core.serving.registry import Experiment
from core.serving.request_path import RequestPath
from core.serving.scrub import scrub_tree

#: The timeline's length: the last hour, one point a minute.
TIMELINE_MINUTES = 60
#: A page's size unless the client asks for another, and the most it may ask for.
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: One experiment's minutes from the traffic counts: `{"minute", "requests", "cold_requests", "window_s"}`.
TrafficMinutes = list[dict[str, Any]]


class DashboardView:
    """Builds `/dashboard/data` from the state views (and so from the request path they render)."""

    def __init__(self, views: StateViews):
        self.views = views

    @property
    def path(self) -> RequestPath:
        return self.views.path

    async def page(self, offset: int = 0, limit: int = DEFAULT_LIMIT, q: str = "") -> dict[str, Any]:
        """The experiments matching `q` (case-insensitive, in the id or the task), `limit` of them from
        `offset` in registry order, and counts over every registered experiment."""
        registered = list(self.path.registry)
        needle = q.strip().lower()
        matched = [e for e in registered if matches(e, needle)] if needle else registered
        chosen = matched[offset: offset + limit]
        ids = {e.id for e in chosen}
        activity = {a.experiment_id: a for a in self.path.tracker.snapshot() if a.experiment_id in ids}
        sources = await self.views.row_sources(await read_usage(self.path, ids), list(activity.values()))
        first_minute = int(sources.now // BUCKET_S) - TIMELINE_MINUTES + 1
        traffic: dict[str, TrafficMinutes] = self.path.traffic.per_minute(first_minute * BUCKET_S)
        usage = measured(sources.usage)
        records = usage or {}
        rows = []
        for experiment in chosen:
            row = scrub_tree(self._row(experiment, sources))  # its text only: the timeline is numbers
            seen = activity.get(experiment.id)
            row["requests_in_window"] = seen.requests_in_window if seen else 0
            row["in_flight"] = seen.in_flight if seen else 0
            row["timeline"] = timeline(records.get(experiment.id), traffic.get(experiment.id, []), first_minute,
                                       sources.now)
            rows.append(row)
        return {
            "now": sources.now,
            "backend": self.views.backend,
            "policy": self.path.settings.policy_name,
            "activity_window_s": self.path.settings.activity_window,
            "total": len(registered),
            "matched": len(matched),
            "offset": offset,
            "limit": limit,
            "q": q,
            "states": state_counts(registered, sources.status),
            "cost_measured": usage is not None,
            "currency": self.path.settings.price().currency,
            "traffic_recorded": self.path.traffic.recording is not None,
            "timeline": {"start": first_minute * BUCKET_S, "step_s": BUCKET_S, "points": TIMELINE_MINUTES},
            "rows": rows,
        }

    def _row(self, experiment: Experiment, sources: RowSources) -> dict[str, Any]:
        """The `/experiments` row, plus why the window is what it is, its plan's phase, the time left
        before scale-down (None: no request remembered, nothing to scale down) and the last cold start."""
        row = self.views.row(experiment, sources)
        plan = sources.plans.get(experiment.id)
        model = sources.status.get(experiment.id) or NEVER_LOADED
        row.update(
            window_detail=(plan or sources.unused).decision.detail,
            phase=plan.phase.value if plan else None,
            plan=plan.describe() if plan else None,
            expires_in_s=round(plan.expires_in_s, 3) if plan else None,
            last_cold_start=last_cold_start(model),
            last_error=model.last_error,
        )
        return row


def matches(experiment: Experiment, needle: str) -> bool:
    """The search: `needle` (lower case) in the experiment's id or task."""
    return needle in experiment.id.lower() or needle in str(experiment.task.value).lower()


def state_counts(registered: list[Experiment], status: dict[str, ModelStatus]) -> dict[str, int]:
    """How many registered experiments are in each state (one the backend knows nothing of is cold)."""
    counts: dict[str, int] = {}
    for experiment in registered:
        state = (status.get(experiment.id) or NEVER_LOADED).state.value
        counts[state] = counts.get(state, 0) + 1
    return counts


def last_cold_start(model: ModelStatus) -> dict[str, Any] | None:
    """The latest cold start as the backend reports it: when (`at`, where it knows) and how long
    (`total_s`); in-process, the last model load's duration (its time is not kept)."""
    if model.last_cold_start:
        return {"at": model.last_cold_start.get("at"), "total_s": model.last_cold_start.get("total_s")}
    if model.loads is not None and model.loads.last_cold_load_ms is not None:
        return {"at": None, "total_s": model.loads.last_cold_load_ms / 1000}
    return None


def timeline(record: UsageRecord | None, traffic: TrafficMinutes, first_minute: int,
             now: float) -> dict[str, list[Any]]:
    """One experiment's last hour, a point a minute from `first_minute` (its index since the epoch):
    replicas (the minute's container-seconds over its seconds so far), requests, requests that waited
    for a cold start, and the window planned at the latest request so far (None before the hour's first
    request). The ledger counted seconds up to its reading (`record.as_of`: a moment before `now`, or
    seconds before where a backend publishes it); the containers running then count on to `now`, so
    that the current minute never shows none when the reading fell in the minute before."""
    minutes = range(first_minute, first_minute + TIMELINE_MINUTES)
    replicas = []
    for minute in minutes:
        start = minute * BUCKET_S
        span = min(float(BUCKET_S), now - start)
        seconds = sum((record.minutes.get(minute) or {}).values()) if record is not None else 0.0
        if record is not None and record.containers:
            seconds += record.containers * max(0.0, min(start + BUCKET_S, now) - max(start, record.as_of))
        replicas.append(round(seconds / span, 3) if seconds > 0 and span > 0 else 0.0)
    by_minute = {int(point["minute"] // BUCKET_S): point for point in traffic}
    points = [by_minute.get(minute) for minute in minutes]
    windows: list[float | None] = []
    for point in points:  # a window planned at a request holds until the next request plans another
        windows.append(point["window_s"] if point and point.get("window_s") is not None else (windows[-1] if windows else None))
    return {
        "replicas": replicas,
        "requests": [int(p["requests"]) if p else 0 for p in points],
        "cold_requests": [int(p.get("cold_requests", 0)) if p else 0 for p in points],
        "window_s": windows,
    }
