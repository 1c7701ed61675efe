"""The window controller on Ray — Serve's autoscaling policy — as pure functions and one class fed
Serve's context by hand (no Ray needed; the GCS is the fake at its network call)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from backends.local_ray import scaling
from backends.local_ray.activity_store import ActivityStore
from backends.local_ray.pool import autoscaling_config, deployment_settings
from backends.local_ray.scaling import (
    ReplicaReport, ScalingInputs, Why, desired_replicas, pool_activity, reports_from_metrics,
)
from backends.local_ray.settings import load_ray_settings
from core.events import EventName, read_events
from core.keepwarm.controller import PlanPhase, plan_for
from core.keepwarm.decision import NamedPolicy, WindowDecision, WindowReason
from core.keepwarm.shared_activity import DurableActivity

NOW = 10_000.0


def plain(window_s: int, idle_s: float = 0.0):  # type: ignore[no-untyped-def]
    return plan_for("e", WindowDecision(window_s, WindowReason.ISOLATED, ""), idle_s, 0.0)


def prewarm(idle_s: float, after_s: int = 600, keep_s: int = 120, lead_s: float = 50.0):  # type: ignore[no-untyped-def]
    return plan_for("e", WindowDecision(keep_s, WindowReason.LEARNED, "", prewarm_after_s=after_s), idle_s, lead_s)


def idle(real_s: float, in_flight: int = 0, served: bool = True, failed: bool = False) -> ReplicaReport:
    return ReplicaReport(last_busy=NOW - real_s, in_flight=in_flight, served=served, failed=failed)


def decide(reports: list[ReplicaReport], plan: Any = None, ongoing: float = 0, scale: float = 1, unreported: int = 0,
           starting: int = 0, max_replicas: int = 10, current: int | None = None):  # type: ignore[no-untyped-def]
    return desired_replicas(ScalingInputs(NOW, reports, ongoing, target_ongoing=2, time_scale=scale,
                                          max_replicas=max_replicas, plan=plan, unreported=unreported, starting=starting,
                                          current=len(reports) if current is None else current))


# --- applying a plan ----------------------------------------------------------------------------

def test_warm_inside_the_window_and_zero_at_its_end() -> None:
    assert decide([idle(899.9)], plain(900)).replicas == 1
    decision = decide([idle(900.0)], plain(900, idle_s=900))
    assert decision.replicas == 0 and decision.why is Why.IDLE
    assert "≥ window 900s" in decision.describe(ScalingInputs(NOW, [], 0, 2, 1, 10))


def test_time_scale_multiplies_real_idle_time() -> None:
    assert decide([idle(2.9)], plain(900), scale=300).replicas == 1  # 870 emulated seconds
    assert decide([idle(3.0)], plain(900, idle_s=900), scale=300).replicas == 0  # 900 emulated seconds


def test_the_pools_latest_request_keeps_a_replica_whose_report_trails_it() -> None:
    """The replicas report every few tenths of a second: one that answered a request a moment ago may
    still report the time before it. The plan's idle clock (from the published arrival) keeps it."""
    assert decide([idle(3.0)], plain(900, idle_s=30), scale=300).replicas == 1
    assert decide([idle(3.0), idle(3.0)], plain(900, idle_s=30), scale=300).replicas == 1  # one, not every one
    assert decide([idle(3.0, failed=True)], plain(900, idle_s=30), scale=300).replicas == 0  # no model: nothing kept
    assert decide([idle(3.0)], plain(900, idle_s=30), scale=300, current=0).replicas == 0  # scaled down: not started again


def test_the_plan_applies_to_every_replica_of_the_pool() -> None:
    """As on Modal, one autoscaler setting for the whole pool: a replica idle for longer than the
    window goes even when another one served the latest request."""
    assert decide([idle(1000), idle(10)], plain(1800)).replicas == 2
    assert decide([idle(1000), idle(10)], plain(900)).replicas == 1


def test_in_flight_requests_keep_a_replica_whatever_the_window() -> None:
    assert decide([idle(10_000, in_flight=1)], plain(2)).replicas == 1


def test_an_idle_replica_whose_model_failed_to_load_goes_at_once() -> None:
    """It holds no model: keeping it for the window would hold a replica slot for nothing; the next
    request starts a new replica, which loads the model again."""
    decision = decide([idle(1, failed=True)], plain(900))
    assert decision.replicas == 0 and decision.why is Why.LOAD_FAILED
    assert decide([idle(0, in_flight=1, failed=True)], plain(900)).replicas == 1  # a request still on it
    assert decide([idle(1, failed=True), idle(1)], plain(900)).replicas == 1  # a healthy one keeps its window


