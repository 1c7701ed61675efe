"""Trace-driven keep-warm simulation: what a policy costs in cold starts and idle container time.

Why this module exists: users choose MODAL_BASE_WARM_TIME / EXTENSION / ACTIVITY_WINDOW blind. This
replays real traces through the *same* policy functions the servers call (core.keepwarm) and counts
cold starts against idle container-minutes.

Minute mode (the published methodology for the Azure Functions 2019 trace): one warm container per
experiment; at each invocation minute m the policy decides a window of W minutes (from the
experiment's activity after that minute's last request: a minute with ≥ 2 invocations had another
request within it, else the previous request is the previous invocation minute); a gap of g
minutes to the next invocation minute stays warm iff g ≤ W; idle minutes are g − 1 for a bridged
gap, W for a gap that went cold, and min(W, minutes left in the trace) after the last invocation;
the first invocation is cold.

Fine mode: per-request times and execution durations, up to `max_containers` containers per
experiment, each taking `concurrent_inputs` requests at once; a request takes a busy container with
room, else the most recently used idle one, else starts one (a cold start) while below the maximum,
else waits for the first free slot. The plan in force (the latest decision) is applied as the servers
apply it (core.keepwarm.controller's `pool_state`), worked out at each request for the time since
the one before: one window for every idle container; two windows (extra containers the burst window,
the pool's last one the window); a pre-warm plan (idle containers go after a minute; the pool held at
the experiment's width through the minute after a request, and pinned at it from the lead before the
next request is due, `prewarm_after_s` after the latest arrival, to the end of the keep time). Idle
time is counted until a container goes (or the end of the trace; what the plans still keep at the
end cost after it is reported apart, `idle_after_end_minutes`, in both modes), the extra containers'
apart from the last one's; a container a plan starts idles from its start.
Each request's activity is what the servers' tracker (`ActivityTracker`) would give: the same
experiment records (`ExperimentRecord`), arrivals and completions in time order, and an experiment
idle for the retention forgotten — a time-ordered replay needs none of the tracker's lock or order of
use, so it keeps the records itself (a record is forgotten when the request before this one came
`retention` after it was last touched, which is when the tracker forgets it).

Oracle: the fewest cold starts possible at a given idle budget when the future is known and nothing
is pre-warmed — bridge the shortest idle gaps first (each bridged gap saves one cold start and costs
its length; a container that will not be reused is stopped at once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from heapq import heappop, heappush
from typing import Callable, Iterable, NamedTuple

import numpy as np

from core.keepwarm.activity import ExperimentActivity
from core.keepwarm.cold_start_time import lead_s as cold_start_lead
from core.keepwarm.experiment_record import ExperimentRecord, arrive_run, complete_run
from core.percentile import percentile as shared_percentile
from core.keepwarm.decision import NamedPolicy, WindowDecision
from core.keepwarm.histogram import LearnedGaps
from core.keepwarm.controller import PREWARM_PLAN_WINDOW_S
from core.sim.warm_spans import WarmSpans
from core.sim.traces import MinuteSeries, Request, TraceMinute, spread_time


@dataclass
class SimResult:
    policy: str
    invocations: int = 0
    cold_starts: int = 0
    idle_container_minutes: float = 0.0
    #: Idle container-minutes of the windows still open when the trace ends: what the last requests'
    #: windows cost after it (not in `idle_container_minutes`, which counts the trace's span only).
    idle_after_end_minutes: float = 0.0
    #: Fine mode: the part of `idle_container_minutes` of the extra (burst) containers — every container
    #: but the pool's last; the rest is the last container's. None: minute mode (one container).
    burst_idle_minutes: float | None = None
    experiment_cold_pct: list[float] = field(default_factory=list, repr=False)
    #: Fine mode: each experiment's own result (`hybrid-serve recommend` advises experiment by experiment).
    by_experiment: dict[str, "SimResult"] = field(default_factory=dict, repr=False)

    def add_experiment(self, invocations: int, cold: int, idle_minutes: float, after_end_minutes: float = 0.0,
                       experiment_id: str | None = None, burst_idle_minutes: float | None = None) -> None:
        if experiment_id is not None:
            self.by_experiment[experiment_id] = own = SimResult(self.policy)
            own.add_experiment(invocations, cold, idle_minutes, after_end_minutes, None, burst_idle_minutes)
        if burst_idle_minutes is not None:
            self.burst_idle_minutes = (self.burst_idle_minutes or 0.0) + burst_idle_minutes
        self.invocations += invocations
        self.cold_starts += cold
        self.idle_container_minutes += idle_minutes
        self.idle_after_end_minutes += after_end_minutes
        self.experiment_cold_pct.append(100.0 * cold / invocations if invocations else 0.0)

    @property
    def p75_experiment_cold_pct(self) -> float:
        """The 75th percentile of the experiments' own cold-start rates, % (Shahrad et al.'s measure)."""
        return percentile(self.experiment_cold_pct, 75)

    def summary(self, gpu_price_per_hour: float | None = None) -> dict[str, object]:
        out: dict[str, object] = {
            "policy": self.policy,
            "invocations": self.invocations,
            "cold_starts": self.cold_starts,
            "cold_start_pct": round(100.0 * self.cold_starts / self.invocations, 4) if self.invocations else 0.0,
            "p75_experiment_cold_start_pct": round(self.p75_experiment_cold_pct, 4),
            "idle_container_minutes": round(self.idle_container_minutes, 3),
            "idle_after_end_minutes": round(self.idle_after_end_minutes, 3),
        }
        if self.burst_idle_minutes is not None:
            out["burst_idle_minutes"] = round(self.burst_idle_minutes, 3)
            out["last_container_idle_minutes"] = round(self.idle_container_minutes - self.burst_idle_minutes, 3)
        if gpu_price_per_hour is not None:
            out["idle_cost"] = round(self.idle_container_minutes / 60 * gpu_price_per_hour, 2)
        return out


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default method); 0 for no values (no experiment)."""
    return shared_percentile(values, q, empty=0.0)


