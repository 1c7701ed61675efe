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

import json
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from core.events import EventName
from core.keepwarm.controller import PlanPhase, describe, pool_state

# Names of the metrics replicas report through record_autoscaling_stats.
LAST_BUSY = "hybrid_last_busy"  # wall time the replica was last busy (now, while a request is in flight)
IN_FLIGHT = "hybrid_in_flight"
# Reported once the replica has served a request (core's decision for the latest one it served):
LAST_REQUEST = "hybrid_last_request"  # wall time that request arrived at the ingress
WINDOW = "hybrid_window_s"  # the window (emulated seconds) decided for it
PREWARM = "hybrid_prewarm_s"  # its pre-warm delay (emulated seconds), only for a pre-warm decision
LOAD_FAILED = "hybrid_load_failed"  # 1: the replica answered a request without a model (its load failed)

#: Where the policy keeps, in Serve's `policy_state`, the latest decision seen (for a pool at zero).
REMEMBERED = "remembered"
#: ... and since when replicas have been starting.
STARTING_SINCE = "starting_since"


@dataclass(frozen=True)
class ReplicaReport:
    last_busy: float
    in_flight: int
    last_request: float | None = None
    window_s: float | None = None  # None: the replica has served no request yet
    prewarm_s: float | None = None
    failed: bool = False  # it holds no model (its load failed): nothing to keep warm


@dataclass(frozen=True)
class ScalingInputs:
    """Everything the decision reads (times are wall seconds, windows emulated seconds)."""

    now: float
    reports: list[ReplicaReport]
    ongoing_requests: float
    target_ongoing: float
    time_scale: float
    max_replicas: int
    #: Running replicas that have not reported yet (just started).
    unreported: int = 0
    #: Replicas the controller is starting (not running yet): capacity already on its way — as on
    #: Modal, a booting container is not cancelled; once running it idles from its start.
    starting: int = 0
    #: The latest report seen, kept across scale-to-zero (for a pre-warm while no replica runs).
    remembered: ReplicaReport | None = None
    #: A pre-warm starts this many real seconds before the request is due (a cold start's time).
    prewarm_lead_s: float = 0.0


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int
    window_s: float | None  # the window in force (emulated seconds), None before any request
    idle_s: float | None  # emulated seconds since the experiment was last busy
    reason: str
    #: Where the pool is in its plan (None before any request).
    phase: PlanPhase | None = None


def desired_replicas(inputs: ScalingInputs) -> ScaleDecision:
    """How many replicas the experiment should run now, within 0..max_replicas.

    The decision in force is the one made for the experiment's latest request (whichever replica
    served it) — as on Modal, where one autoscaler setting applies to the whole container pool — and
    core's `pool_state` turns it into a scaledown window and a number of pinned replicas for the
    experiment's idle time (emulated seconds: real seconds × time_scale). A replica counts as warm
    while it has a request in flight or has been idle for less than that window; a replica that has
    served nothing yet idles from its start; replicas that have not reported yet (just started) are
    kept. A replica whose model failed to load is not kept once idle: it holds nothing worth a
    window, and the next request starts a new one that loads the model again. Load adds replicas
    (ongoing requests / target per replica). While no replica runs, the latest report seen
    (`remembered`) still decides, so a pre-warm brings one back on time.
    """
    decision = _unbounded(inputs)
    replicas = max(0, min(inputs.max_replicas, decision.replicas))
    return ScaleDecision(replicas, decision.window_s, decision.idle_s, decision.reason, decision.phase)