def test_load_scales_up_to_the_maximum() -> None:
    busy = idle(0, in_flight=2)
    decision = decide([busy], plain(900), ongoing=7)
    assert decision.replicas == 4 and decision.why is Why.LOAD  # ceil(7 / 2)
    assert decide([busy], plain(900), ongoing=100, max_replicas=3).replicas == 3


def test_an_idle_pool_does_not_take_the_handles_stale_load_for_traffic() -> None:
    """The handles push their load every few tenths of a second, averaged over a second: moments after
    the pool's latest request, with every replica reporting idle, that figure only echoes the past and
    must not hold replicas past their window (one stays: the latest request's)."""
    echo = decide([idle(50), idle(50), idle(0.5)], plain(20, idle_s=5), ongoing=3.2, scale=10)
    assert (echo.replicas, echo.why) == (1, Why.PLAN)
    assert decide([idle(2.2)], plain(20, idle_s=22), ongoing=0, scale=10).replicas == 0
    assert decide([], plain(900), ongoing=1).replicas == 1  # no replica: the handle's queue is the only signal


def test_a_request_waiting_for_a_replica_that_just_started_keeps_it() -> None:
    """Found under CPU load: a cold start longer than the window (2 s real at time scale 300) ended
    with a replica that had never served, idle (by its own clock) for longer than the window, while
    the request that started it still waited at the handle — and the pool was scaled to zero under
    it. A load figure long after the pool was last busy is a request waiting, not an echo."""
    waiting = decide([idle(3.0, served=False)], plain(600, idle_s=24 * 300), ongoing=1, scale=300)
    assert (waiting.replicas, waiting.why) == (1, Why.LOAD)
    assert decide([idle(3.0, served=False)], plain(600, idle_s=24 * 300), ongoing=0, scale=300).replicas == 0


def test_the_last_replica_stays_while_the_handles_load_still_echoes_the_last_request() -> None:
    """Serve starts a replica at once, bypassing the policy, for a pool at zero whose averaged load is
    above 0: scaling to zero during the echo would start a replica for nothing (a short window scales
    down right after its request). One stays until the echo is gone."""
    from backends.local_ray.pool import LOOK_BACK_PERIOD_S, METRICS_PUSH_INTERVAL_S

    assert scaling.ECHO_S > LOOK_BACK_PERIOD_S + 2 * METRICS_PUSH_INTERVAL_S  # what Serve averages, as pushed
    just_done = plain(2, idle_s=5)  # 0.5 s real at scale 10: past Modal's shortest window (2 s), inside the echo
    decision = decide([idle(0.5)], just_done, ongoing=0.4, scale=10)
    assert (decision.replicas, decision.why) == (1, Why.LOAD_ECHO)
    assert decide([idle(0.5)], just_done, ongoing=0, scale=10).replicas == 0
    assert decide([idle(2.0)], plain(2, idle_s=20), ongoing=0, scale=10).replicas == 0  # past the echo: not held
    assert decide([idle(2.0)], plain(2, idle_s=20), ongoing=0.4, scale=10).why is Why.LOAD  # ... but a request waits
    assert decide([], just_done, ongoing=0.4, scale=10).replicas == 1  # none left: the load is a request's (Serve's path)


def test_before_any_request_starting_replicas_are_kept() -> None:
    assert decide([], unreported=1).why is Why.STARTING and decide([], unreported=1).replicas == 1
    assert decide([idle(50, served=False)]).replicas == 1  # up, waiting for its first request
    assert decide([]).replicas == 0 and decide([]).why is Why.NO_REPLICA


def test_replicas_still_starting_count_as_capacity() -> None:
    """Under steady load a noisy load estimate used to cancel replicas while they started (37 of 38
    removed replicas, measured): a starting replica is capacity on its way, kept like a warm one."""
    assert decide([idle(0.1, in_flight=1)], plain(900), ongoing=2, starting=2).replicas == 3
    assert decide([], plain(900, idle_s=5000), starting=1).replicas == 1  # e.g. a recovering controller