# --- minute mode ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MinuteOutcome:
    invocations: int
    cold_starts: int
    idle_minutes: float
    after_end_minutes: float = 0.0  # the last window's idle minutes past the trace's end


def simulate_minutes(series: MinuteSeries, policy: NamedPolicy, trace_minutes: int) -> MinuteOutcome:
    """One experiment in minute mode (rules in the module docstring; pre-warm rules below).

    A decision with `prewarm_after_s` = p minutes and window w: the container stops after the
    minute and comes back at minute m + p for w minutes. The next invocation g minutes later is warm
    iff p ≤ g ≤ p + w (idle g − p minutes), cold before p (no idle: the pre-warm never happened) or
    after p + w (idle w). A learning policy learns the experiment's idle gaps online, as in the tracker.
    """
    minutes = series.minutes
    cold, idle, after_end = 1, 0.0, 0.0
    previous_minute: int | None = None
    total = 0
    gaps = None if policy.learner is None else LearnedGaps(policy.learner)
    add, learn = (gaps.histogram.add, gaps.learned) if gaps is not None else (None, None)
    decide, experiment_id = policy.decide, series.experiment_id
    decided: WindowDecision | None = None  # the latest decision, and its window and delay in minutes
    window = prewarm = 0.0
    following = [m for m, _ in minutes[1:]] + [None]
    for (minute, count), next_minute in zip(minutes, following):
        total += count
        now = minute * 60.0
        before = None if previous_minute is None else previous_minute * 60.0
        learned = None
        if learn is not None:
            if before is not None:
                add(now - before)
            if count > 1:
                add(0.0, count - 1)
            learned = learn()
        if count > 1:
            before = now
        decision = decide(ExperimentActivity(experiment_id, now, now, before, count, total, 0, None, learned))
        if decision is not decided:  # policies often answer the very same decision again
            decided, window = decision, decision.window_s / 60
            prewarm = 0.0 if decision.prewarm_after_s is None else decision.prewarm_after_s / 60
        if next_minute is not None:
            gap = next_minute - minute
            if prewarm and gap < prewarm:
                cold += 1
            elif gap <= prewarm + window:
                idle += gap - (prewarm if prewarm > 1 else 1)
            else:
                idle += window
                cold += 1
        else:
            within = max(0.0, min(window, trace_minutes - minute - prewarm))
            idle, after_end = idle + within, window - within
        previous_minute = minute
    return MinuteOutcome(total, cold, idle, after_end)


