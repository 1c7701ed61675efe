"""The one window controller shape of every backend: experiments' activity → every pool's plan.

Why this module exists: the window is the one idea the product is about, so it is decided in one
place, the same way on every backend. The request path only records arrivals and completions (the
activity tracker, through a backend's publishing sink where the controller lives elsewhere); a
controller — in-process: the server itself; Ray: the custom autoscaling policy in Serve's
controller; Modal: the reconciler — runs `plan_pool`, a pure function of the experiment's activity
(which carries the policy's memory, `learned`) and the clock (`activity.now`), and applies the
`PoolPlan` it returns. The window a response reports, the one `/health` shows and the one applied
are that plan; why a pool is in its state is a `PlanPhase` and the policy's `WindowReason` — enums,
never text to parse.

A plan turns a decision ("keep warm for W", "keep extra containers B and the last one W", or "scale
to zero, pre-warm after P, keep for W") into the two numbers a platform's autoscaler wants at this
moment: the scaledown window of idle containers and how many containers to keep regardless of
traffic (`min_containers`). Two windows are the pool's scaledown window B with the last container
held (`min_containers` 1) until the experiment has idled W: a hold keeps a running container and
never starts one (`PoolPlan.holds_only`), where a pre-warm's pin starts one. An experiment's warm
schedule (core.keepwarm.warm_schedule) raises `min_containers` to what it asks for now, on top of
any plan (`with_schedule`), and starts its containers whatever the pool runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Callable, Iterable, Mapping

from core.keepwarm.activity import ActivityTracker, ExperimentActivity, emulated_clock
from core.keepwarm.decision import NamedPolicy, WindowDecision, WindowReason
from core.keepwarm.policies import policy_from_settings, retention_s
from core.keepwarm.burst_levels import SPELL_BREAK_S
from core.keepwarm.cold_start_time import PrewarmLead
from core.keepwarm.warm_schedule import WarmWindow, scheduled
from core.settings import Settings

#: The scaledown window of a pre-warm plan's pool: a minute (a spell's pause), so that the requests of
#: one minute share their containers. The learning policies plan by the minute (a gap under a minute
#: costs nothing either way); Modal's shortest window (2 s) made every request of a busy minute a cold start.
PREWARM_PLAN_WINDOW_S = SPELL_BREAK_S


class PlanPhase(StrEnum):
    """Where an experiment's pool is in its plan."""

    #: Idle containers are kept for the decision's window (the plain plan); with a burst window, the
    #: extra ones for that and the last one, held, for the decision's window.
    KEEP_WARM = "keep-warm"
    #: A pre-warm plan within a minute of its latest request: the pool is held at the experiment's width.
    SPELL = "spell"
    #: A pre-warm plan, before its pre-warm; the pool scales down a minute after its requests.
    AWAIT_PREWARM = "await-prewarm"
    #: A pre-warm plan, pre-warming: the experiment's width is pinned, a request is expected.
    PREWARM = "prewarm"
    #: A pre-warm plan whose keep time is over: nothing pinned until the next request.
    PREWARM_OVER = "prewarm-over"


