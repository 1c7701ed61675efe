"""The one controller shape: activity → a pool's plan (window, pinned containers, phase), pure."""

from __future__ import annotations

import pytest

from core.keepwarm.activity import ActivityTracker
from core.keepwarm.cold_start_time import PrewarmLead
from core.keepwarm.controller import PREWARM_PLAN_WINDOW_S, PlanPhase, WindowController, plan_for, plan_pool, unused_plan
from core.keepwarm.decision import NamedPolicy, WindowDecision, WindowReason
from core.keepwarm.hybrid import HybridParams, hybrid_policy
from tests.conftest import FakeClock

HYBRID = NamedPolicy("hybrid", hybrid_policy(HybridParams(base_s=900, extension_s=900, activity_window_s=300)))
PREWARM = WindowDecision(120, WindowReason.LEARNED, "learned", prewarm_after_s=600)


def test_a_plain_window_keeps_idle_containers_for_the_window_whatever_the_idle_time() -> None:
    decision = WindowDecision(900, WindowReason.ISOLATED, "isolated")
    for idle in (0.0, 899.0, 5000.0):
        plan = plan_for("e", decision, idle, lead_s=30)
        assert (plan.phase, plan.scaledown_window_s, plan.min_containers, plan.changes_in_s) == (
            PlanPhase.KEEP_WARM, 900, 0, None)
    assert plan_for("e", decision, 300.0, 0).expires_in_s == 600.0
    assert plan_for("e", decision, 1000.0, 0).expires_in_s == 0.0


@pytest.mark.parametrize(("since", "phase", "pinned", "changes_in"), [
    (0.0, PlanPhase.SPELL, 3, 60.0),  # the spell's width held for a minute after the request ...
    (59.9, PlanPhase.SPELL, 3, pytest.approx(0.1)),
    (60.0, PlanPhase.AWAIT_PREWARM, 0, 510.0),  # ... then let go until lead (30 s) before the request due at 600
    (569.9, PlanPhase.AWAIT_PREWARM, 0, pytest.approx(0.1)),
    (570.0, PlanPhase.PREWARM, 3, 150.0),  # the width pinned until 600 + the keep time 120
    (719.9, PlanPhase.PREWARM, 3, pytest.approx(0.1)),
    (720.0, PlanPhase.PREWARM_OVER, 0, None),
])
def test_a_prewarm_plan_holds_the_spell_lets_go_then_pins_the_experiments_width_then_lets_go(
        since: float, phase: PlanPhase, pinned: int, changes_in: float | None) -> None:
    """Timed from the latest arrival (the gaps the policies learn), not from its completion: a request that
    ran 100 s changes nothing; the pool goes a minute after its requests (their minute shares it)."""
    plan = plan_for("e", PREWARM, idle_s=max(0.0, since - 100), lead_s=30, since_request_s=since, width=3)
    assert (plan.phase, plan.min_containers, plan.changes_in_s) == (phase, pinned, changes_in)
    assert plan.scaledown_window_s == PREWARM_PLAN_WINDOW_S == 60
    assert plan.nothing_ahead is (phase is PlanPhase.PREWARM_OVER)
    assert not plan.holds_only  # a pre-warm's pin starts containers
    assert plan.describe().startswith({PlanPhase.SPELL: "holding 3", PlanPhase.AWAIT_PREWARM: "scaled down",
                                       PlanPhase.PREWARM: "pre-warming 3,", PlanPhase.PREWARM_OVER: "pre-warm over"}[phase])
    if phase is PlanPhase.PREWARM:
        assert plan.describe().endswith(f"expected in {max(0.0, 600 - since):.1f}s")


def test_a_prewarm_due_within_the_spells_minute_follows_the_spell_at_once() -> None:
    soon = WindowDecision(120, WindowReason.LEARNED, "", prewarm_after_s=120)  # lead 90 s: the pin from 30 s
    spell = plan_for("e", soon, 10.0, lead_s=90, since_request_s=10.0, width=2)
    assert (spell.phase, spell.min_containers, spell.changes_in_s) == (PlanPhase.SPELL, 2, 20.0)
    pinned = plan_for("e", soon, 30.0, lead_s=90, since_request_s=30.0, width=2)
    assert (pinned.phase, pinned.min_containers, pinned.changes_in_s) == (PlanPhase.PREWARM, 2, 210.0)