class Oracle:
    """The fewest cold starts for any idle budget, from all experiments' gaps (minute mode).

    Bridging a gap of g minutes saves one cold start and costs g − 1 idle minutes, so the cheapest
    gaps go first (ties in arrival order). Gaps are kept as one array each for costs and owners: a
    result at any budget — total and per-experiment cold starts, for the p75 — is one vectorised pass.
    """

    def __init__(self) -> None:
        self.experiments = 0
        self.invocations = 0
        self._costs: list[int] = []  # the idle cost of bridging each gap, in arrival order
        self._owners: list[int] = []  # the experiment each gap belongs to
        self._per_experiment_invocations: list[int] = []
        self._prepared: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def add(self, series: MinuteSeries) -> None:
        minutes = [m for m, _ in series.minutes]
        self._costs.extend(b - a - 1 for a, b in zip(minutes, minutes[1:]))
        self._owners.extend([self.experiments] * (len(minutes) - 1))
        invocations = sum(c for _, c in series.minutes)
        self._per_experiment_invocations.append(invocations)
        self.experiments += 1
        self.invocations += invocations
        self._prepared = None

    def _prepare(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(costs in bridging order, their running sum, their owners)."""
        if self._prepared is None:
            costs = np.asarray(self._costs, dtype=np.int64)
            order = np.argsort(costs, kind="stable")
            self._prepared = (costs[order], np.cumsum(costs[order]), np.asarray(self._owners, dtype=np.int64)[order])
        return self._prepared

    def _bridged(self, idle_budget_minutes: float) -> int:
        return int(np.searchsorted(self._prepare()[1], idle_budget_minutes, side="right"))

    def cold_starts(self, idle_budget_minutes: float) -> int:
        return self.experiments + len(self._costs) - self._bridged(idle_budget_minutes)

    def result(self, name: str, idle_budget_minutes: float) -> SimResult:
        _, cumulative, owners = self._prepare()
        bridged = self._bridged(idle_budget_minutes)
        cold = 1 + np.bincount(owners[bridged:], minlength=self.experiments)
        result = SimResult(name)
        for invocations, experiment_cold in zip(self._per_experiment_invocations, cold.tolist()):
            result.add_experiment(invocations, experiment_cold, 0.0)
        result.idle_container_minutes = float(cumulative[bridged - 1]) if bridged else 0.0
        return result

    def curve(self, points: int = 200) -> list[tuple[float, int]]:
        """(idle minutes, cold starts) along the optimal frontier, sampled."""
        _, cumulative, _ = self._prepare()
        if not len(cumulative):
            return [(0.0, self.experiments)]
        step = max(1, len(cumulative) // points)
        indices = sorted(set(range(0, len(cumulative), step)) | {len(cumulative) - 1})
        return [(0.0, self.cold_starts(0))] + [
            (float(cumulative[i]), self.experiments + len(cumulative) - (i + 1)) for i in indices
        ]

    def p75_curve(self, idle_budgets: Iterable[float]) -> list[tuple[float, float]]:
        """(idle minutes, p75 per-experiment cold-start %) of the oracle at each budget."""
        return [(budget, self.result("", budget).p75_experiment_cold_pct) for budget in idle_budgets]


@dataclass(frozen=True)
class OracleDistance:
    """A policy against the oracle run at the policy's own idle budget, on both measures: total cold
    starts and the p75 per-experiment cold-start rate (× the oracle's; None where the oracle's is 0)."""

    cold_starts: float | None
    p75: float | None

    @classmethod
    def of(cls, result: SimResult, oracle: Oracle) -> "OracleDistance":
        bound = oracle.result(f"oracle@{result.policy}", result.idle_container_minutes)
        return cls(_ratio(result.cold_starts, bound.cold_starts),
                   _ratio(result.p75_experiment_cold_pct, bound.p75_experiment_cold_pct))


def _ratio(value: float, reference: float) -> float | None:
    if reference:
        return value / reference
    return 1.0 if not value else None


def simulate_minute_trace(
    series: Iterable[MinuteSeries], policies: list[NamedPolicy], trace_minutes: int,
    progress: Callable[[], None] | None = None,
) -> tuple[dict[str, SimResult], Oracle]:
    """Every policy over every experiment (streamed), plus the oracle built from the same gaps."""
    results = {policy.name: SimResult(policy.name) for policy in policies}
    oracle = Oracle()
    for s in series:
        oracle.add(s)
        for policy in policies:
            outcome = simulate_minutes(s, policy, trace_minutes)
            results[policy.name].add_experiment(outcome.invocations, outcome.cold_starts, outcome.idle_minutes,
                                                outcome.after_end_minutes)
        if progress:
            progress()
    return results, oracle


# --- fine mode --------------------------------------------------------------------------------------
#: Fine mode tells its progress every this many requests.
PROGRESS_EVERY = 10_000
#: After a minute run could not be replayed at once, up to this many of its requests go one by one
#: before it is tried again (doubling from one: what stopped it, a burst, may last).
MAX_BACKOFF = 64
#: The replay forgets an experiment idle this long (a week), as an activity tracker built with this
#: retention would. The servers forget sooner (`policies.retention_s`: 4 h for a learning policy).
RETENTION_S = 7 * 24 * 3600


@dataclass
class _Container:
    free_at: float  # when its current work ends (it idles from then on)
    #: Started by a plan (a pre-warm, a spell's width), not by a request, and no request yet: it idles
    #: from its start (`free_at`) and takes a request once its cold start is over.
    fresh: bool = False
    #: When its requests in flight end (a heap; ended ones are dropped when it is next looked at).
    running: list[float] = field(default_factory=list)

    def in_flight(self, now: float) -> int:
        """Its requests still running at `now` (those ended are dropped)."""
        running = self.running
        while running and running[0] <= now:
            heappop(running)
        return len(running)

    def room(self, now: float, per_container: int) -> bool:
        """It is busy at `now` and takes another request (fewer than `per_container` in flight)."""
        return 0 < self.in_flight(now) < per_container

    def take(self, start: float, duration: float) -> float:
        """Run a request from `start` (when it arrives, or when its container is ready); when it ends."""
        self.in_flight(start)
        end = start + duration
        heappush(self.running, end)
        if end > self.free_at:
            self.free_at = end
        self.fresh = False
        return end


@dataclass
class _ExperimentState:
    containers: list[_Container] = field(default_factory=list)
    #: The decision in force (made at the latest request) and when the latest request came.
    decision: WindowDecision | None = None
    last_arrival: float = float("-inf")
    #: The latest spell's width (`ExperimentActivity.width`): how many containers a pre-warm brings back.
    width: int = 1
    #: Trace time through which its warm schedule's segments were opened (`_warm_up`).
    warm_seen: float = float("-inf")
    #: When its requests in flight end (a heap): completions reach its record in time order.
    ends: list[float] = field(default_factory=list)
    invocations: int = 0
    cold: int = 0
    burst_idle_s: float = 0.0
    last_idle_s: float = 0.0
    after_end_s: float = 0.0


def simulate_requests(
    requests: Iterable[Request | TraceMinute],
    policy: NamedPolicy,
    max_containers: int,
    default_duration_s: float = 1.0,
    cold_start_s: float = 0.0,
    durations: dict[str, float] | None = None,
    activity_window_s: float = 300.0,
    progress: Callable[[int], None] | None = None,
    prewarm_lead_s: float | None = None,
    concurrent_inputs: int = 1,
    warm: WarmSpans | None = None,
) -> SimResult:
    """Fine mode over a time-ordered request stream (memory ∝ experiments × containers). `progress` is
    told how many requests were replayed since it was last told, every `PROGRESS_EVERY` or so and at the end
    (once per request cost a twentieth of the replay). A cold start of `cold_start_s` > 0 is measured by
    its experiment's record, as the servers measure theirs: the adaptive policy prices its plans for it,
    and a pre-warm starts `prewarm_lead_s` (default: the cold start), or the cold start where longer,
    before the request is due. A container takes `concurrent_inputs` requests at once
    (MODAL_CONCURRENT_INPUTS): a request goes to a busy container with room, else the most recently
    used idle one, else a new one (a cold start) below `max_containers`, else waits for the first slot.
    `warm`: a warm schedule every experiment keeps (`with_schedule` on the servers): when a segment opens,
    the experiment's pool is topped up to its containers (started then, idle from then), and its most
    recently used containers, as many, are held to the segment's end.
    The stream may give a 2019 trace minute by minute (`TraceMinute`, `read_replay`): the same requests,
    with each function's run through the minute replayed at once as far as its plan stays as it is
    (`_steady_run`) — the result is the one request by request, to the float's last bits."""
    replay = _Replay(policy, max_containers, cold_start_s, activity_window_s, prewarm_lead_s, concurrent_inputs, warm)
    replay.progress = progress
    durations = durations or {}
    for item in requests:
        if type(item) is TraceMinute:
            _replay_minute(replay, item, durations, default_duration_s)
        else:
            t, experiment_id, duration = item  # type: ignore[misc]
            replay.step(t, experiment_id, durations.get(experiment_id, default_duration_s) if duration is None else duration,
                        replay.previous)
    return replay.result()


class _Replay:
    """Fine mode's state: every experiment's pool (`_ExperimentState`) and record, and the trace's clock."""

    def __init__(self, policy: NamedPolicy, max_containers: int, cold_start_s: float, activity_window_s: float,
                 prewarm_lead_s: float | None, concurrent_inputs: int, warm: WarmSpans | None) -> None:
        self.policy, self.max_containers, self.cold_start_s, self.warm = policy, max_containers, cold_start_s, warm
        self.activity_window_s = activity_window_s
        self.records: dict[str, ExperimentRecord] = {}
        self.states: dict[str, _ExperimentState] = {}
        self.retention_s = max(RETENTION_S, activity_window_s)
        self.per_container = max(1, concurrent_inputs)
        # every experiment's first request measures its cold start (ExperimentRecord.cold_started): a pre-warm
        # covers it, and its plans are priced for it (core.keepwarm.cold_start_time)
        self.measured_s = cold_start_s if cold_start_s > 0 else None
        self.lead_s = cold_start_lead(cold_start_s if prewarm_lead_s is None else prewarm_lead_s, self.measured_s)
        self.end, self.previous, self.replayed = 0.0, float("-inf"), 0
        self.progress: Callable[[int], None] | None = None
        self.steady = policy.steady_gap_s > 0 and warm is None  # minute runs may be replayed at once

    def step(self, t: float, experiment_id: str, duration: float, previous: float) -> None:
        """One request at `t` (`previous`: when the one before it in the trace came — the retention's clock)."""
        if t > self.end:
            self.end = t
        state = self.states.get(experiment_id)
        if state is None:
            state = self.states[experiment_id] = _ExperimentState()
        if self.warm is not None:
            _warm_up(state, self.warm, t, self.lead_s, self.max_containers)
        container = _settle(state, t, self.lead_s, self.per_container, self.warm)
        cold, cold_start_s = False, self.cold_start_s
        if container is not None and container.fresh and container.free_at + cold_start_s > t:
            cold = True  # it waits for the rest of a start a plan began: a cold start, as the servers report it
            finish = container.take(container.free_at + cold_start_s, duration)
        elif container is not None:
            finish = container.take(t, duration)
        elif len(state.containers) < self.max_containers:
            cold = True
            container = _Container(free_at=t)
            state.containers.append(container)
            finish = container.take(t + cold_start_s, duration)
        else:  # every slot busy at the maximum: wait for the first to free up (warm, but queued)
            # busy containers were looked at (`room`: their ended requests dropped) unless one takes one request
            container = min(state.containers, key=_next_end if self.per_container > 1 else lambda c: c.running[0] if c.in_flight(t) else t)
            finish = container.take(heappop(container.running) if container.running else t, duration)
        state.last_arrival = t
        state.invocations += 1
        record = self.records.get(experiment_id)
        ends = state.ends
        while ends and ends[0] <= t:  # its requests that ended since: the record learns in time order
            record.complete(heappop(ends))  # type: ignore[union-attr]  # a request ended: its record exists
        heappush(ends, finish)
        first = record is None or record.touched <= previous - self.retention_s  # forgotten since (module docstring)
        if first:
            record = self.records[experiment_id] = ExperimentRecord(t, self.activity_window_s, self.policy.learner)
        record.arrive(t, first)  # type: ignore[union-attr]  # made above when missing
        if cold:
            state.cold += 1
            if self.measured_s is not None:
                record.cold_started(self.measured_s)  # type: ignore[union-attr]
        self.previous = t
        self.decide(state, record, experiment_id, t, 1)  # type: ignore[arg-type]

    def decide(self, state: _ExperimentState, record: ExperimentRecord, experiment_id: str, t: float, replayed: int) -> None:
        """The decision after the request(s) just replayed, up to `t`; the pool topped up as it says."""
        activity = record.snapshot(experiment_id, t)
        state.decision, state.width = self.policy.decide(activity), min(max(1, activity.width), self.max_containers)
        _top_up(state, t)
        self.replayed += replayed
        if self.progress and self.replayed >= PROGRESS_EVERY:
            self.progress(self.replayed)
            self.replayed = 0

    def result(self) -> SimResult:
        if self.progress and self.replayed:
            self.progress(self.replayed)
        result = SimResult(self.policy.name)
        for experiment_id, state in self.states.items():
            if self.warm is not None:
                _warm_up(state, self.warm, self.end, self.lead_s, self.max_containers)
            _close(state, self.end, self.lead_s, self.warm)
            result.add_experiment(state.invocations, state.cold, (state.burst_idle_s + state.last_idle_s) / 60,
                                  state.after_end_s / 60, experiment_id, state.burst_idle_s / 60)
        return result


def _replay_minute(replay: _Replay, minute: TraceMinute, durations: dict[str, float], default_duration_s: float) -> None:
    """A minute of the 2019 trace: each function's run, in the order of their first requests."""
    start, before = minute.start_s, replay.previous
    for experiment_id, count in sorted(minute.counts, key=lambda run: (spread_time(start, 0, run[1]), run[0])):
        duration = durations.get(experiment_id, default_duration_s)
        first = spread_time(start, 0, count)
        record = replay.records.get(experiment_id)
        previous = first  # what the retention looks at: exactly, only where it can matter
        if record is not None and record.touched <= first - replay.retention_s:
            earlier = minute.before(first, experiment_id)
            previous = before if earlier is None else max(before, earlier)
        replay.step(first, experiment_id, duration, previous)
        k, skip, backoff = 1, 0, 1
        while k < count:
            if replay.steady and k > 1:  # its second request decided on the gap every later one has
                if skip:
                    skip -= 1
                elif run := _steady_run(replay, experiment_id, start, k, count, duration):
                    k, backoff = k + run, 1
                    continue
                else:  # one by one for a while: what stopped it may last
                    skip, backoff = backoff, min(2 * backoff, MAX_BACKOFF)
            replay.step(spread_time(start, k, count), experiment_id, duration, spread_time(start, k - 1, count))
            k += 1
    replay.previous = max(before, minute.last_s())


def _steady_run(replay: _Replay, experiment_id: str, start: float, k: int, count: int, duration: float) -> int:
    """Replay requests k, k + 1, ... of a function's run through a minute (`spread_time`) at once, as far
    as its plan stays as it is: the decision is the same for all (`NamedPolicy.steady_gap_s`; the plan
    learned again at the last at the earliest), no container starts and none goes. Returns how many it
    replayed (0: the next must go one by one)."""
    state, record = replay.states[experiment_id], replay.records[experiment_id]
    decision, gap = state.decision, 60 / count
    if decision is None or gap * (1 + 1e-9) > replay.policy.steady_gap_s or not state.containers:
        return 0
    if decision.prewarm_after_s is not None and decision.prewarm_after_s - replay.lead_s <= PREWARM_PLAN_WINDOW_S:
        return 0  # its pre-warm could come due inside the minute
    gaps_left, bursts_left = (count - k, 0) if record.gaps is None else record.gaps.steady_for()
    most = min(count - k, gaps_left)
    if most <= 0:
        return 0
    return _pool_run(replay, experiment_id, start, k, count, duration, most, bursts_left)


def _pool_run(replay: _Replay, experiment_id: str, start: float, k: int, count: int, duration: float, most: int,
              bursts_left: int) -> int:
    """`_steady_run`'s loop: each request's container chosen as `_settle` chooses it (a busy one with
    room, the most recently used; else the most recently used idle one) and its burst levels fed one by
    one — the record, the plan and the decision once, after the run — until a request would start a
    container, wait, find one that might have gone, or change what the plan is made of (a burst gap at
    its mark; the width, for a pre-warm plan)."""
    state, record = replay.states[experiment_id], replay.records[experiment_id]
    decision, containers, levels = state.decision, state.containers, record.levels
    assert decision is not None
    per, cold_start_s, ends = replay.per_container, replay.cold_start_s, state.ends
    keep_s = None if decision.prewarm_after_s is not None else min(decision.window_s, decision.burst_window_s or decision.window_s)
    width = None if levels is None or decision.prewarm_after_s is None else levels.width
    if len(containers) < state.width and decision.prewarm_after_s is not None:
        return 0
    burst_idle = last_idle = 0.0
    completed, done_at, i, end_k, inf = 0, float("-inf"), k, k + most, float("inf")
    while i < end_k:
        t = start + (i + 0.5) * 60 / count  # spread_time, inline: this loop runs per request
        roomy = idle = first = None
        roomy_at = idle_at = first_end = -inf
        busy = gone = False
        for container in containers:  # as `_settle` looks at them (`room`, `in_flight`: inline)
            free_at = container.free_at
            if free_at > t:
                busy = True
                if per > 1 and not container.fresh:
                    running = container.running
                    while running[0] <= t:  # it is busy: a request runs past t
                        heappop(running)
                    if len(running) < per:
                        if free_at > roomy_at:
                            roomy, roomy_at = container, free_at
                    elif first is None or running[0] < first_end:
                        first, first_end = container, running[0]
            elif keep_s is not None and t > free_at + keep_s:
                gone = True  # it might have gone: one by one from here
                break
            elif free_at > idle_at:
                idle, idle_at = container, free_at
        if gone:
            break
        if roomy is not None:
            chosen, begin = roomy, t
        elif idle is not None:
            if idle.fresh and idle_at + cold_start_s > t:
                break  # it waits for a start a plan began: a cold start
            chosen, begin = idle, t
            if busy:
                burst_idle += t - idle_at
            else:
                last_idle += t - idle_at
        elif first is not None and len(containers) >= replay.max_containers:
            chosen, begin = first, heappop(first.running)  # all full at the cap: it waits for the first slot
        else:
            break  # a container starts
        running, finish = chosen.running, begin + duration  # `_Container.take`, inline
        while running and running[0] <= begin:
            heappop(running)
        heappush(running, finish)
        if finish > chosen.free_at:
            chosen.free_at = finish
        chosen.fresh = False
        while ends and ends[0] <= t:
            done_at = heappop(ends)
            completed += 1
            if levels is not None:
                levels.complete(done_at)
        heappush(ends, finish)
        i += 1
        if levels is not None:
            if (burst_gap := levels.arrive(t)) is not None:
                record.gaps.add_burst(burst_gap)  # type: ignore[union-attr]  # learning: both or neither
                bursts_left -= 1
                if bursts_left <= 0:
                    break
            if width is not None and levels.width != width:
                break
    run = i - k
    if not run:
        return 0
    _count_idle(state, burst_idle, False)
    _count_idle(state, last_idle, True)
    time_of = partial(spread_time, start, count=count)
    arrive_run(record, time_of, k, i)
    if completed:
        complete_run(record, completed, done_at)
    _ran(replay, experiment_id, time_of, k, run)
    return run


def _ran(replay: _Replay, experiment_id: str, time_of: Callable[[int], float], k: int, run: int) -> None:
    """After a run of requests k .. k + run - 1: the pool's clock, and the decision made after its last."""
    state, record = replay.states[experiment_id], replay.records[experiment_id]
    last = time_of(k + run - 1)
    state.last_arrival = last
    state.invocations += run
    if last > replay.end:
        replay.end = last
    replay.previous = last
    replay.decide(state, record, experiment_id, last, run)


class _Plan(NamedTuple):
    """What the plan in force (`pool_state`'s rules) does with an experiment's pool after its latest request."""

    burst_s: float  # how long an idle container other than the last is kept
    latest: _Container | None  # the last container: the most recently used
    latest_until: float  # until when the last container is kept
    pin_from: float  # a pre-warm plan's pin: from when (inf: none) ...
    pin_until: float  # ... until when (the containers still there when it starts are held as long)
    new: int  # containers the pin starts (it brings the pool to the experiment's width), when it starts
    held_until: float = float("-inf")  # a pre-warm plan holds every container until then (the spell's minute)
    warm: WarmSpans | None = None  # the warm schedule, holding ...
    warm_held: frozenset[int] = frozenset()  # ... these containers (ids: the most recently used) to its segments' ends


def _held(plan: _Plan, state: _ExperimentState, warm: WarmSpans) -> _Plan:
    """`plan` with the warm schedule holding the experiment's most recently used containers, as many as
    its segments ask for at most."""
    if not warm.containers:
        return plan
    recent = sorted(state.containers, key=_free_at, reverse=True)[:max(warm.containers)]
    return plan._replace(warm=warm, warm_held=frozenset(map(id, recent)))


def _plan(state: _ExperimentState, lead_s: float) -> _Plan:
    """One window for every container; two windows (the last container held for the longer); or a
    pre-warm plan: idle containers go after `PREWARM_PLAN_WINDOW_S`, the pool is held through the minute
    after the latest arrival (topped up to the experiment's width at it: `_top_up`), and again from
    `lead_s` before the next request is due — `prewarm_after_s` after the latest arrival — to the end of
    its keep time, at the width: the containers still there, and new ones for the rest."""
    decision, containers = state.decision, state.containers
    latest = (containers[0] if len(containers) == 1 else max(containers, key=_free_at)) if containers else None
    none = float("inf")
    if decision is None:
        return _Plan(0.0, latest, float("-inf"), none, none, 0)
    if decision.prewarm_after_s is None:
        burst = decision.burst_window_s
        burst_s = burst if burst is not None and burst < decision.window_s else decision.window_s
        latest_until = float("-inf") if latest is None else latest.free_at + decision.window_s
        return _Plan(burst_s, latest, latest_until, none, none, 0)
    held = state.last_arrival + PREWARM_PLAN_WINDOW_S  # the spell's hold
    due = state.last_arrival + decision.prewarm_after_s
    start, until = due - lead_s, due + decision.window_s
    there = sum(1 for c in state.containers if max(c.free_at + PREWARM_PLAN_WINDOW_S, held) > start)
    latest_until = float("-inf") if latest is None else max(latest.free_at + PREWARM_PLAN_WINDOW_S, held)
    return _Plan(PREWARM_PLAN_WINDOW_S, latest, latest_until, start, until, max(0, state.width - there), held)


def _free_at(container: _Container) -> float:
    return container.free_at


def _next_end(container: _Container) -> float:
    return container.running[0]


def _until(plan: _Plan, container: _Container) -> float:
    """Until when `container`, idle, is kept under `plan` (and the warm schedule)."""
    if container is plan.latest:
        until = plan.latest_until
    else:
        until = container.free_at + plan.burst_s
        if until < plan.held_until:
            until = plan.held_until
    if until > plan.pin_from and until < plan.pin_until:
        until = plan.pin_until
    if plan.warm is not None and id(container) in plan.warm_held:
        return plan.warm.held_until(max(until, container.free_at))
    return until


def _warm_up(state: _ExperimentState, warm: WarmSpans, now: float, lead_s: float, max_containers: int) -> None:
    """Open the warm schedule's segments that began since the experiment was last looked at, up to
    `now`: each tops the pool up to its containers (at most `max_containers`, as the servers clamp it)
    — those missing start when it opens."""
    for opens, containers in warm.starting(state.warm_seen, now):
        plan = _held(_plan(state, lead_s), state, warm)
        alive = sum(1 for c in state.containers if c.free_at > opens or _until(plan, c) >= opens)
        state.containers.extend(_Container(opens, fresh=True) for _ in range(min(containers, max_containers) - alive))
    state.warm_seen = now


def _top_up(state: _ExperimentState, now: float) -> None:
    """A pre-warm plan holds its pool at the experiment's width from each request on (`pool_state`):
    the containers missing start now."""
    missing = state.width - len(state.containers)
    if missing > 0 and state.decision is not None and state.decision.prewarm_after_s is not None:
        state.containers.extend(_Container(now, fresh=True) for _ in range(missing))


def _settle(state: _ExperimentState, now: float, lead_s: float, per_container: int = 1,
            warm: WarmSpans | None = None) -> _Container | None:
    """Bring the pool to `now` under the plan in force (what happened since the latest request): idle
    containers past their window are gone, their idle time counted (burst or last container); a
    pre-warm that came due started its containers. Returns the container the request at `now` takes —
    a busy one with room, the most recently used idle one, or one a plan is still starting — or None
    (all full, or none left). One pass, and a new list only when a container goes: this runs for every
    request."""
    plan = _plan(state, lead_s)
    if warm is not None:
        plan = _held(plan, state, warm)
    started: list[_Container] = []
    if plan.new and now >= plan.pin_from:
        if now <= plan.pin_until:  # the pre-warm's containers are there (or starting)
            started = [_Container(plan.pin_from, fresh=True) for _ in range(plan.new)]
            state.containers = state.containers + started
        else:  # they came and went unused
            for i in range(plan.new):
                _count_idle(state, plan.pin_until - plan.pin_from, i == 0 and plan.latest is None)
    chosen, roomy, expired = None, None, False
    for container in state.containers:
        if container.free_at <= now:
            if now > _until(plan, container):
                expired = True
            elif chosen is None or container.free_at > chosen.free_at:
                chosen = container
        elif per_container > 1 and not container.fresh and container.room(now, per_container):
            if roomy is None or container.free_at > roomy.free_at:
                roomy = container
    if expired:
        kept = []
        for container in state.containers:
            if container.free_at <= now and now > (until := _until(plan, container)):
                _count_idle(state, until - container.free_at, container is plan.latest)
            else:
                kept.append(container)
        state.containers = kept
    if roomy is not None:
        return roomy
    if chosen is not None:
        _count_idle(state, max(0.0, now - chosen.free_at), chosen is plan.latest or chosen is (started or [None])[0])
    return chosen


def _count_idle(state: _ExperimentState, seconds: float, last: bool) -> None:
    if last:
        state.last_idle_s += seconds
    else:
        state.burst_idle_s += seconds


def _close(state: _ExperimentState, end: float, lead_s: float, warm: WarmSpans | None = None) -> None:
    """Count the idle time of what the plan in force keeps after the trace's last request: inside the
    trace up to `end`, after it apart (`idle_after_end_minutes`)."""
    plan = _plan(state, lead_s) if warm is None else _held(_plan(state, lead_s), state, warm)
    spans = [(c.free_at, _until(plan, c), c is plan.latest) for c in state.containers]
    spans += [(plan.pin_from, plan.pin_until, i == 0 and plan.latest is None) for i in range(plan.new)]
    for start, until, last in spans:
        _count_idle(state, max(0.0, min(until, end) - start), last)
        state.after_end_s += max(0.0, until - max(start, end))