@dataclass(frozen=True)
class PoolPlan:
    """One experiment's pool as it should be now (seconds in the activity's clock)."""

    experiment_id: str
    #: The policy's decision for the experiment's latest request: window, why, pre-warm.
    decision: WindowDecision
    phase: PlanPhase
    #: The autoscaler's scaledown window for idle containers now.
    scaledown_window_s: int
    #: Containers kept regardless of traffic now (1 while pre-warming).
    min_containers: int
    #: Seconds the experiment has been idle (0 while a request runs).
    idle_s: float
    #: Seconds until the plan changes by itself if nothing arrives; None: it holds until the next request.
    changes_in_s: float | None
    #: The experiment's measured cold start, real seconds (core.keepwarm.cold_start_time; None: none measured).
    cold_start_s: float | None = None
    #: A pre-warm plan's lead: it starts this long before the request is due (None: no pre-warm planned).
    prewarm_lead_s: float | None = None
    #: Containers the experiment's warm schedule asks for now (included in `min_containers`) ...
    scheduled_containers: int = 0
    #: ... and seconds until that changes (None: no schedule). Not in `changes_in_s`: a pool with nothing
    #: else ahead may be parked until its schedule comes due (`nothing_ahead`).
    schedule_changes_in_s: float | None = None

    @property
    def window_s(self) -> int:
        return self.decision.window_s

    @property
    def reason(self) -> WindowReason:
        return self.decision.reason

    @property
    def expires_in_s(self) -> float:
        """Seconds until the decision's window runs out if nothing else arrives (0: over)."""
        return max(0.0, self.decision.window_s - self.idle_s)

    @property
    def holds_only(self) -> bool:
        """Its pinned container is the last one of a running pool, kept (two windows): an applier starts
        none for it — where the pool has none running, nothing is left to keep (a warm schedule's
        containers are started)."""
        return self.phase is PlanPhase.KEEP_WARM and not self.scheduled_containers

    @property
    def nothing_ahead(self) -> bool:
        """Nothing is planned but the next request (or the warm schedule's next window): no container
        pinned now, no change of the policy's plan to come."""
        return self.min_containers == 0 and self.changes_in_s is None

    @property
    def next_change_s(self) -> float | None:
        """Seconds until the plan or the warm schedule changes by itself (None: neither will)."""
        times = [t for t in (self.changes_in_s, self.schedule_changes_in_s) if t is not None]
        return min(times) if times else None

    def describe(self) -> str:
        """The plan in words, for logs and `/health` (derived from the enums, never parsed back)."""
        if self.scheduled_containers:
            return f"{self._describe()}; {self.scheduled_containers} kept warm by the schedule"
        return self._describe()

    def _describe(self) -> str:
        if self.phase is PlanPhase.KEEP_WARM and self.decision.burst_window_s is not None:
            return (f"keep extra containers {self.decision.burst_window_s}s, the last one "
                    f"{self.decision.window_s}s")
        if self.phase is PlanPhase.KEEP_WARM:
            return f"keep idle containers {self.scaledown_window_s}s"
        if self.phase is PlanPhase.SPELL:
            return f"holding {self.min_containers} for the spell, then scaled down until the pre-warm"
        if self.phase is PlanPhase.AWAIT_PREWARM:
            return f"scaled down until the pre-warm in {self.changes_in_s or 0.0:.1f}s"
        if self.phase is PlanPhase.PREWARM:
            due_s = (self.changes_in_s or 0.0) - self.decision.window_s  # the keep time runs on from the due time
            return f"pre-warming {self.min_containers}, the request expected in {max(0.0, due_s):.1f}s"
        return "pre-warm over"


@dataclass(frozen=True)
class AppliedWindow:
    """What a controller applied to one experiment's pool, as `/health` reports it on every backend."""

    window_s: int
    reason: str
    prewarm_after_s: int | None
    #: Containers the controller pins warm (1 during a pre-warm).
    min_containers: int
    #: Unix time the controller applied it.
    applied_at: float
    #: The Modal deployment the override belongs to (a deploy resets overrides); None elsewhere.
    deployment: str | None = None
    #: The plan's phase (`PlanPhase`'s value).
    phase: str = PlanPhase.KEEP_WARM.value

    def holds(self, plan: "PoolPlan", deployment: str | None = None) -> bool:
        """This is what `plan` applies (whenever it was applied): re-applying it changes nothing."""
        return (self.window_s == plan.scaledown_window_s and self.reason == plan.reason.value
                and self.prewarm_after_s == plan.decision.prewarm_after_s and self.min_containers == plan.min_containers
                and self.deployment == deployment and self.phase == plan.phase.value)

    @classmethod
    def of(cls, plan: "PoolPlan", applied_at: float, deployment: str | None = None) -> "AppliedWindow":
        return cls(plan.scaledown_window_s, plan.reason.value, plan.decision.prewarm_after_s, plan.min_containers,
                   applied_at, deployment, plan.phase.value)


@dataclass(frozen=True)
class PoolState:
    """A pool's autoscaler at one moment: what a platform applies (seconds in the decision's clock)."""

    phase: PlanPhase
    scaledown_window_s: int
    min_containers: int
    #: Seconds until this state changes by itself if nothing arrives; None: it holds until the next request.
    changes_in_s: float | None


