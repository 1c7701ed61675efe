"""Modal's scaledown window, emulated as a Ray Serve autoscaling policy.

Why this module exists: Serve's built-in autoscaler looks at request counts averaged over a
look-back period, so a short request can go unnoticed and scale-to-zero follows Serve's delays,
not the window core decided. Here each replica reports when it was last busy and the window decided
for the latest request it served (`record_autoscaling_stats`), and the policy — a pure function of
those reports, the load and the clock — keeps exactly the replicas that are still inside the window
in force, scales up for load, and scales to zero once every replica has idled for the window.

`ScaledownWindowPolicy` is the thin class Serve's controller instantiates (via `policy_kwargs`);
`desired_replicas` is the decision itself, tested without Ray.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

# Names of the metrics replicas report through record_autoscaling_stats.
LAST_BUSY = "hybrid_last_busy"  # wall time the replica was last busy (now, while a request is in flight)
LAST_REQUEST = "hybrid_last_request"  # wall time the latest request the replica received was decided
WINDOW = "hybrid_window_s"  # the window (emulated seconds) decided for that request; -1 before any
IN_FLIGHT = "hybrid_in_flight"
PREWARM = "hybrid_prewarm_s"  # pre-warm delay (emulated seconds) decided for that request; -1: none


@dataclass(frozen=True)
class ReplicaReport:
    last_busy: float
    last_request: float
    window_s: float
    in_flight: int
    prewarm_s: float = -1.0


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int
    window_s: float | None  # the window in force (emulated seconds), None before any request
    idle_s: float | None  # emulated seconds since the experiment was last busy
    reason: str


def desired_replicas(
    now: float,
    reports: list[ReplicaReport],
    ongoing_requests: float,
    target_ongoing: float,
    time_scale: float,
    max_replicas: int,
    unreported: int = 0,
    remembered: ReplicaReport | None = None,
    prewarm_lead_s: float = 0.0,
) -> ScaleDecision:
    """How many replicas the experiment should run now.

    The window in force is the one decided for the experiment's latest request (whichever replica
    served it) — as on Modal, where one scaledown window applies to the whole container pool. A
    replica counts as warm while it has a request in flight or has been idle for less than that
    window (idle time in emulated seconds: real seconds × time_scale); a replica that has served
    nothing yet idles from its start. Replicas that have not reported yet (just started) are kept.
    Load adds replicas (ongoing requests / target per replica), up to max_replicas. When the
    latest decision is a pre-warm (adaptive policy), the experiment scales to zero once idle and one
    replica comes back `prewarm_lead_s` (real seconds, a cold start's time) before the request is
    due; `remembered` is the last report seen, for deciding while no replica is running.
    """
    load = math.ceil(ongoing_requests / target_ongoing) if ongoing_requests > 0 else 0
    served = [r for r in reports if r.window_s >= 0]
    if not served:  # nothing decided yet: keep what is starting or waiting for its first request
        kept = unreported + len(reports)
        if kept == 0 and remembered is not None:  # scaled to zero: is a pre-warm due?
            return _prewarm(now, remembered, load, time_scale, prewarm_lead_s, max_replicas)
        return ScaleDecision(min(max_replicas, max(load, kept)), None, None, "starting" if kept else "no replica")
    latest = max(served, key=lambda r: r.last_request)
    window = latest.window_s
    busy = any(r.in_flight for r in reports)
    if latest.prewarm_s >= 0 and not busy:
        return _prewarm(now, max(reports, key=lambda r: r.last_busy), load, time_scale, prewarm_lead_s, max_replicas,
                        latest.prewarm_s, window)
    idle = [(now - r.last_busy) * time_scale for r in reports]
    warm = unreported + sum(1 for r, i in zip(reports, idle) if r.in_flight > 0 or i < window)
    experiment_idle = 0.0 if busy else max(0.0, min(idle))
    replicas = min(max_replicas, max(load, warm))
    if replicas == 0:
        reason = f"idle {experiment_idle:.1f}s ≥ window {window:g}s"
    elif load > warm:
        reason = f"load: {ongoing_requests:.1f} ongoing requests, target {target_ongoing:g} per replica"
    else:
        reason = f"warm: idle {experiment_idle:.1f}s < window {window:g}s"
    return ScaleDecision(replicas, window, experiment_idle, reason)


def _prewarm(now: float, last: ReplicaReport, load: int, time_scale: float, lead_s: float, max_replicas: int,
             prewarm_s: float | None = None, window_s: float | None = None) -> ScaleDecision:
    """A pre-warm plan: no replica until `lead_s` (real) before the request is due, then one until
    `prewarm + window` (emulated) after the last busy moment, then none."""
    prewarm = last.prewarm_s if prewarm_s is None else prewarm_s
    window = last.window_s if window_s is None else window_s
    if prewarm < 0:
        return ScaleDecision(min(max_replicas, load), window, None, "no replica")
    idle = (now - last.last_busy) * time_scale
    due_in_real = (prewarm - idle) / time_scale
    if due_in_real <= lead_s and idle < prewarm + window:
        return ScaleDecision(min(max_replicas, max(load, 1)), window, idle, f"pre-warm: request expected in {max(0.0, due_in_real):.1f}s")
    reason = "pre-warm over" if idle >= prewarm + window else f"scaled down until the pre-warm in {due_in_real - lead_s:.1f}s"
    return ScaleDecision(min(max_replicas, load), window, idle, reason)


def reports_from_metrics(raw_metrics: Mapping[str, Mapping[Any, list[Any]]] | None, replicas: list[Any]) -> list[ReplicaReport]:
    """The latest report of each running replica from Serve's raw custom metrics."""
    if not raw_metrics:
        return []

    def latest(name: str, replica: Any) -> float | None:
        series = (raw_metrics.get(name) or {}).get(replica) or []
        return float(series[-1].value) if series else None

    reports = []
    for replica in replicas:
        values = [latest(n, replica) for n in (LAST_BUSY, LAST_REQUEST, WINDOW, IN_FLIGHT)]
        if any(v is None for v in values):
            continue  # a replica that has not reported yet (just started): not counted as warm or idle
        last_busy, last_request, window, in_flight = values
        prewarm = latest(PREWARM, replica)
        reports.append(ReplicaReport(last_busy, last_request, window, int(in_flight), -1.0 if prewarm is None else prewarm))  # type: ignore[arg-type]
    return reports


class ScaledownWindowPolicy:
    """Serve autoscaling policy (class form): instantiated once per deployment by the controller."""

    def __init__(self, experiment: str = "", time_scale: float = 1.0, target_ongoing: float = 1.0,
                 event_log: str | None = None, prewarm_lead_s: float = 0.0):
        from core.events import EventLog

        self.experiment = experiment
        self.time_scale = float(time_scale)
        self.target_ongoing = float(target_ongoing)
        self.prewarm_lead_s = float(prewarm_lead_s)
        self.events = EventLog(event_log)
        self._remembered: ReplicaReport | None = None  # the latest report, kept across scale-to-zero

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        now = ctx.current_time or time.time()
        running = list(ctx.running_replicas)
        reports = reports_from_metrics(ctx.raw_metrics, running)
        served = [r for r in reports if r.window_s >= 0]
        if served:
            self._remembered = max(served, key=lambda r: (r.last_request, r.last_busy))
        decision = desired_replicas(
            now, reports, float(ctx.total_num_requests or 0), self.target_ongoing, self.time_scale,
            int(ctx.capacity_adjusted_max_replicas), unreported=len(running) - len(reports),
            remembered=self._remembered, prewarm_lead_s=self.prewarm_lead_s,
        )
        replicas = decision.replicas
        if replicas != ctx.target_num_replicas:
            if decision.reason.startswith("pre-warm:") and ctx.target_num_replicas == 0:
                event = "prewarm"
            else:
                event = "scale_to_zero" if replicas == 0 else ("scale_up" if replicas > ctx.target_num_replicas else "scale_down")
            self.events.write(self.experiment, event, decision.window_s, decision.reason,
                              replicas=replicas, previous=ctx.target_num_replicas, idle_s=decision.idle_s)
        return replicas, dict(ctx.policy_state)