def test_a_prewarm_plan_holds_the_spell_scales_to_zero_then_pins_the_width_until_its_keep_time_ends() -> None:
    # pre-warm 600 s after the last request, keep 120 s; lead 50 s (all emulated)
    held = decide([idle(3)], prewarm(3))
    assert held.replicas == 1 and held.phase is PlanPhase.SPELL  # the minute after a request: its spell's width held
    assert decide([idle(61)], prewarm(61)).replicas == 0  # idle past a minute: let it go
    assert decide([], prewarm(300)).replicas == 0  # waiting for the pre-warm
    pinned = decide([], prewarm(555))
    assert pinned.replicas == 1 and pinned.phase is PlanPhase.PREWARM  # 45 s before the request is due
    assert decide([idle(95, served=False)], prewarm(650)).replicas == 1  # kept during the keep window (up since 555)
    assert decide([idle(170, served=False)], prewarm(725)).replicas == 0  # keep time over
    wide = plan_for("e", WindowDecision(120, WindowReason.LEARNED, "", prewarm_after_s=600), 555, 50.0, width=3)
    assert decide([], wide).replicas == 3  # as many as its latest spells ran at once


def test_two_windows_let_the_extra_replicas_go_after_the_burst_window_and_hold_the_last() -> None:
    def two(idle_s: float):  # type: ignore[no-untyped-def]  # keep the last 900 s, the extra ones 120 s
        return plan_for("e", WindowDecision(900, WindowReason.LEARNED, "", burst_window_s=120), idle_s, 0.0)

    burst = [idle(100), idle(150), idle(200)]
    assert decide(burst, two(100)).replicas == 1  # two idle past 120 s: gone; the pool's last held
    assert decide([idle(100)], two(100)).replicas == 1
    assert decide([idle(90)], two(90)).replicas == 1
    assert decide([idle(500)], two(500)).replicas == 1  # past the burst window: the hold keeps it
    assert decide([idle(901)], two(901)).replicas == 0  # past the window: gone
    assert decide([idle(60), idle(70)], two(60)).replicas == 2  # inside the burst window: both stay
    # the hold keeps a running replica and starts none: a pool at zero stays there
    assert decide([], two(500), current=0).replicas == 0


def test_a_scale_events_words_name_the_window_that_applied() -> None:
    """Seen on Ray: a two-window scale-down read "warm: idle 0.0s < window 150s" (the extras' 30 s went
    unsaid), and one kept by a replica's own newer report "idle 145.5s < window 60s"."""
    two = plan_for("e", WindowDecision(150, WindowReason.ISOLATED, "", burst_window_s=30), 0.0, 0.0)
    inputs = ScalingInputs(NOW, [idle(40), idle(1)], 0, target_ongoing=1, time_scale=1, max_replicas=3, plan=two, current=3)
    decision = desired_replicas(inputs)
    assert decision.replicas == 1 and decision.describe(inputs) == "warm: idle 0.0s < window 150s; extra replicas go after 30s idle"
    late = plain(60, idle_s=145.5)
    inputs = ScalingInputs(NOW, [idle(2)], 0, target_ongoing=1, time_scale=10, max_replicas=3, plan=late, current=1)
    decision = desired_replicas(inputs)
    assert decision.replicas == 1 and decision.describe(inputs).startswith("warm: a replica busy less than the window 60s ago")


def test_a_request_in_flight_is_never_cut_by_a_prewarm_plan() -> None:
    assert decide([idle(0, in_flight=1)], prewarm(0), ongoing=1).replicas == 1


# --- the activity the plan is made from -------------------------------------------------------------

def published(last: float, previous: float | None = None, completion: float | None = None) -> DurableActivity:
    return DurableActivity("e", last, previous, completion, 2 if previous else 1)


def test_the_idle_clock_runs_from_the_last_request_or_the_last_replica_busy_after_serving() -> None:
    activity = pool_activity("e", published(NOW - 100), [idle(40)], NOW, 300, None)
    assert activity is not None and activity.idle_s == pytest.approx(40)  # the replica's answer came later
    # a replica that never served (a pre-warm, a start for load) reports its start: the clock goes on
    activity = pool_activity("e", published(NOW - 100), [idle(1, served=False)], NOW, 300, None)
    assert activity is not None and activity.idle_s == pytest.approx(100)
    busy = pool_activity("e", published(NOW - 100), [idle(0, in_flight=1)], NOW, 300, None)
    assert busy is not None and busy.idle_s == 0


def test_no_request_yet_is_no_activity_and_replicas_alone_stand_in_for_a_lost_record() -> None:
    assert pool_activity("e", None, [idle(5, served=False)], NOW, 300, None) is None
    stand_in = pool_activity("e", None, [idle(30)], NOW, 300, None)
    assert stand_in is not None and stand_in.idle_s == pytest.approx(30) and stand_in.previous_request is None