def pool_state(window_s: float, prewarm_after_s: float | None, idle_s: float, lead_s: float,
               burst_window_s: float | None = None, since_request_s: float | None = None, width: int = 1) -> PoolState:
    """The autoscaler state for a decision (`window_s`, and `prewarm_after_s` for a pre-warm plan or
    `burst_window_s` for two windows) once the experiment has been idle for `idle_s` (0 while a request
    runs). A plain window keeps idle containers for the window. Two windows keep idle containers for the
    burst window and hold one until the experiment has idled the window. A pre-warm plan keeps idle
    containers a minute (`PREWARM_PLAN_WINDOW_S`: the requests of one minute share them) and holds the
    pool at `width` containers — as many as its latest spells ran at once — through the minute after a
    request and again from `lead_s` before the next request is due until the plan's keep time is over.
    The next request is due `prewarm_after_s` after the latest one arrived (`since_request_s` ago; the
    policies learn the gaps between arrivals), whatever the requests' length."""
    if prewarm_after_s is None and burst_window_s is not None and burst_window_s < window_s:
        if idle_s < window_s:
            return PoolState(PlanPhase.KEEP_WARM, int(burst_window_s), 1, window_s - idle_s)
        return PoolState(PlanPhase.KEEP_WARM, int(burst_window_s), 0, None)
    if prewarm_after_s is None:
        return PoolState(PlanPhase.KEEP_WARM, int(window_s), 0, None)
    since = idle_s if since_request_s is None else since_request_s
    start, end = prewarm_after_s - lead_s, prewarm_after_s + window_s
    if since < min(start, PREWARM_PLAN_WINDOW_S):
        return PoolState(PlanPhase.SPELL, PREWARM_PLAN_WINDOW_S, max(1, width), min(start, PREWARM_PLAN_WINDOW_S) - since)
    if since < start:
        return PoolState(PlanPhase.AWAIT_PREWARM, PREWARM_PLAN_WINDOW_S, 0, start - since)
    if since < end:
        return PoolState(PlanPhase.PREWARM, PREWARM_PLAN_WINDOW_S, max(1, width), end - since)
    return PoolState(PlanPhase.PREWARM_OVER, PREWARM_PLAN_WINDOW_S, 0, None)


def plan_for(experiment_id: str, decision: WindowDecision, idle_s: float, lead_s: float,
             since_request_s: float | None = None, width: int = 1, cold_start_s: float | None = None) -> PoolPlan:
    """The plan of `decision` once the experiment has been idle for `idle_s` (`pool_state`)."""
    state = pool_state(decision.window_s, decision.prewarm_after_s, idle_s, lead_s, decision.burst_window_s,
                       since_request_s, width)
    return PoolPlan(experiment_id, decision, state.phase, state.scaledown_window_s, state.min_containers, idle_s,
                    state.changes_in_s, cold_start_s, None if decision.prewarm_after_s is None else lead_s)


def plan_pool(activity: ExperimentActivity, policy: NamedPolicy, lead: PrewarmLead) -> PoolPlan:
    """The controller's decision for one experiment: the policy's window for its activity, as the
    autoscaler state at the activity's `now` (`lead`: a pre-warm starts this long before the request
    is due — the configured lead or the experiment's measured cold start, in the activity's clock)."""
    return plan_for(activity.experiment_id, policy.decide(activity), activity.idle_s, lead.of(activity.cold_start_s),
                    max(0.0, activity.now - activity.last_request), activity.width, activity.cold_start_s)


def with_schedule(plan: PoolPlan, windows: tuple[WarmWindow, ...] | None, wall_s: float, lead_s: float,
                  time_scale: float = 1.0) -> PoolPlan:
    """`plan` with the experiment's warm schedule on top: at least the containers the schedule asks for
    at unix time `wall_s` (each window from `lead_s` real seconds before it opens, so they are warm when
    it does), and a change due when the schedule's is (in the plan's clock, `time_scale` times faster)."""
    if not windows:
        return plan
    now = scheduled(windows, wall_s, lead_s)
    return replace(plan, min_containers=max(plan.min_containers, now.containers), scheduled_containers=now.containers,
                   schedule_changes_in_s=None if now.changes_in_s is None else now.changes_in_s * time_scale)


def unused_plan(experiment_id: str, policy: NamedPolicy) -> PoolPlan:
    """The plan of an experiment with no remembered request (what its first request starts from)."""
    return plan_for(experiment_id, policy.decide(None), 0.0, 0.0)


def scheduled_plan(experiment_id: str, activity: ExperimentActivity | None, policy: NamedPolicy, lead: PrewarmLead,
                   windows: tuple[WarmWindow, ...] | None, wall_s: float) -> PoolPlan:
    """What every applier applies: the experiment's plan (`plan_pool`; with no remembered request, its
    first request's) with its warm schedule on top at unix time `wall_s` (`with_schedule`)."""
    plan = plan_pool(activity, policy, lead) if activity is not None else unused_plan(experiment_id, policy)
    return with_schedule(plan, windows, wall_s, lead.real_s(plan.cold_start_s), lead.time_scale)