def _unbounded(inputs: ScalingInputs) -> ScaleDecision:
    reports, scale = inputs.reports, inputs.time_scale
    load = math.ceil(inputs.ongoing_requests / inputs.target_ongoing) if inputs.ongoing_requests > 0 else 0
    served = [r for r in reports if r.window_s is not None]
    kept = inputs.unreported + inputs.starting + len(reports)
    if not served and inputs.remembered is None:  # nothing decided yet: keep what is starting
        return ScaleDecision(max(load, kept), None, None, "starting" if kept else "no replica")
    # The decision in force: the latest request's, even when the replica that served it is gone (a
    # replica that never served anything idles from its start under that window, as on Modal).
    latest = max(served, key=lambda r: r.last_request or 0.0) if served else inputs.remembered
    assert latest is not None and latest.window_s is not None
    busy = any(r.in_flight for r in reports)
    if reports and not busy and not inputs.unreported and not inputs.starting:
        # Every replica reported idle: a request waiting at a handle would have been given one at once,
        # so the handles' load figure (pushed every second, averaged) is only the past's echo.
        load = 0
    # The experiment's idle clock runs from its last request: a replica that never served (a pre-warm,
    # a start for load) reports its start as its last busy time, which must not restart that clock.
    last_busy = max([r.last_busy for r in served] + [latest.last_busy])
    idle = 0.0 if busy else max(0.0, (inputs.now - last_busy) * scale)
    state = pool_state(latest.window_s, latest.prewarm_s, idle, inputs.prewarm_lead_s * scale)
    warm = inputs.unreported + inputs.starting + sum(
        1 for r in reports if r.in_flight > 0 or (not r.failed and (inputs.now - r.last_busy) * scale < state.scaledown_window_s))
    replicas = max(load, warm, state.min_containers)
    if latest.prewarm_s is not None:
        reason = describe(state.phase, state.scaledown_window_s, state.changes_in_s, latest.prewarm_s - idle)
    elif replicas < len(reports) and any(r.failed and not r.in_flight for r in reports):
        reason = "the model failed to load: its idle replicas go (the next request loads it again)"
    elif replicas == 0:
        reason = f"idle {idle:.1f}s ≥ window {latest.window_s:g}s"
    elif load > warm:
        reason = f"load: {inputs.ongoing_requests:.1f} ongoing requests, target {inputs.target_ongoing:g} per replica"
    else:
        reason = f"warm: idle {idle:.1f}s < window {latest.window_s:g}s"
    return ScaleDecision(replicas, latest.window_s, idle, reason, state.phase)



def nothing_planned(remembered: ReplicaReport | None, now: float, time_scale: float, prewarm_lead_s: float) -> bool:
    """Whether a pool at zero replicas has nothing ahead of it but its next request — no pre-warm to
    come, none running — so deleting its Serve application loses nothing (`remembered`: the latest
    decision its policy saw, None when it never served)."""
    if remembered is None or remembered.window_s is None:
        return True
    idle = max(0.0, (now - remembered.last_busy) * time_scale)
    state = pool_state(remembered.window_s, remembered.prewarm_s, idle, prewarm_lead_s * time_scale)
    return state.min_containers == 0 and state.changes_in_s is None


def reports_from_metrics(raw_metrics: Mapping[str, Mapping[Any, list[Any]]] | None, replicas: list[Any]) -> list[ReplicaReport]:
    """The latest report of each running replica from Serve's raw custom metrics. A value counts only
    when it was pushed in the replica's latest sample (a metric absent from it may linger from older
    samples within the look-back period)."""
    if not raw_metrics:
        return []

    def latest(name: str, replica: Any) -> Any:
        series = (raw_metrics.get(name) or {}).get(replica) or []
        return series[-1] if series else None

    reports = []
    for replica in replicas:
        busy, in_flight = latest(LAST_BUSY, replica), latest(IN_FLIGHT, replica)
        if busy is None or in_flight is None:
            continue  # a replica that has not reported yet (just started): not counted as warm or idle

        def current(name: str) -> float | None:
            point = latest(name, replica)
            return float(point.value) if point is not None and point.timestamp == busy.timestamp else None

        reports.append(ReplicaReport(float(busy.value), int(in_flight.value), current(LAST_REQUEST),
                                     current(WINDOW), current(PREWARM), bool(current(LOAD_FAILED))))
    return reports


