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

A plan turns a decision ("keep warm for W", or "scale to zero, pre-warm after P, keep for W") into
the two numbers a platform's autoscaler wants at this moment: the scaledown window of idle
containers and how many containers to keep regardless of traffic (`min_containers`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Callable, Iterable

from core.keepwarm.activity import ActivityTracker, ExperimentActivity, emulated_clock
from core.keepwarm.decision import NamedPolicy, WindowDecision, WindowReason
from core.keepwarm.policies import policy_from_settings, retention_s
from core.settings import MODAL_MIN_WINDOW_S, Settings


class PlanPhase(StrEnum):
    """Where an experiment's pool is in its plan."""

    #: Idle containers are kept for the decision's window (the plain plan).
    KEEP_WARM = "keep-warm"
    #: A pre-warm plan, before its pre-warm; the pool scales down at once (Modal's shortest window).
    AWAIT_PREWARM = "await-prewarm"
    #: A pre-warm plan, pre-warming: one container is pinned, a request is expected.
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
    #: Seconds (of idle time) until the plan changes by itself; None: it holds until the next request.
    changes_in_s: float | None

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
    def nothing_ahead(self) -> bool:
        """Nothing is planned but the next request: no container pinned now, no change to come."""
        return self.min_containers == 0 and self.changes_in_s is None

    def describe(self) -> str:
        """The plan in words, for logs and `/health` (derived from the enums, never parsed back)."""
        if self.phase is PlanPhase.KEEP_WARM:
            return f"keep idle containers {self.scaledown_window_s}s"
        if self.phase is PlanPhase.AWAIT_PREWARM:
            return f"scaled down until the pre-warm in {self.changes_in_s or 0.0:.1f}s"
        if self.phase is PlanPhase.PREWARM:
            due_s = (self.decision.prewarm_after_s or 0) - self.idle_s
            return f"pre-warming, the request expected in {max(0.0, due_s):.1f}s"
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
    #: Seconds (of idle time) until this state changes by itself; None: it holds until the next request.
    changes_in_s: float | None


def pool_state(window_s: float, prewarm_after_s: float | None, idle_s: float, lead_s: float) -> PoolState:
    """The autoscaler state for a decision (`window_s`, and `prewarm_after_s` for a pre-warm plan) once
    the experiment has been idle for `idle_s` (0 while a request runs). A plain window keeps idle
    containers for the window. A pre-warm plan lets the pool go at once (Modal's shortest window),
    pins one container from `lead_s` before the next request is due until the plan's keep time is
    over, then lets it go again."""
    if prewarm_after_s is None:
        return PoolState(PlanPhase.KEEP_WARM, int(window_s), 0, None)
    start, end = prewarm_after_s - lead_s, prewarm_after_s + window_s
    if idle_s < start:
        return PoolState(PlanPhase.AWAIT_PREWARM, MODAL_MIN_WINDOW_S, 0, start - idle_s)
    if idle_s < end:
        return PoolState(PlanPhase.PREWARM, MODAL_MIN_WINDOW_S, 1, end - idle_s)
    return PoolState(PlanPhase.PREWARM_OVER, MODAL_MIN_WINDOW_S, 0, None)


def plan_for(experiment_id: str, decision: WindowDecision, idle_s: float, lead_s: float) -> PoolPlan:
    """The plan of `decision` once the experiment has been idle for `idle_s` (`pool_state`)."""
    state = pool_state(decision.window_s, decision.prewarm_after_s, idle_s, lead_s)
    return PoolPlan(experiment_id, decision, state.phase, state.scaledown_window_s, state.min_containers, idle_s,
                    state.changes_in_s)


def plan_pool(activity: ExperimentActivity, policy: NamedPolicy, lead_s: float) -> PoolPlan:
    """The controller's decision for one experiment: the policy's window for its activity, as the
    autoscaler state at the activity's `now` (`lead_s`: a pre-warm starts this long before the
    request is due — a cold start's time, in the activity's clock)."""
    return plan_for(activity.experiment_id, policy.decide(activity), activity.idle_s, lead_s)


def plan_pools(activities: Iterable[ExperimentActivity], policy: NamedPolicy, lead_s: float) -> dict[str, PoolPlan]:
    """Every remembered experiment's plan (one controller pass)."""
    return {a.experiment_id: plan_pool(a, policy, lead_s) for a in activities}


def unused_plan(experiment_id: str, policy: NamedPolicy) -> PoolPlan:
    """The plan of an experiment with no remembered request (what its first request starts from)."""
    return plan_for(experiment_id, policy.decide(None), 0.0, 0.0)


class WindowController:
    """Runs `plan_pool` over an activity tracker: the controller of a backend whose controller sees
    every arrival itself (in-process; the ingress's view on Ray and Modal, whose response reports the
    plan of the very arrival it served)."""

    def __init__(self, tracker: ActivityTracker, policy: NamedPolicy, lead_s: float = 0.0,
                 wall: Callable[[], float] = time.time):
        self.tracker = tracker
        self.policy = policy
        #: A pre-warm starts this long before the request is due (the tracker's clock).
        self.lead_s = lead_s
        self._wall = wall
        self._lock = threading.Lock()
        self._applied: dict[str, AppliedWindow] = {}
        self._latest: dict[str, PoolPlan] = {}

    @classmethod
    def for_settings(cls, settings: Settings, tracker: ActivityTracker, policy: NamedPolicy) -> "WindowController":
        """The controller of these settings: its pre-warm lead (real seconds) in the tracker's
        emulated clock."""
        return cls(tracker, policy, settings.prewarm_lead_s * settings.time_scale)

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
        plan = plan_pool(self.tracker.record_request(experiment_id), self.policy, self.lead_s)
        self._adopt({experiment_id: plan})  # an arrival forgets no one: the next pass (`plans`) does
        self._latest[experiment_id] = plan
        return plan

    def latest(self, experiment_id: str) -> PoolPlan | None:
        """The plan made at the experiment's latest arrival (None: none since this controller started)."""
        return self._latest.get(experiment_id)

    def finished(self, experiment_id: str) -> None:
        """Record one request's completion (the experiment's idle time starts when none runs)."""
        self.tracker.record_completion(experiment_id)

    def plans(self) -> dict[str, PoolPlan]:
        """Every remembered experiment's plan now."""
        plans = plan_pools(self.tracker.snapshot(), self.policy, self.lead_s)
        self._record(plans)
        return plans

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