def test_reports_from_serve_metrics_take_the_latest_point_and_only_its_flags() -> None:
    """A flag missing from the replica's latest sample is not taken from older ones (they linger in
    Serve's look-back period)."""
    point = lambda t, v: SimpleNamespace(timestamp=t, value=v)  # noqa: E731
    raw = {
        scaling.LAST_BUSY: {"r1": [point(1, 1.0), point(2, 5.0)], "r2": [point(2, 7.0)]},
        scaling.IN_FLIGHT: {"r1": [point(1, 0.0), point(2, 1.0)], "r2": [point(2, 0.0)]},
        scaling.SERVED: {"r1": [point(2, 1.0)]},
        scaling.LOAD_FAILED: {"r2": [point(1, 1.0)]},
        scaling.READY_AT: {"r1": [point(1, 0.5)]},
        scaling.BUSY_S: {"r1": [point(1, 0.1), point(2, 0.4)]},
    }
    assert reports_from_metrics(raw, ["r1", "r2", "r3"]) == [
        ReplicaReport(5.0, 1, served=True, replica="r1", ready_at=0.5, busy_s=0.4),
        ReplicaReport(7.0, 0, replica="r2")]


# --- the policy Serve's controller runs -----------------------------------------------------------

def ctx(now: float, running: list[str] | None = None, metrics: dict | None = None, state: dict | None = None,
        ongoing: float = 0, target: int | None = None) -> SimpleNamespace:
    running = running or []
    return SimpleNamespace(current_time=now, running_replicas=running, raw_metrics=metrics or {}, policy_state=state or {},
                           total_num_requests=ongoing, capacity_adjusted_max_replicas=10,
                           target_num_replicas=len(running) if target is None else target)


def metrics(last_busy: float, in_flight: int = 0, served: bool = True) -> dict:
    point = lambda v: [SimpleNamespace(timestamp=1, value=v)]  # noqa: E731
    raw = {scaling.LAST_BUSY: {"r1": point(last_busy)}, scaling.IN_FLIGHT: {"r1": point(float(in_flight))}}
    if served:
        raw[scaling.SERVED] = {"r1": point(1.0)}
    return raw


def policy_for(time_scale: float = 10, **settings: Any) -> scaling.ScaledownWindowPolicy:
    values = load_ray_settings(env_file=None, time_scale=time_scale, base_warm_time=600, extension_time=600,
                               activity_window=300, prewarm_lead_s=5, **settings)
    return scaling.ScaledownWindowPolicy("e", "app", deployment_settings(values, ingress=False).model_dump(mode="json"))


def test_the_policy_plans_from_the_published_activity_with_cores_policy(gcs: Any) -> None:
    """Two requests 100 s apart (emulated, scale 10): the hybrid policy's base + extension, 1200 s —
    read from what the ingress published, not from anything a replica says."""
    store = ActivityStore("app")
    store.write(published((NOW - 20) * 10, previous=(NOW - 30) * 10, completion=(NOW - 20) * 10))
    policy = policy_for()
    replicas, _ = policy(ctx(NOW, ["r1"], metrics(NOW - 20)))
    plan = policy.plan(NOW, reports_from_metrics(metrics(NOW - 20), ["r1"]))
    assert replicas == 1 and plan is not None and plan.window_s == 1200 and plan.reason is WindowReason.RECENT_ACTIVITY
    assert policy(ctx(NOW + 100, ["r1"], metrics(NOW - 20)))[0] == 0  # 1200 s emulated idle: the window is over
    store.write(published((NOW - 20) * 10, completion=(NOW - 20) * 10))  # one isolated request: base 600 s
    assert policy_for()(ctx(NOW + 41, ["r1"], metrics(NOW - 20)))[0] == 0


def test_a_restarted_controller_keeps_warm_pools_and_pending_prewarms(gcs: Any) -> None:
    """Serve's policy state dies with the controller; the activity in the GCS does not: a fresh policy
    object keeps a warm pool warm and brings a pre-warm back on time."""
    ActivityStore("app").write(published((NOW - 10) * 10, completion=(NOW - 10) * 10))
    fresh = policy_for()
    assert fresh(ctx(NOW, ["r1"], metrics(NOW - 10)))[0] == 1  # idle 100 s of a 600 s window: kept
    learned = NamedPolicy("learned", lambda a: WindowDecision(120, WindowReason.LEARNED, "", prewarm_after_s=600))
    restarted = policy_for()
    restarted.policy = learned
    assert restarted(ctx(NOW + 30))[0] == 0  # 400 s emulated after the request: waiting for the pre-warm
    assert restarted(ctx(NOW + 56.5))[0] == 1  # 4.5 s (real) before the request is due: one comes back