class WindowController:
    """Runs `plan_pool` over an activity tracker: the controller of a backend whose controller sees
    every arrival itself (in-process; the ingress's view on Ray and Modal, whose response reports the
    plan of the very arrival it served)."""

    def __init__(self, tracker: ActivityTracker, policy: NamedPolicy, lead: PrewarmLead = PrewarmLead(),
                 wall: Callable[[], float] = time.time):
        self.tracker = tracker
        self.policy = policy
        #: How long before the request is due a pre-warm starts.
        self.lead = lead
        #: The registered experiments' warm schedules, by id (set by the request path: its registry's).
        self.schedules: Callable[[], Mapping[str, tuple[WarmWindow, ...]]] = dict
        self._wall = wall
        self._lock = threading.Lock()
        self._applied: dict[str, AppliedWindow] = {}
        self._latest: dict[str, PoolPlan] = {}

    @classmethod
    def for_settings(cls, settings: Settings, tracker: ActivityTracker, policy: NamedPolicy) -> "WindowController":
        """The controller of these settings: its pre-warm lead (real seconds) in the tracker's
        emulated clock."""
        return cls(tracker, policy, PrewarmLead(settings.prewarm_lead_s, settings.time_scale))

    @classmethod
    def in_memory(cls, settings: Settings) -> "WindowController":
        """The controller of a process that is its experiments' only container and keeps their activity
        in its own memory (the in-process server): the settings' policy, on the emulated clock."""
        policy = policy_from_settings(settings)
        tracker = ActivityTracker(settings.activity_window, retention_s=retention_s(settings, policy),
                                  clock=emulated_clock(settings.time_scale), learner=policy.learner)
        return cls.for_settings(settings, tracker, policy)

    def arrived(self, experiment_id: str) -> PoolPlan:
        """Record one request's arrival; the experiment's plan right after it."""
        plan = scheduled_plan(experiment_id, self.tracker.record_request(experiment_id), self.policy, self.lead,
                              self.schedules().get(experiment_id), self._wall())
        self._adopt({experiment_id: plan})  # an arrival forgets no one: the next pass (`plans`) does
        self._latest[experiment_id] = plan
        return plan

    def latest(self, experiment_id: str) -> PoolPlan | None:
        """The plan made at the experiment's latest arrival (None: none since this controller started)."""
        return self._latest.get(experiment_id)

    def finished(self, experiment_id: str) -> None:
        """Record one request's completion (the experiment's idle time starts when none runs)."""
        self.tracker.record_completion(experiment_id)

    def cold_started(self, experiment_id: str, seconds: float) -> None:
        """A container of the experiment answered its first request `seconds` (real time) after that
        request arrived: the experiment's measured cold start (its plans' price and pre-warm lead)."""
        self.tracker.record_cold_start(experiment_id, seconds)

    def plans(self) -> dict[str, PoolPlan]:
        """Every remembered experiment's plan now, and every scheduled one's, with its warm schedule."""
        schedules = self.schedules()
        plans = self.plans_of(self.tracker.snapshot())
        for experiment_id in schedules:
            if experiment_id not in plans:
                plans[experiment_id] = scheduled_plan(experiment_id, None, self.policy, self.lead,
                                                      schedules[experiment_id], self._wall())
        self._record(plans)
        return plans

    def plans_of(self, activities: Iterable[ExperimentActivity]) -> dict[str, PoolPlan]:
        """These experiments' plans now (a snapshot's: a page of the dashboard), with their warm schedules."""
        schedules, wall = self.schedules(), self._wall()
        return {a.experiment_id: scheduled_plan(a.experiment_id, a, self.policy, self.lead,
                                                schedules.get(a.experiment_id), wall) for a in activities}

    def applied(self) -> dict[str, AppliedWindow]:
        """What this controller applied, per remembered experiment: each plan, stamped when it last
        changed (where the controller is the process itself, applying a plan is adopting it)."""
        self.plans()
        with self._lock:
            return dict(self._applied)

    def _record(self, plans: dict[str, PoolPlan]) -> None:
        remembered = self.tracker.remembered()
        with self._lock:
            for experiment_id in [e for e in self._applied if e not in remembered and e not in plans]:
                del self._applied[experiment_id]  # forgotten by the tracker
                self._latest.pop(experiment_id, None)
        self._adopt(plans)

    def _adopt(self, plans: dict[str, PoolPlan]) -> None:
        now = self._wall()
        with self._lock:
            for experiment_id, plan in plans.items():
                current = self._applied.get(experiment_id)
                if current is None or not current.holds(plan):
                    self._applied[experiment_id] = AppliedWindow.of(plan, now)

    def unused(self, experiment_id: str) -> PoolPlan:
        return unused_plan(experiment_id, self.policy)