class DurableMemory:
    """The policy's memory of a pool at zero (its latest decision), in Ray's GCS key-value store:
    Serve's `policy_state` lives in the controller and is lost when the controller restarts; the GCS
    is not, so a pre-warm planned before a restart still happens after it."""

    NAMESPACE = "hybrid-serve"

    def __init__(self, key: str):
        self.key = key.encode()
        self._written: bytes | None = None

    def read(self) -> dict[str, Any] | None:
        from ray.experimental import internal_kv

        if not internal_kv._internal_kv_initialized():
            return None
        value = internal_kv._internal_kv_get(self.key, namespace=self.NAMESPACE)
        return None if value is None else json.loads(value)

    def write(self, remembered: dict[str, Any]) -> None:
        from ray.experimental import internal_kv

        value = json.dumps(remembered).encode()
        if value != self._written and internal_kv._internal_kv_initialized():
            internal_kv._internal_kv_put(self.key, value, overwrite=True, namespace=self.NAMESPACE)
            self._written = value

    def clear(self) -> None:
        """Remove this memory (its experiment was retired)."""
        from ray.experimental import internal_kv

        if internal_kv._internal_kv_initialized():
            internal_kv._internal_kv_del(self.key, namespace=self.NAMESPACE)

    @classmethod
    def forget(cls, prefix: str) -> None:
        """Remove every memory under `prefix` (an application going away)."""
        from ray.experimental import internal_kv

        for key in internal_kv._internal_kv_list(prefix.encode(), namespace=cls.NAMESPACE):
            internal_kv._internal_kv_del(key, namespace=cls.NAMESPACE)


class ScaledownWindowPolicy:
    """Serve autoscaling policy (class form): instantiated once per deployment by the controller."""

    def __init__(self, experiment: str = "", time_scale: float = 1.0, target_ongoing: float = 1.0,
                 event_log: str | None = None, prewarm_lead_s: float = 0.0, memory_key: str | None = None,
                 start_timeout_s: float = 300.0, max_replicas: int = 0):
        from core.events import EventLog

        self.experiment = experiment
        self.time_scale = float(time_scale)
        self.target_ongoing = float(target_ongoing)
        self.prewarm_lead_s = float(prewarm_lead_s)
        self.start_timeout_s = float(start_timeout_s)
        #: The replicas the whole cluster holds (HYBRID_MAX_REPLICAS): no pool asks for more.
        self.max_replicas = int(max_replicas)
        self.events = EventLog(event_log)
        self.memory = DurableMemory(memory_key) if memory_key else None

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        now = ctx.current_time or time.time()
        running = list(ctx.running_replicas)
        reports = reports_from_metrics(ctx.raw_metrics, running)
        state = dict(ctx.policy_state or {})
        if REMEMBERED not in state and self.memory is not None:  # a new controller: what did the last one know?
            recovered = self.memory.read()
            if recovered is not None:
                state[REMEMBERED] = recovered
        served = [r for r in reports if r.window_s is not None]
        if served:
            state[REMEMBERED] = asdict(max(served, key=lambda r: (r.last_request or 0.0, r.last_busy)))
            if self.memory is not None:
                self.memory.write(state[REMEMBERED])
        remembered = ReplicaReport(**state[REMEMBERED]) if REMEMBERED in state else None
        decision = desired_replicas(ScalingInputs(
            now, reports, float(ctx.total_num_requests or 0), self.target_ongoing, self.time_scale,
            self._bound(int(ctx.capacity_adjusted_max_replicas)), unreported=len(running) - len(reports),
            starting=self._starting(state, max(0, int(ctx.target_num_replicas) - len(running)), now),
            remembered=remembered, prewarm_lead_s=self.prewarm_lead_s,
        ))
        replicas = decision.replicas
        if replicas != ctx.target_num_replicas:
            if decision.phase is PlanPhase.PREWARM and ctx.target_num_replicas == 0:
                event = EventName.PREWARM
            else:
                event = EventName.SCALE_TO_ZERO if replicas == 0 else (EventName.SCALE_UP if replicas > ctx.target_num_replicas else EventName.SCALE_DOWN)
            self.events.write(self.experiment, event, decision.window_s, decision.reason,
                              replicas=replicas, previous=ctx.target_num_replicas, idle_s=decision.idle_s)
        return replicas, state

    def _bound(self, max_replicas: int) -> int:
        return min(max_replicas, self.max_replicas) if self.max_replicas else max_replicas

    def _starting(self, state: dict[str, Any], starting: int, now: float) -> int:
        """Replicas starting count as capacity — but not for ever: one that cannot be placed (no
        resources left) stops holding the pool up after `start_timeout_s`."""
        if not starting:
            state.pop(STARTING_SINCE, None)
            return 0
        since = state.setdefault(STARTING_SINCE, now)
        return starting if now - since < self.start_timeout_s else 0