def test_a_prewarm_starts_the_cold_start_the_ingress_measured_before_the_request_is_due(gcs: Any) -> None:
    """The ingress measured a 12 s start (real seconds) and published it with the activity: the pool's
    policy pins a replica 120 s (emulated, scale 10) before the request is due, not the configured
    lead's 50 s — the pre-warm is ready when the request comes."""
    from backends.local_ray.activity_sink import PublishedActivity

    values = load_ray_settings(env_file=None, time_scale=10, prewarm_lead_s=5)
    learned = NamedPolicy("learned", lambda a: WindowDecision(120, WindowReason.LEARNED, "", prewarm_after_s=600))
    ingress = PublishedActivity(values, learned, ActivityStore("app"))
    ingress.record_request("e", at=NOW * 10)
    ingress.record_completion("e", at=NOW * 10 + 1)

    def replicas_at(real_s: float) -> int:
        policy = policy_for()
        policy.policy = learned
        return policy(ctx(NOW + real_s))[0]

    asyncio.run(ingress.published("e"))
    assert [replicas_at(s) for s in (47, 56)] == [0, 1]  # not measured: 5 s (50 emulated) before it is due
    ingress.record_cold_start("e", 12.0)
    asyncio.run(ingress.published("e"))
    assert ActivityStore("app").read("e").cold_start_s == 12.0  # type: ignore[union-attr]
    assert [replicas_at(s) for s in (47, 49)] == [0, 1]  # 12 s (120 emulated) before it is due


def test_a_warm_schedule_the_ingress_published_pins_its_replicas_without_any_request(gcs: Any) -> None:
    """Weekdays 09:00–18:00 UTC, two replicas, nothing ever requested: the pool's policy pins two from
    the lead (5 s real) before 09:00 until 18:00 and none on a Saturday; a request's plan gets the
    schedule on top; a schedule cleared is gone within `READ_EVERY_S`."""
    from datetime import datetime

    from backends.local_ray.schedule_store import READ_EVERY_S, ScheduleStore
    from core.keepwarm.warm_schedule import WarmWindow

    def at(iso: str) -> float:
        return datetime.fromisoformat(iso).timestamp()

    store = ScheduleStore("app")
    office = (WarmWindow(days="mon-fri", hours="09:00-18:00", containers=2),)
    store.write("e", office)
    assert store.read("e") == office and store.read("other") is None
    policy = policy_for()
    monday = at("2026-12-07T09:00:00+00:00")
    assert [policy(ctx(monday + s))[0] for s in (-6, -4, 3600, 9 * 3600 - 1, 9 * 3600 + 1)] == [0, 2, 2, 2, 0]
    plan = policy.plan(monday + 60, [])
    assert plan is not None and plan.scheduled_containers == 2 and plan.min_containers == 2 and plan.window_s == 600
    assert policy_for()(ctx(at("2026-12-12T10:00:00+00:00")))[0] == 0  # Saturday
    ActivityStore("app").write(published((monday - 20) * 10, completion=(monday - 20) * 10))
    requested = policy_for()
    assert requested(ctx(monday + 30, ["r1"], metrics(monday - 20)))[0] == 2  # the request's window, and the schedule
    store.write("e", None)
    assert requested(ctx(monday + 30 + READ_EVERY_S, ["r1"], metrics(monday - 20)))[0] == 1  # the window alone


def test_the_policy_reads_the_gcs_when_a_replica_was_busy_since_and_otherwise_seldom(gcs: Any) -> None:
    """The ingress publishes an arrival before its request reaches a replica: a replica busy since
    the policy's last read means news; nothing new costs one read per REFRESH_S."""
    ActivityStore("app").write(published((NOW - 10) * 10))
    policy = policy_for()
    policy(ctx(NOW, ["r1"], metrics(NOW - 10)))
    reads = gcs.reads_in.get("hybrid-serve", 0)
    for step in range(10):  # the controller's loop, 0.1 s apart, nothing new
        policy(ctx(NOW + 0.1 * (step + 1), ["r1"], metrics(NOW - 10)))
    assert gcs.reads_in.get("hybrid-serve", 0) == reads
    ActivityStore("app").write(published((NOW + 1.5) * 10, previous=(NOW - 10) * 10))
    policy(ctx(NOW + 2, ["r1"], metrics(NOW + 1.9)))  # a request answered since: read at once
    assert gcs.reads_in.get("hybrid-serve", 0) == reads + 1
    assert policy.plan(NOW + 2, reports_from_metrics(metrics(NOW + 1.9), ["r1"])).reason is WindowReason.RECENT_ACTIVITY
    policy(ctx(NOW + 2 + scaling.REFRESH_S, ["r1"], metrics(NOW + 1.9)))
    assert gcs.reads_in.get("hybrid-serve", 0) == reads + 2


