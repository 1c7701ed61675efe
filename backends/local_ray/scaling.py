"""Modal's scaledown window, emulated as a Ray Serve autoscaling policy: the window controller on Ray.

Why this module exists: Serve's built-in autoscaler looks at request counts averaged over a
look-back period, so a short request can go unnoticed and scale-to-zero follows Serve's delays,
not the window core decides. Here the policy is core's controller shape: it reads the experiment's
activity that the ingress published in the GCS (activity_store.py), folds in what the replicas report
(`record_autoscaling_stats`: last busy, in flight, served, failed — never a window), runs core's
`plan_pool` on it — the very function the Modal reconciler and the in-process server run — and
applies the plan: it keeps the replicas still inside the plan's scaledown window, pins one during a
pre-warm, scales up for load, and scales to zero once every replica has idled for the window.

`ScaledownWindowPolicy` is the thin class Serve's controller instantiates (via `policy_kwargs`);
`pool_activity` and `desired_replicas` are the decision itself, tested without Ray.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Mapping

from backends.local_ray.activity_store import ActivityStore
from backends.local_ray.schedule_store import ScheduleReader, ScheduleStore
from core.events import EventName
from core.keepwarm.container_budget import ContainerBudget
from core.keepwarm.cold_start_time import PrewarmLead
from core.keepwarm.controller import PlanPhase, PoolPlan, scheduled_plan
from core.keepwarm.experiment_record import ExperimentActivity, ExperimentRecord
from core.keepwarm.histogram import Learner
from core.keepwarm.shared_activity import DurableActivity

log = logging.getLogger("hybrid_serve.ray.scaling")

# Names of the metrics replicas report through record_autoscaling_stats.
LAST_BUSY = "hybrid_last_busy"  # wall time the replica was last busy (now, while a request is in flight)
IN_FLIGHT = "hybrid_in_flight"
SERVED = "hybrid_served"  # 1: the replica has served a request (else it idles from its start)
LOAD_FAILED = "hybrid_load_failed"  # 1: the replica answered a request without a model (its load failed)
STARTED_AT = "hybrid_started_at"  # wall time Ray started its actor (the start of its cold start)
READY_AT = "hybrid_ready_at"  # wall time its model was loaded (the end of its cold start)
BUSY_S = "hybrid_busy_s"  # seconds it has had a request in flight, in all (the cost ledger's busy time)

#: Where the policy keeps, in Serve's `policy_state`, since when replicas have been starting.
STARTING_SINCE = "starting_since"
#: The policy reads the experiment's activity again at least this often (real seconds)...
REFRESH_S = 5.0
#: ... and at once when a replica has been busy since its last read (at most this often while one runs).
BUSY_REFRESH_S = 0.5


#: How long (real seconds) after a request the handles' load figure may still show it: Serve's
#: look-back period (pool.LOOK_BACK_PERIOD_S, 1 s), two of the handles' pushes (0.2 s each) and a margin.
ECHO_S = 1.5


@dataclass(frozen=True)
class ReplicaReport:
    last_busy: float
    in_flight: int
    served: bool = False  # it has served a request (one that never did idles from its start)
    failed: bool = False  # it holds no model (its load failed): nothing to keep warm
    replica: str = ""  # Serve's replica id
    started_at: float | None = None
    ready_at: float | None = None
    busy_s: float | None = None


class Why(StrEnum):
    """Why a pool has the replicas it is given (beside the plan's own phase and reason)."""

    STARTING = "starting"  # no request yet: keep what is starting
    NO_REPLICA = "no-replica"
    PLAN = "plan"  # the plan keeps these (a window or a pre-warm)
    LOAD = "load"  # ongoing requests need more than the plan keeps
    IDLE = "idle"  # every replica idled for the window
    LOAD_FAILED = "load-failed"  # idle replicas without a model go
    LOAD_ECHO = "load-echo"  # idle, but one stays while the handles' averaged load still shows the last request


@dataclass(frozen=True)
class ScalingInputs:
    """Everything the decision reads (times are wall seconds; the plan's are emulated)."""

    now: float
    reports: list[ReplicaReport]
    ongoing_requests: float
    target_ongoing: float
    time_scale: float
    max_replicas: int
    #: Core's plan for the pool now (None: the experiment has no request yet).
    plan: PoolPlan | None = None
    #: Running replicas that have not reported yet (just started).
    unreported: int = 0
    #: Replicas the controller is starting (not running yet): capacity already on its way — as on
    #: Modal, a booting container is not cancelled; once running it idles from its start.
    starting: int = 0
    #: Replicas the pool is given now (Serve's target): what the plan may keep, never start again.
    current: int = 0


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int
    why: Why
    plan: PoolPlan | None = None

    @property
    def phase(self) -> PlanPhase | None:
        return None if self.plan is None else self.plan.phase

    @property
    def window_s(self) -> int | None:
        return None if self.plan is None else self.plan.window_s

    def describe(self, inputs: ScalingInputs) -> str:
        """The decision in words, for the event log (derived from the enums, never parsed back)."""
        plan = self.plan
        if plan is None:
            return self.why.value.replace("-", " ")
        if plan.decision.prewarm_after_s is not None:
            return plan.describe()
        if self.why is Why.LOAD_FAILED:
            return "the model failed to load: its idle replicas go (the next request loads it again)"
        if self.why is Why.IDLE:
            return f"idle {plan.idle_s:.1f}s ≥ window {plan.window_s}s"
        if self.why is Why.LOAD_ECHO:
            return f"idle {plan.idle_s:.1f}s, one replica held while the load figure still shows the last request"
        if self.why is Why.LOAD:
            return f"load: {inputs.ongoing_requests:.1f} ongoing requests, target {inputs.target_ongoing:g} per replica"
        if plan.idle_s >= plan.window_s:  # kept by a replica whose own latest request is newer than the pool's
            return f"warm: a replica busy less than the window {plan.window_s}s ago (the pool's record: idle {plan.idle_s:.1f}s)"
        if plan.scaledown_window_s < plan.window_s:  # two windows
            return (f"warm: idle {plan.idle_s:.1f}s < window {plan.window_s}s; "
                    f"extra replicas go after {plan.scaledown_window_s}s idle")
        return f"warm: idle {plan.idle_s:.1f}s < window {plan.window_s}s"


def pool_activity(experiment_id: str, published: DurableActivity | None, reports: list[ReplicaReport], now: float,
                  activity_window_s: float, learner: Learner | None) -> ExperimentActivity | None:
    """The experiment's activity at `now` (emulated seconds) as the controller sees it: what the
    ingress published, with the replicas' word on what runs now and when the last request ended
    (reports' times already emulated). None: no request yet. A replica that never served (a
    pre-warm, a start for load) does not restart the experiment's idle clock."""
    served = [r.last_busy for r in reports if r.served]
    if published is None:
        if not served:
            return None
        # served, but the ingress's activity is unreadable: the replicas' word alone
        published = DurableActivity(experiment_id, max(served), None, max(served), 0)
    activity = ExperimentRecord.restored(published, activity_window_s, learner).snapshot(experiment_id, now)
    ends = [t for t in [activity.last_completion, *served] if t is not None]
    return replace(activity, in_flight=sum(r.in_flight for r in reports), last_completion=max(ends) if ends else None)


def desired_replicas(inputs: ScalingInputs) -> ScaleDecision:
    """How many replicas the experiment should run now, within 0..max_replicas.

    The plan is core's for the whole pool — as on Modal, where one autoscaler setting applies to the
    whole container pool. A replica counts as warm while it has a request in flight or has been idle
    for less than the plan's scaledown window (emulated seconds: real seconds × time_scale); a replica
    that has served nothing yet idles from its start; one replica stays while the pool's latest request
    is inside the window (its replica's report may trail it); replicas that have not reported yet (just
    started) are kept; a pre-warm pins `min_containers`. A replica whose model failed to load is not
    kept once idle: it holds nothing worth a window, and the next request starts a new one that loads
    the model again. Load adds replicas (ongoing requests / target per replica).
    """
    decision = _unbounded(inputs)
    return replace(decision, replicas=max(0, min(inputs.max_replicas, decision.replicas)))


def _unbounded(inputs: ScalingInputs) -> ScaleDecision:
    reports, plan = inputs.reports, inputs.plan
    load = math.ceil(inputs.ongoing_requests / inputs.target_ongoing) if inputs.ongoing_requests > 0 else 0
    kept = inputs.unreported + inputs.starting + len(reports)
    if plan is None:  # nothing decided yet: keep what is starting
        return ScaleDecision(max(load, kept), Why.STARTING if kept else Why.NO_REPLICA)
    # The handles' load figure may still show the pool's latest request: `ECHO_S` after the pool was last
    # busy (the plan's idle clock runs from its latest arrival or completion, a serving replica's report
    # included: `pool_activity`).
    echo = plan.idle_s < ECHO_S * inputs.time_scale
    if reports and not any(r.in_flight for r in reports) and not inputs.unreported and not inputs.starting and echo:
        # Every replica reported idle, moments after the pool was busy: the handles' load figure (pushed
        # every few tenths of a second, averaged over a second) is only the past's echo. Later, a load
        # figure is a request still waiting — e.g. for a replica that has just started (it never served:
        # its own idle clock says nothing of that request) — and keeps its replica, as Modal keeps a
        # container with an input queued for it.
        load = 0
    warm = inputs.unreported + inputs.starting + sum(
        1 for r in reports if r.in_flight > 0
        or (not r.failed and (inputs.now - r.last_busy) * inputs.time_scale < plan.scaledown_window_s))
    # The pool's latest request keeps the replica that served it (one given now, never one scaled down
    # already), also while that replica's report (pushed every few tenths of a second) still shows the
    # time before it.
    latest = int(inputs.current > 0 and plan.idle_s < plan.scaledown_window_s and any(not r.failed for r in reports))
    # two windows' hold keeps the last replica of a running pool and starts none (`PoolPlan.holds_only`)
    pinned = 0 if plan.holds_only and not (inputs.current and (reports or inputs.unreported or inputs.starting)) \
        else plan.min_containers
    replicas = max(load, warm, latest, pinned)
    if replicas == 0 and reports and inputs.ongoing_requests > 0 and echo:
        # The handles' load figure (averaged over Serve's look-back) still echoes the last request: at
        # zero replicas, Serve's cold-start path — which bypasses this policy — would start one at once
        # for it. One stays until the echo is gone.
        return ScaleDecision(1, Why.LOAD_ECHO, plan)
    if replicas < len(reports) and any(r.failed and not r.in_flight for r in reports):
        why = Why.LOAD_FAILED
    elif replicas == 0:
        why = Why.IDLE
    elif load > max(warm, pinned):
        why = Why.LOAD
    else:
        why = Why.PLAN
    return ScaleDecision(replicas, why, plan)


def ongoing_requests(serve_load: float, at_pool: int) -> float:
    """The requests at a pool: Serve's load figure, or the ingress's count where larger — Serve's undercounts
    requests queued at a pool that went to zero (it shows the one its cold-start path starts a replica for)."""
    return max(serve_load, float(at_pool))


def replica_id(replica: Any) -> str:
    """Serve's id of a running replica (a `ReplicaID`, or its string in tests)."""
    return str(getattr(replica, "unique_id", replica))


def reports_from_metrics(raw_metrics: Mapping[str, Mapping[Any, list[Any]]] | None, replicas: list[Any]) -> list[ReplicaReport]:
    """The latest report of each running replica from Serve's raw custom metrics. A flag counts only
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

        def flag(name: str) -> bool:
            point = latest(name, replica)
            return point is not None and point.timestamp == busy.timestamp and bool(point.value)

        def value(name: str) -> float | None:
            point = latest(name, replica)
            return None if point is None else float(point.value)

        reports.append(ReplicaReport(float(busy.value), int(in_flight.value), flag(SERVED), flag(LOAD_FAILED),
                                     replica_id(replica), value(STARTED_AT), value(READY_AT), value(BUSY_S)))
    return reports


class ActivityReader:
    """The experiment's activity as the ingress last published it, read from the GCS when it may have
    changed: when a replica has been busy since the last read (the ingress publishes an arrival before
    its request reaches a replica), at least every `REFRESH_S`, and whenever the caller asks for the
    latest (`fresh`: before a scale-down — a replica's report can trail its request by a second or
    more, the published arrival cannot). While requests are in flight — by the ingress's count last
    read, or by Serve's load figure (`waiting`) — it is read every `BUSY_REFRESH_S`: the count sizes a
    pool whose requests wait for replicas, and must follow them. A controller that restarts reads it
    at once: its pools keep their windows, a pre-warm planned before still happens."""

    def __init__(self, store: ActivityStore | None, experiment_id: str):
        self.store = store
        self.experiment_id = experiment_id
        self.record: DurableActivity | None = None
        #: The experiment's requests the ingress had in flight, as last read.
        self.in_flight = 0
        self._read_at: float | None = None

    def current(self, now: float, reports: list[ReplicaReport], fresh: bool = False,
                waiting: bool = False) -> DurableActivity | None:
        if self.store is None:
            return None
        since = None if self._read_at is None else now - self._read_at
        news = self._read_at is None or any(r.last_busy > self._read_at for r in reports)
        busy = any(r.in_flight for r in reports)
        if since is None or since >= REFRESH_S or (fresh and since > 0) or (news and not busy) \
                or ((news or waiting or self.in_flight > 0) and since >= BUSY_REFRESH_S):
            try:
                published = self.store.read_published(self.experiment_id)
                self.record, self.in_flight = (None, 0) if published is None else (published.activity, published.in_flight)
            except Exception:  # the GCS unreachable a moment: the last record read holds
                log.exception("could not read %s's activity", self.experiment_id)
            self._read_at = now
        return self.record


class ScaledownWindowPolicy:
    """Serve autoscaling policy (class form): instantiated once per deployment by the controller, with
    the experiment, the application and the settings (validated again here: `RaySettings`)."""

    def __init__(self, experiment: str = "", app_name: str | None = None, settings: dict[str, Any] | None = None):
        from backends.local_ray import replica_slots  # imported, never pickled with this module: one table
        from backends.local_ray.replica_lives import ReplicaLives
        from backends.local_ray.settings import RaySettings
        from backends.local_ray.usage_store import UsageStore
        from core.events import EventLog
        from core.keepwarm.policies import policy_from_settings

        self.experiment = experiment
        self.settings = RaySettings.model_validate(settings or {})
        self.policy = policy_from_settings(self.settings)
        self.time_scale = self.settings.time_scale
        self.events = EventLog.for_settings(self.settings)
        self.published = ActivityReader(ActivityStore(app_name) if app_name else None, experiment)
        #: The experiment's warm schedule, as the ingress published it (warm_schedules.py).
        self.schedule = ScheduleReader(ScheduleStore(app_name) if app_name else None, experiment)
        #: The pool's replicas in the cost ledger (published for the ingress).
        self.lives = ReplicaLives(experiment, UsageStore(app_name) if app_name else None, time.time)
        #: The deployment's slots (MODAL_MAX_CONTAINERS, within what the cluster holds) and this pool's share.
        self.budget = ContainerBudget(self.settings.max_replicas or self.settings.max_containers,
                                      self.settings.experiment_max_containers)
        self.slots, self.app_name = replica_slots, app_name or ""  # every pool's, shared in Serve's controller

    def plan(self, now: float, reports: list[ReplicaReport], fresh: bool = False, waiting: bool = False) -> PoolPlan | None:
        """Core's plan for the pool at wall time `now`, with the experiment's warm schedule on top (None:
        no request yet and no schedule); `fresh`: from the activity as published now, not as last read;
        `waiting`: Serve sees requests at the pool."""
        scale, settings = self.time_scale, self.settings
        activity = pool_activity(
            self.experiment, self.published.current(now, reports, fresh, waiting),
            [replace(r, last_busy=r.last_busy * scale) for r in reports], now * scale,
            settings.activity_window, self.policy.learner)
        windows = self.schedule.current(now)
        if activity is None and not windows:
            return None
        return scheduled_plan(self.experiment, activity, self.policy, PrewarmLead(settings.prewarm_lead_s, scale),
                              windows, now)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        now = ctx.current_time or time.time()
        running = list(ctx.running_replicas)
        reports = reports_from_metrics(ctx.raw_metrics, running)
        state = dict(ctx.policy_state or {})
        serve_load = float(ctx.total_num_requests or 0)
        plan = self.plan(now, reports, waiting=serve_load > 0)  # first: it reads the ingress's count too
        inputs = ScalingInputs(
            now, reports, ongoing_requests(serve_load, self.published.in_flight), float(self.settings.target_ongoing),
            self.time_scale, min(int(ctx.capacity_adjusted_max_replicas), self.budget.pool_limit(
                self.experiment, self.slots.held(self.app_name, now, self.settings.cold_start_timeout_s))),
            plan=plan,
            unreported=len(running) - len(reports),
            starting=self._starting(state, max(0, int(ctx.target_num_replicas) - len(running)), now),
            current=int(ctx.target_num_replicas),
        )
        decision = desired_replicas(inputs)
        if decision.replicas < ctx.target_num_replicas:  # a replica goes: decided on the latest arrival only
            plan = self.plan(now, reports, fresh=True)  # first, as above
            inputs = replace(inputs, plan=plan, ongoing_requests=ongoing_requests(serve_load, self.published.in_flight))
            decision = desired_replicas(inputs)
        replicas, previous = decision.replicas, ctx.target_num_replicas
        self.slots.hold(self.app_name, self.experiment, max(replicas, len(running)), now)  # what runs, if more
        prewarm = decision.phase is PlanPhase.PREWARM and previous == 0 and replicas > 0
        try:  # the cost ledger never stands in the way of scaling
            self.lives.observe(now, [replica_id(r) for r in running], reports, replicas, prewarm,
                               waiting=inputs.ongoing_requests > 0)
        except Exception:
            log.exception("%s: the cost ledger missed a tick", self.experiment)
        if replicas != previous:
            if prewarm:
                event = EventName.PREWARM
            else:
                event = EventName.SCALE_TO_ZERO if replicas == 0 else (EventName.SCALE_UP if replicas > previous else EventName.SCALE_DOWN)
            plan = decision.plan
            self.events.write(self.experiment, event, decision.window_s, decision.describe(inputs),
                              replicas=replicas, previous=previous, idle_s=None if plan is None else plan.idle_s,
                              phase=None if plan is None else plan.phase.value,
                              reason_code=None if plan is None else plan.reason.value)
        return replicas, state

    def _starting(self, state: dict[str, Any], starting: int, now: float) -> int:
        """Replicas starting count as capacity — but not for ever: one that cannot be placed (no
        resources left) stops holding the pool up after `HYBRID_COLD_START_TIMEOUT_S`."""
        if not starting:
            state.pop(STARTING_SINCE, None)
            return 0
        since = state.setdefault(STARTING_SINCE, now)
        return starting if now - since < self.settings.cold_start_timeout_s else 0