@pytest.mark.parametrize(("idle", "pinned", "changes_in"), [
    (0.0, 1, 900.0),  # busy or just idle: the last container is held for the long window ...
    (899.0, 1, 1.0),
    (900.0, 0, None),  # ... then let go: idle containers are past the burst window by then
    (5000.0, 0, None),
])
def test_two_windows_keep_extra_containers_for_the_burst_window_and_hold_the_last_for_the_long_one(
        idle: float, pinned: int, changes_in: float | None) -> None:
    decision = WindowDecision(900, WindowReason.LEARNED, "learned", burst_window_s=120)
    plan = plan_for("e", decision, idle, lead_s=30)
    assert (plan.phase, plan.scaledown_window_s, plan.min_containers, plan.changes_in_s) == (
        PlanPhase.KEEP_WARM, 120, pinned, changes_in)
    assert plan.window_s == 900 and plan.holds_only  # the hold keeps a running container, never starts one
    assert plan.describe() == "keep extra containers 120s, the last one 900s"
    # a burst window no shorter than the window is one window
    same = plan_for("e", WindowDecision(900, WindowReason.LEARNED, "", burst_window_s=900), idle, lead_s=30)
    assert (same.scaledown_window_s, same.min_containers) == (900, 0)


def test_the_pool_plan_reads_the_time_since_the_latest_arrival_and_the_width_from_the_activity() -> None:
    from core.keepwarm.adaptive import AdaptiveParams, adaptive_policy

    policy = adaptive_policy(AdaptiveParams(concurrent_inputs=2))
    tracker = ActivityTracker(300, clock=FakeClock(0.0), learner=policy.learner)
    for start in range(0, 10 * 600, 600):  # every 10 minutes: 5 requests at once, each 200 s long
        for i in range(5):
            tracker.record_request("e", at=start + i)
        for i in range(5):
            tracker.record_completion("e", at=start + 200 + i)
    activity = tracker.record_request("e", at=6000.0)
    assert activity.width == 3  # 5 requests in flight, 2 a container
    plan = plan_pool(activity, policy, PrewarmLead(30))
    # the period is learned: the gap from a burst's last arrival to the next (596 s) is in minute 9
    assert plan.decision.prewarm_after_s == 540
    later = plan_pool(tracker.snapshot()[0], policy, PrewarmLead(30))
    assert later.phase is PlanPhase.SPELL and later.min_containers == 3


def test_the_plan_is_the_policys_decision_for_the_activity_at_its_clock() -> None:
    clock = FakeClock(0.0)
    tracker = ActivityTracker(300, clock=clock)
    first = plan_pool(tracker.record_request("e"), HYBRID, PrewarmLead())
    assert (first.window_s, first.reason, first.idle_s) == (900, WindowReason.ISOLATED, 0.0)
    tracker.record_completion("e")
    clock.advance(100)
    second = plan_pool(tracker.record_request("e"), HYBRID, PrewarmLead())  # a second request inside the activity window
    assert (second.window_s, second.scaledown_window_s, second.reason) == (1800, 1800, WindowReason.RECENT_ACTIVITY)
    tracker.record_completion("e")
    clock.advance(50)
    later = plan_pool(tracker.snapshot()[0], HYBRID, PrewarmLead())
    assert (later.idle_s, later.expires_in_s) == (50.0, 1750.0)


def test_the_controller_answers_the_same_plan_for_an_arrival_as_for_the_pass_after_it() -> None:
    clock = FakeClock(0.0)
    controller = WindowController(ActivityTracker(300, clock=clock), HYBRID)
    at_arrival = controller.arrived("e")
    assert controller.plans() == {"e": at_arrival}  # the response's window is the one applied
    controller.finished("e")
    clock.advance(10)
    assert controller.plans()["e"].idle_s == 10.0
    assert unused_plan("new", HYBRID).reason is WindowReason.NO_ACTIVITY
    assert controller.unused("new").window_s == 900


def test_an_arrival_touches_its_own_experiment_only_and_the_next_pass_forgets_the_idle_ones() -> None:
    clock = FakeClock(0.0)
    tracker = ActivityTracker(300, retention_s=600, clock=clock)
    scans = []
    remembered = tracker.remembered
    tracker.remembered = lambda: scans.append(1) or remembered()  # type: ignore[method-assign]
    controller = WindowController(tracker, HYBRID)
    for i in range(500):
        controller.arrived(f"e{i}")
        controller.finished(f"e{i}")
    assert scans == []  # an arrival does not go over every remembered experiment (its cost: one experiment's)
    clock.advance(700)  # all of them idle past the retention
    controller.arrived("fresh")
    assert set(controller.applied()) == {"fresh"} and scans  # the pass forgot the others
    assert controller.latest("e0") is None and controller.latest("fresh") is not None