def test_requests_queued_at_a_pool_that_went_to_zero_size_it_by_the_ingresss_count(gcs: Any) -> None:
    """Found on Ray: after a scale to zero, three requests waiting at the pool's handle showed as 1.0 in
    Serve's load figure (its cold-start path's) for 80 ticks, so the pool ran them one after another on
    one replica; Modal starts a container for each (`max_inputs=1`). The ingress's count of requests at
    the pool, published with the activity, sizes it — read every BUSY_REFRESH_S while requests wait."""
    from backends.local_ray.activity_store import Published

    store = ActivityStore("app")
    store.write(published((NOW - 100) * 10, completion=(NOW - 100) * 10))
    policy = policy_for(modal_concurrent_inputs=1)
    assert policy(ctx(NOW, []))[0] == 0  # idle, at zero
    store.write(Published(published(NOW * 10 + 1, previous=(NOW - 100) * 10), in_flight=3))  # a burst of three
    replicas, _ = policy(ctx(NOW + 0.1, [], ongoing=1.0, target=1))  # Serve's cold path started one for "1.0"
    assert replicas == 1  # read within BUSY_REFRESH_S of the last read, not at once
    replicas, _ = policy(ctx(NOW + 0.1 + scaling.BUSY_REFRESH_S, ["r1"], ongoing=1.0, target=1))
    assert replicas == 3
    store.write(Published(published(NOW * 10 + 1, previous=(NOW - 100) * 10), in_flight=0))  # all answered
    later = NOW + 0.2 + 2 * scaling.BUSY_REFRESH_S
    assert policy(ctx(later, ["r1"], metrics(later - 0.1), target=3))[0] == 3  # inside the window: kept
    assert policy.published.in_flight == 0  # the count followed them down
    assert scaling.ongoing_requests(2.0, 0) == 2.0 and scaling.ongoing_requests(1.0, 3) == 3.0


def test_a_request_the_replicas_have_not_reported_yet_still_restarts_the_window(gcs: Any) -> None:
    """A short request inside the window whose replica's report has not reached the controller yet:
    the scale-down its stale reports suggest is checked against the arrival published in the GCS —
    the replica stays (the real-Ray test of a restarted idle clock failed this way, 1.7 s early)."""
    ActivityStore("app").write(published((NOW - 50) * 10, completion=(NOW - 50) * 10))
    policy = policy_for()
    assert policy(ctx(NOW, ["r1"], metrics(NOW - 50)))[0] == 1  # 500 s of 600 s idle
    ActivityStore("app").write(published((NOW + 5) * 10, previous=(NOW - 50) * 10))  # an arrival at NOW + 5
    reads = gcs.reads_in.get("hybrid-serve", 0)
    assert policy(ctx(NOW + 9, ["r1"], metrics(NOW - 50)))[0] == 1  # the stale reports say 590 s: kept
    assert policy(ctx(NOW + 10.5, ["r1"], metrics(NOW - 50)))[0] == 1  # they say 605 s; the GCS 55 s: kept
    assert gcs.reads_in.get("hybrid-serve", 0) == reads + 1
    assert policy(ctx(NOW + 66, ["r1"], metrics(NOW - 50)))[0] == 0  # 610 s after the arrival: gone


def test_an_unreadable_gcs_keeps_the_last_activity_read(gcs: Any) -> None:
    ActivityStore("app").write(published((NOW - 10) * 10))
    policy = policy_for()
    assert policy(ctx(NOW, ["r1"], metrics(NOW - 10)))[0] == 1
    gcs.fail = True
    assert policy(ctx(NOW + scaling.REFRESH_S + 1, ["r1"], metrics(NOW - 10)))[0] == 1  # 160 s < 600 s: kept


