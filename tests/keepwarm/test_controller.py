"""The one controller shape: activity → a pool's plan (window, pinned containers, phase), pure."""

from __future__ import annotations

import pytest

from core.keepwarm.activity import ActivityTracker
from core.keepwarm.controller import PlanPhase, WindowController, plan_for, plan_pool, unused_plan
from core.keepwarm.decision import NamedPolicy, WindowDecision, WindowReason
from core.keepwarm.hybrid import HybridParams, hybrid_policy
from core.settings import MODAL_MIN_WINDOW_S
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


@pytest.mark.parametrize(("idle", "phase", "pinned", "changes_in"), [
    (0.0, PlanPhase.AWAIT_PREWARM, 0, 570.0),  # pre-warm starts lead (30 s) before the request is due at 600
    (569.9, PlanPhase.AWAIT_PREWARM, 0, pytest.approx(0.1)),
    (570.0, PlanPhase.PREWARM, 1, 150.0),  # pinned until 600 + the keep time 120
    (719.9, PlanPhase.PREWARM, 1, pytest.approx(0.1)),
    (720.0, PlanPhase.PREWARM_OVER, 0, None),
])
def test_a_prewarm_plan_scales_down_then_pins_one_container_then_lets_it_go(
        idle: float, phase: PlanPhase, pinned: int, changes_in: float | None) -> None:
    plan = plan_for("e", PREWARM, idle, lead_s=30)
    assert (plan.phase, plan.min_containers, plan.changes_in_s) == (phase, pinned, changes_in)
    assert plan.scaledown_window_s == MODAL_MIN_WINDOW_S
    assert plan.nothing_ahead is (phase is PlanPhase.PREWARM_OVER)
    assert plan.describe().startswith({PlanPhase.AWAIT_PREWARM: "scaled down", PlanPhase.PREWARM: "pre-warming,",
                                       PlanPhase.PREWARM_OVER: "pre-warm over"}[phase])


def test_the_plan_is_the_policys_decision_for_the_activity_at_its_clock() -> None:
    clock = FakeClock(0.0)
    tracker = ActivityTracker(300, clock=clock)
    first = plan_pool(tracker.record_request("e"), HYBRID, 0)
    assert (first.window_s, first.reason, first.idle_s) == (900, WindowReason.ISOLATED, 0.0)
    tracker.record_completion("e")
    clock.advance(100)
    second = plan_pool(tracker.record_request("e"), HYBRID, 0)  # a second request inside the activity window
    assert (second.window_s, second.scaledown_window_s, second.reason) == (1800, 1800, WindowReason.RECENT_ACTIVITY)
    tracker.record_completion("e")
    clock.advance(50)
    later = plan_pool(tracker.snapshot()[0], HYBRID, 0)
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