def test_scale_events_name_the_plans_phase_and_reason(gcs: Any, tmp_path: Any) -> None:
    log = tmp_path / "events.jsonl"
    ActivityStore("app").write(published((NOW - 70) * 10, completion=(NOW - 70) * 10))
    policy = policy_for(event_log=log)
    assert policy(ctx(NOW, ["r1"], metrics(NOW - 70)))[0] == 0  # 700 s emulated ≥ 600 s
    [event] = read_events(log)
    assert event["event"] is EventName.SCALE_TO_ZERO and event["window_s"] == 600
    assert event["phase"] == "keep-warm" and event["reason_code"] == "isolated" and "≥ window 600s" in event["reason"]


def test_a_replica_that_never_starts_stops_holding_the_pool(gcs: Any) -> None:
    policy = policy_for(cold_start_timeout_s=30)
    replicas, state = policy(ctx(NOW, target=1))
    assert replicas == 1  # starting: kept
    replicas, state = policy(ctx(NOW + 31, state=state, target=1))
    assert replicas == 0  # not placeable for longer than the cold-start timeout: let it go


def test_pools_configured_at_once_on_many_threads_all_get_their_policy() -> None:
    """Two cold starts build their pools on worker threads at once; Serve pickles the policy and the
    request router by value with a process-wide cloudpickle registration that two threads at once
    break (ValueError). The policy's settings cross as JSON and are validated again on the other side."""
    from concurrent.futures import ThreadPoolExecutor

    from backends.local_ray.pool import pool_application
    from core.serving.registry import Experiment

    settings = load_ray_settings(env_file=None, base_warm_time=1200)
    experiments = [Experiment(id=f"e{i}", source="org/model", task="feature-extraction") for i in range(200)]
    with ThreadPoolExecutor(8) as pool:
        apps = list(pool.map(lambda e: pool_application(settings, "app", e, None), experiments))
    configs = [app._bound_deployment._deployment_config for app in apps]
    kwargs = [c.autoscaling_config.policy.policy_kwargs for c in configs]
    assert [k["experiment"] for k in kwargs] == [e.id for e in experiments]
    assert all(c.autoscaling_config.policy.get_serialized_policy_def() for c in configs)
    rebuilt = scaling.ScaledownWindowPolicy(**kwargs[0])
    assert rebuilt.settings.base_warm_time == 1200 and rebuilt.settings.api_token is None
    with pytest.raises(ValueError, match="base_warm_time"):
        scaling.ScaledownWindowPolicy(**{**kwargs[0], "settings": {**kwargs[0]["settings"], "base_warm_time": -1}})


# --- the deployment's cap across pools (MODAL_MAX_CONTAINERS) -------------------------------------

def test_pools_under_load_share_the_deployments_cap_and_one_experiments_cap_holds(gcs: Any) -> None:
    """MODAL_MAX_CONTAINERS=3 is the whole deployment's: with 'a' at 2 replicas under load, 'b' (also
    under load, one experiment allowed 2) gets only the one slot left; when 'a' goes to zero, 'b' grows
    into its slots, up to its own cap — never more than 3 together, whatever order the policies run in."""
    values = load_ray_settings(env_file=None, max_containers=3, max_containers_per_experiment=2, replica_target_ongoing=1,
                               base_warm_time=60, extension_time=0)
    policies = []
    for experiment in ("a", "b"):  # as Serve's controller gets each pool's policy: unpickled by value, apart
        config = autoscaling_config(values, "capped", experiment).policy
        config.serialize_policy()
        policies.append(config.get_policy()(**config.policy_kwargs))
    a, b = policies
    for experiment in ("a", "b"):
        ActivityStore("capped").write(DurableActivity(experiment, NOW, None, NOW, 1))
    held: dict[str, int] = {}
    busy = metrics(NOW, in_flight=1)

    def run(policy: scaling.ScaledownWindowPolicy, at: float, running: int, ongoing: float, load: dict | None = busy) -> int:
        context = ctx(at, [f"r{i + 1}" for i in range(running)], load, ongoing=ongoing)  # r1 reports
        context.capacity_adjusted_max_replicas = values.experiment_max_containers  # as pool.py configures Serve
        held[policy.experiment] = policy(context)[0]
        return held[policy.experiment]

    assert run(a, NOW, 1, ongoing=9) == 2  # one experiment's cap: 2 of the 3
    assert run(b, NOW, 1, ongoing=9) == 1  # the one slot 'a' leaves
    assert run(b, NOW + 1, 1, ongoing=9) == 1 and sum(held.values()) == 3
    assert run(a, NOW + 200, 1, ongoing=0, load=metrics(NOW - 100)) == 0  # its 60 s window is over
    assert run(b, NOW + 201, 1, ongoing=9) == 2  # the freed slots, up to one experiment's cap
    assert run(a, NOW + 202, 0, ongoing=9) == 1 and sum(held.values()) == 3  # 'a' comes back into what is left


def test_a_cold_start_under_way_holds_its_slot_and_a_deleted_pool_frees_its_own(gcs: Any) -> None:
    """Serve starts a pool's first replica itself, past the policies: the ingress publishes the cold
    starts it let through, and another pool under load leaves their slots free; a pool whose policy
    no longer runs (deleted) stops holding slots after HELD_S."""
    import asyncio

    from backends.local_ray import replica_slots
    from backends.local_ray.replica_slots import ReplicaSlots, StartingBoard

    values = load_ray_settings(env_file=None, max_containers=2, replica_target_ongoing=1, base_warm_time=60,
                               extension_time=0)
    config = autoscaling_config(values, "board", "b").policy
    config.serialize_policy()
    b = config.get_policy()(**config.policy_kwargs)
    ActivityStore("board").write(DurableActivity("b", NOW, None, NOW, 1))

    async def cold_start_of_c() -> dict[str, float]:
        slots = ReplicaSlots(2, StartingBoard("board"), clock=lambda: NOW)
        with slots.taken("c", {}):
            await asyncio.sleep(0.2)  # published in the background
            return StartingBoard("board").read()

    assert asyncio.run(cold_start_of_c()) == {"c": NOW}
    StartingBoard("board").write({"c": NOW})  # as it stands while c's replica loads
    context = ctx(NOW, ["r1"], metrics(NOW, in_flight=1), ongoing=9)
    context.capacity_adjusted_max_replicas = 2
    assert b(context)[0] == 1  # the other slot is c's
    StartingBoard("board").forget()
    replica_slots.hold("board", "gone", 1, NOW - replica_slots.HELD_S - 1)  # a deleted pool's last word
    context = ctx(NOW + 1, ["r1"], metrics(NOW + 1, in_flight=1), ongoing=9)
    context.capacity_adjusted_max_replicas = 2
    assert b(context)[0] == 2


def test_the_ingress_publishes_each_schedule_as_the_registry_changes_and_retries_a_failed_write(gcs: Any) -> None:
    from backends.local_ray.schedule_store import ScheduleStore
    from backends.local_ray.warm_schedules import WarmSchedules
    from core.keepwarm.warm_schedule import WarmWindow
    from core.serving.registry import Experiment, Registry
    from core.serving.registry_change import registry_diff

    office = (WarmWindow(days="mon-fri", hours="09:00-18:00"),)
    before = Registry({"e": Experiment(id="e", source="org/m", task="feature-extraction", warm=office),
                       "plain": Experiment(id="plain", source="org/m", task="feature-extraction")})
    after = Registry({"e": Experiment(id="e", source="org/m", task="feature-extraction")})
    schedules = WarmSchedules(ScheduleStore("app"), None, dict, lambda _: None)  # type: ignore[arg-type]  # nothing to deploy

    async def scenario() -> None:
        await schedules.registry_changed(registry_diff(Registry({}), before), before)
        assert ScheduleStore("app").read("e") == office and ScheduleStore("app").read("plain") is None
        gcs.fail = True
        await schedules.registry_changed(registry_diff(before, after), after)  # the schedule removed, the write fails
        assert schedules.unpublished == {"e", "plain"}
        gcs.fail = False
        await schedules.publish()  # the next check
        assert schedules.unpublished == set() and ScheduleStore("app").read("e") is None
        schedules.close()

    asyncio.run(scenario())


def test_with_no_schedule_registered_the_ingress_makes_no_plan_to_check(gcs: Any) -> None:
    from backends.local_ray.schedule_store import ScheduleStore
    from backends.local_ray.warm_schedules import WarmSchedules
    from core.serving.registry import Experiment, Registry

    asked: list[int] = []
    schedules = WarmSchedules(ScheduleStore("app"), None, lambda: asked.append(1) or {}, lambda _: None)  # type: ignore[arg-type]
    schedules.registry = Registry({"e": Experiment(id="e", source="org/m", task="feature-extraction")})
    assert asyncio.run(schedules.deploy_due()) == [] and asked == []
